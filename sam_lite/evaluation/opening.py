"""What every evaluation command opens first: the dataset and the checkpoint's predictor (its model type picks it,
:mod:`sam_lite.registry`), with bad input as one line on stderr."""

from __future__ import annotations

import sys

import torch


def validation_half(image_ids: list[int], half: str | None) -> list[int]:
    """Half 1 or 2 of the reporting protocol: alternate photos in id order (so both halves hold stuff-labelled
    photos); thresholds are chosen on "first" and reported on "second". None: every photo."""
    if half is None:
        return list(image_ids)
    if half not in ("first", "second"):
        raise ValueError(f"unknown half {half!r}: use first or second")
    return list(image_ids[0::2] if half == "first" else image_ids[1::2])


def open_dataset_and_predictor(data: str, checkpoint: str, threads: int | None = None, device: str | None = None):
    """-> (CocoConcepts, predictor on ``device``), or None after printing ``error: ...`` (missing or malformed
    data or checkpoint, a device this machine lacks). ``device``: ``auto``, ``cpu``, ``cuda``, ``mps``; None: the
    CPU."""
    from ..data import CocoConcepts
    from ..device import resolve_device
    from ..registry import load_predictor

    if threads:
        torch.set_num_threads(threads)
    try:
        device = resolve_device(device) if device is not None else None  # first: a missing GPU fails fast
        return CocoConcepts(data), load_predictor(checkpoint, device=device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
