"""Constants and logging shared by the benchmark modules. Standard library only: ``onnx_child`` loads this file
outside the package, where importing ``sam_lite`` (and so torch) is not allowed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MD = ROOT / "docs" / "benchmarks.md"
EXAMPLE_IMAGE = ROOT / "examples" / "street_cars_bus.jpg"
PROMPT = "red car"
TRAIN_PROMPTS = ["red car", "dog", "person", "a white cup", "bus", "sky", "green tree", "cat on a sofa"]
GOALS = {"api_set_image_ms": 25.0, "api_prompt_ms": 8.0, "prompt_ms": 10.0, "e2e_ms": 30.0, "vs_clipseg": 5.0,
         "vs_sam": 100.0, "inference_rss_mb": 1024.0}

_T0 = time.perf_counter()


def log(*a) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s]", *a, file=sys.stderr, flush=True)


def empty_visual_prompt_feeds(decoder_inputs, fed, batch: int = 1) -> dict:
    """Feeds for the prompt-decoder inputs that ``fed`` (names) lacks: on a ``geometric_prompts`` export those are
    the visual-prompt inputs, and a text prompt gives none (point labels -1 = padding, no box, no exemplar, text
    present). ``decoder_inputs``: the session's ``get_inputs()``; numpy is imported here, in the caller's process."""
    import numpy as np

    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
    fill = {"point_labels": -1, "text_valid": True}
    return {i.name: np.full([d if isinstance(d, int) else batch for d in i.shape], fill.get(i.name, 0),
                            dtypes[i.type])
            for i in decoder_inputs if i.name not in fed}
