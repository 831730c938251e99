"""Benchmark sam-lite on this CPU against SAM ViT-B and CLIPSeg (the code behind ``scripts/benchmark.py``).

Modules, by role: ``common`` (paths, prompt, goals, log), ``timing`` (wall time, memory, machine facts),
``ours`` (sam-lite measurements: latency, profile, training step, ONNX Runtime), ``others`` (the SAM and CLIPSeg
baselines), ``children`` (measurements in fresh subprocesses), ``onnx_child`` (the PyTorch-free ONNX Runtime child),
``report`` (tables and docs/benchmarks.md) and ``cli`` (arguments and the run). Nothing here is imported by
``sam_lite`` itself; run it with ``python scripts/benchmark.py`` or ``sam-lite benchmark``.
"""

import os

# offline, quiet transformers (scripts/benchmark.py sets these before anything imports transformers)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
