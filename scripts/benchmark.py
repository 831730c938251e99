#!/usr/bin/env python
"""Benchmark sam-lite on this CPU against SAM ViT-B and CLIPSeg ViT-B/16 (random weights, no downloads).

    python scripts/benchmark.py                              # random-weight base model, writes docs/benchmarks.md
    python scripts/benchmark.py --checkpoint checkpoints/sam-lite-base --image-sizes 256,320,384
    python scripts/benchmark.py --quick --no-write           # a fast smoke run (few repeats, no SAM)

Measures (medians after warm-up): parameters per module, set_image, a new prompt on a cached image, image -> masks,
training throughput (batch 8, forward + backward + AdamW step, bf16 autocast as asked and fp32 for contrast), peak RSS
for inference and for training (each in its own subprocess), a per-module profile of set_image and predict, and the
latency at several input sizes. Results go to docs/benchmarks.md and docs/benchmarks.json; the block between
``<!-- notes:begin -->`` and ``<!-- notes:end -->`` of an existing benchmarks.md is kept.
"""

# The code lives in the sam_lite.benchmarking package (sam_lite/benchmarking/cli.py is the body of this script).
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# before anything imports transformers (importing sam_lite does)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--onnx-child":
    import runpy  # the PyTorch-free child: run onnx_child.py by path, without importing sam_lite (and torch)

    del sys.argv[1]
    runpy.run_path(str(ROOT / "sam_lite" / "benchmarking" / "onnx_child.py"), run_name="__main__")
    raise SystemExit(0)

from sam_lite.benchmarking.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
