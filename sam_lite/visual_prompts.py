"""Visual prompts at the user's end: check points, boxes and exemplar boxes given in pixels of the photo, convert
them to pixels of the model input, and name the prompt tokens they become.

Coordinates follow SAM: (x, y) pixels of the original photo, boxes xyxy; a point or corner (X, Y) is the pixel
whose centre is at (X + 0.5, Y + 0.5), and it must lie inside the photo (0 <= X <= W, 0 <= Y <= H).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .processing import ImageMeta
from .structures import PROMPT_TOKEN_TYPES as TYPE_NAMES


def _numbers(value, name: str) -> Tensor:
    try:
        arr = np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {value!r}") from None
    return torch.from_numpy(arr.copy())


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _finite(t: Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values: {t.tolist()}")


def _inside(x: float, y: float, what: str, size: tuple[int, int]) -> None:
    h, w = size
    if not (0 <= x <= w and 0 <= y <= h):
        raise ValueError(f"{what} ({x:g}, {y:g}) is outside the photo ({w}x{h} pixels): x must be in [0, {w}] and "
                         f"y in [0, {h}]")


def check_points(points, point_labels, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """points [N, 2] (or one point [2]) x, y pixels of a photo of ``size`` (H, W), point_labels [N] of 1 (positive)
    and 0 (negative), default all 1 -> (points float [N, 2], labels long [N]); ``ValueError`` says what is wrong."""
    pts = _numbers(points, "points")
    if pts.shape == (2,):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise ValueError(f"points must have shape [N, 2] (x, y pixels of the photo, N >= 1), got shape {_shape(pts)}")
    _finite(pts, "points")
    for i, (x, y) in enumerate(pts.tolist()):
        _inside(x, y, f"point {i}", size)
    if point_labels is None:
        return pts.float(), torch.ones(len(pts), dtype=torch.long)
    labels = _numbers(point_labels, "point_labels")
    labels = labels.reshape(1) if labels.ndim == 0 else labels
    if labels.shape != (len(pts),):
        raise ValueError(f"point_labels must have shape [N] = [{len(pts)}] (one label per point), got shape "
                         f"{_shape(labels)}")
    _finite(labels, "point_labels")
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
    return pts.float(), labels.long()


def check_box(box, size: tuple[int, int], name: str = "box") -> Tensor:
    """box [4] (or [1, 4]) xyxy pixels of the photo -> float [4]."""
    b = _numbers(box, name)
    if b.shape == (1, 4):
        b = b[0]
    if b.shape != (4,):
        raise ValueError(f"{name} must have shape [4] (x0, y0, x1, y1 pixels of the photo), got shape {_shape(b)}")
    _finite(b, name)
    x0, y0, x1, y1 = b.tolist()
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"{name} (x0, y0, x1, y1) = ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or flipped: it "
                         f"needs x1 > x0 and y1 > y0")
    _inside(x0, y0, f"{name} corner (x0, y0)", size)
    _inside(x1, y1, f"{name} corner (x1, y1)", size)
    return b.float()


def check_exemplars(exemplars, size: tuple[int, int]) -> Tensor:
    """exemplars [E, 4] (or one box [4]) xyxy pixels of the photo -> float [E, 4]."""
    ex = _numbers(exemplars, "exemplars")
    if ex.shape == (4,):
        ex = ex[None]
    if ex.ndim != 2 or ex.shape[1] != 4 or ex.shape[0] == 0:
        raise ValueError(f"exemplars must have shape [E, 4] (xyxy boxes in pixels of the photo, E >= 1), got shape "
                         f"{_shape(ex)}")
    return torch.stack([check_box(b, size, f"exemplar {i}") for i, b in enumerate(ex)])


def check_visual_prompt(points, point_labels, box, exemplars, size: tuple[int, int]) -> dict[str, Tensor]:
    """All visual inputs of one prompt, checked -> dict with the given ones of points, point_labels, box,
    exemplars (photo pixels)."""
    out: dict[str, Tensor] = {}
    if point_labels is not None and points is None:
        raise ValueError("point_labels given without points")
    if points is not None:
        out["points"], out["point_labels"] = check_points(points, point_labels, size)
    if box is not None:
        out["box"] = check_box(box, size)
    if exemplars is not None:
        out["exemplars"] = check_exemplars(exemplars, size)
    return out


def to_model_pixels(prompt: dict[str, Tensor], meta: ImageMeta) -> dict[str, Tensor]:
    """Photo pixels -> pixels of the model input (the photo resized by the processor, padded bottom/right): the
    centre of photo pixel X lands where the resize puts it, (X + 0.5) * resized / original - 0.5."""
    (h, w), (rh, rw) = meta.original_size, meta.resized_size
    scale = torch.tensor([rw / w, rh / h])
    conv = lambda xy: (xy + 0.5) * scale - 0.5  # noqa: E731
    out = dict(prompt)
    if "points" in prompt:
        out["points"] = conv(prompt["points"])
    if "box" in prompt:
        out["box"] = conv(prompt["box"].reshape(2, 2)).reshape(4)
    if "exemplars" in prompt:
        out["exemplars"] = conv(prompt["exemplars"].reshape(-1, 2, 2)).reshape(-1, 4)
    return out


def token_labels(prompt: dict[str, Tensor], n_points: int, n_exemplars: int) -> list[str]:
    """Names of the geometric K/V tokens of one padded row, in the prompt encoder's order."""
    labels = [f"point {i + 1} ({'+' if int(v) == 1 else '-'})" for i, v in enumerate(prompt.get("point_labels", []))]
    labels += [TYPE_NAMES[-1]] * (n_points - len(labels))
    labels += ["box corner 1", "box corner 2"] if "box" in prompt else [TYPE_NAMES[-1]] * 2
    for i in range(n_exemplars):
        labels += ([f"exemplar {i + 1} corner 1", f"exemplar {i + 1} corner 2", f"exemplar {i + 1} appearance"]
                   if i < len(prompt.get("exemplars", [])) else [TYPE_NAMES[-1]] * 3)
    return labels


def describe(prompt: dict[str, Tensor]) -> dict[str, list]:
    """A JSON-friendly copy (photo pixels, rounded)."""
    r = lambda t: [round(v, 1) if isinstance(v, float) and math.isfinite(v) else v for v in t]  # noqa: E731
    out: dict[str, list] = {}
    if "points" in prompt:
        out["points"] = [r(p) for p in prompt["points"].tolist()]
        out["point_labels"] = prompt["point_labels"].tolist()
    if "box" in prompt:
        out["box"] = r(prompt["box"].tolist())
    if "exemplars" in prompt:
        out["exemplars"] = [r(b) for b in prompt["exemplars"].tolist()]
    return out
