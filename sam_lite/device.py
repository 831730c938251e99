"""Where the model runs: ``--device auto|cpu|cuda|mps`` (auto: CUDA, then Apple MPS, then the CPU).

    device = resolve_device("auto")          # torch.device("cpu") on a machine without an accelerator
    add_device_argument(parser)              # the same flag on every command

On the CPU everything behaves as before the flag existed. A device this machine does not have is a ``ValueError``
with a one-line message (the commands print it as ``error: ...`` and exit non-zero).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): cuda, then mps, then cpu. ``cpu``, ``cuda``, ``cuda:N``, ``mps``: that device, or
    ValueError (one line) when this machine lacks it; any other name: ValueError."""
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        if cuda_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind not in DEVICE_CHOICES[1:] or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    if kind == "cuda":
        if not cuda_available():
            why = (f"this PyTorch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                   else "no NVIDIA GPU is visible (torch.cuda.is_available() is False)")
            raise ValueError(f"--device {name}: CUDA is not available on this machine: {why}; use --device cpu "
                             f"or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not mps_available():
        raise ValueError(f"--device {name}: Apple MPS is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto", help_extra: str = "") -> None:
    """``--device {auto,cpu,cuda,mps}`` (also ``cuda:N``); check it with :func:`resolve_device`."""
    parser.add_argument("--device", default=default, metavar="{auto,cpu,cuda,mps}",
                        help="where the model runs; auto: CUDA, then MPS, then the CPU" + help_extra)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def to_device(value, device: torch.device | str, non_blocking: bool = False):
    """Tensors in nested dicts / lists / tuples / dataclasses (:class:`Prompt`, :class:`ImageEmbedding`,
    :class:`Attentions`, ...) moved to ``device``; anything else unchanged. A no-op on tensors already there."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: to_device(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, list):
        return [to_device(v, device, non_blocking) for v in value]
    if isinstance(value, tuple):
        return tuple(to_device(v, device, non_blocking) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: to_device(getattr(value, f.name), device, non_blocking)
                                             for f in dataclasses.fields(value) if f.init})
    return value
