"""What every evaluation command opens first: the dataset and the checkpoint's predictor (its model type picks it,
:mod:`sam_lite.registry`), with bad input as one line on stderr."""

from __future__ import annotations

import sys

import torch


def open_dataset_and_predictor(data: str, checkpoint: str, threads: int | None = None):
    """-> (CocoConcepts, predictor), or None after printing ``error: ...`` (missing or malformed data or
    checkpoint)."""
    from ..data import CocoConcepts
    from ..registry import load_predictor

    if threads:
        torch.set_num_threads(threads)
    try:
        return CocoConcepts(data), load_predictor(checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
