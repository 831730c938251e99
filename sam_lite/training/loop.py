"""One optimiser step, moving a batch to the training device, and the loss plot of a run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ..device import to_device

# the collated batch's fields that hold tensors (sam_lite.data.collate); the rest (prompt strings, ids) stay as they are
BATCH_TENSOR_KEYS = ("images", "image_index", "prompt", "targets", "dense_labels", "dense_allowed", "image_labels")


def move_batch(batch: dict, device: torch.device | str) -> dict:
    """A collated batch on ``device``: the images, image_index, the :class:`Prompt`, the targets (a list of dicts of
    tensors), dense_labels and dense_allowed. Non-blocking from pinned memory on CUDA; on the CPU the batch
    itself."""
    device = torch.device(device)
    if device.type == "cpu":
        return batch
    non_blocking = device.type == "cuda"
    return {k: (to_device(v, device, non_blocking) if k in BATCH_TENSOR_KEYS else v) for k, v in batch.items()}


def train_step(model, core, objective, batch: dict, optimizer, scheduler, autocast=None,
               max_grad_norm: float = 1.0) -> dict[str, Tensor]:
    """Forward (``objective(model, core, batch)``), backward, clip, step the optimiser and the schedule. Returns
    the loss terms (detached)."""
    with autocast if autocast is not None else torch.autocast("cpu", enabled=False):
        losses = objective(model, core, batch)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    # in parameter order (not the optimiser groups'): the norm's float sum, hence the weights, match the old trainer
    torch.nn.utils.clip_grad_norm_([p for p in core.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    scheduler.step()
    return {k: v.detach() for k, v in losses.items()}


def plot_log(log_path: Path, png_path: Path) -> None:
    """The total loss and the final-layer loss terms of a JSONL log, smoothed, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in open(log_path) if line.strip()]
    if not recs:
        return
    keys = [k for k in recs[-1] if k.startswith("loss")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in keys:
        xs = [r["step"] for r in recs if k in r]
        ys = [r[k] for r in recs if k in r]
        w = max(1, len(ys) // 50)
        smooth = [sum(ys[max(0, i - w):i + 1]) / len(ys[max(0, i - w):i + 1]) for i in range(len(ys))]
        (axes[0] if k == "loss" else axes[1]).plot(xs, smooth, label=k)
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0].set_title("total loss")
    axes[1].set_title("loss terms (final layer)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
