"""Training checkpoints: ``--out/last`` written atomically every ``--save-every`` steps (weights through
``save_pretrained`` plus ``training_state.pt``: step, optimiser, schedule, data position, RNG), found again by
``--resume`` even after a ``kill -9``, and the JSONL log trimmed back to the resumed step."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

from ..config import INFERENCE_CONFIG_NAME

STATE_NAME = "training_state.pt"


def save_checkpoint(out: Path, model, optimizer, scheduler, step: int, total_steps: int, epoch: int,
                    batch_in_epoch: int, args) -> None:
    """Atomic: everything goes to a temp dir that replaces ``last/`` by rename, so a kill never leaves it torn.
    At every instant ``last/`` or (between the two renames) ``last.old/`` holds a complete checkpoint."""
    tmp, last, old = out / "last.tmp", out / "last", out / "last.old"
    if tmp.exists():  # a kill during an earlier save left it half written
        shutil.rmtree(tmp)
    if old.exists() and last.exists():  # a kill during an earlier clean-up
        shutil.rmtree(old)
    model.save_pretrained(tmp)
    copy_inference_config(getattr(args, "init_from", None), tmp)
    state = {"step": step, "total_steps": total_steps, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "python_rng": list(random.getstate()[1]),
             "args": json.dumps(vars(args))}
    torch.save(state, tmp / STATE_NAME)
    if last.exists():
        last.rename(old)
    tmp.rename(last)
    if old.exists():
        shutil.rmtree(old)


def copy_inference_config(source: str | Path | None, directory: Path) -> None:
    """A fine-tune keeps the post-processing policy of the checkpoint it started from (as HF keeps
    ``generation_config.json``): its ``inference_config.json``, if any, goes beside the new weights; re-choose the
    thresholds on validation data afterwards (``sam-lite eval --calibrate``, ``scripts/calibrate_scores.py``)."""
    if source is not None and (Path(source) / INFERENCE_CONFIG_NAME).is_file():
        shutil.copyfile(Path(source) / INFERENCE_CONFIG_NAME, directory / INFERENCE_CONFIG_NAME)


def find_resume_dir(out: Path) -> Path | None:
    for name in ("last", "last.old"):  # last.old survives only if a kill hit between the two renames
        d = out / name
        if (d / STATE_NAME).is_file():
            return d
    return None


def load_resume_state(directory: Path, model, optimizer) -> dict:
    """Weights and optimiser from ``directory`` (a ``last/``), the RNG restored; returns the saved state dict
    (step, total_steps, epoch, batch_in_epoch, scheduler)."""
    from safetensors.torch import load_file

    state = torch.load(directory / STATE_NAME, map_location="cpu", weights_only=True)
    model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate((3, tuple(state["python_rng"]), None))
    return state


def init_from_checkpoint(model, directory: str | Path) -> list[str]:
    """Load a checkpoint's tensors into ``model`` (shapes must agree); returns the names of the model's trainable
    tensors the checkpoint lacks (new modules, which keep their fresh initialisation). ValueError when they do not
    fit."""
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / "model.safetensors"))
    return model.load_trainable_weights(state, f"--init-from {directory} does not fit the config", allow_missing=True)


def trim_log(log_path: Path, step: int) -> None:
    """Drop the log records of steps after ``step`` (run after a kill, before they are trained again)."""
    if not log_path.is_file():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):  # a line torn by the kill
            continue
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in keep))
    tmp.replace(log_path)
