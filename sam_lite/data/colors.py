"""The colour rule: name an object's colour from its own pixels.

Each pixel inside the (eroded) mask is put in one bin by HSV (H in degrees, S and V in [0, 1]):
  V < 0.22 -> black;  S < 0.18 and V > 0.75 -> white;  S < 0.18 -> gray;
  10 <= H < 45 and V < 0.55 -> brown;  otherwise by hue: red [345, 12), orange [12, 40), yellow [40, 70),
  green [70, 165), blue [165, 255), purple [255, 290), pink [290, 345).
The object gets the most common bin's name when that bin holds at least ``MIN_FRACTION`` of at least ``MIN_PIXELS``
pixels; otherwise it has no colour and is never used in a colour prompt.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

COLOURS = ["black", "white", "gray", "brown", "red", "orange", "yellow", "green", "blue", "purple", "pink"]
MIN_FRACTION = 0.45
MIN_PIXELS = 60
_HUE_BINS = [(12, "orange"), (40, "yellow"), (70, "green"), (165, "blue"), (255, "purple"), (290, "pink"),
             (345, "red")]  # lower edges; below 12 is red as well


def hsv_image(rgb: np.ndarray | torch.Tensor) -> np.ndarray:
    """HxWx3 (or 3xHxW tensor) uint8 RGB -> HxWx3 float HSV with H in degrees, S and V in [0, 1]."""
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.permute(1, 2, 0).cpu().numpy()
    hsv = np.asarray(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("HSV"), dtype=np.float32)
    return hsv * np.array([360.0 / 256.0, 1 / 255.0, 1 / 255.0], dtype=np.float32)


def pixel_colour_bins(hsv: np.ndarray) -> np.ndarray:
    """[..., 3] HSV -> [...] indices into COLOURS."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    out = np.full(h.shape, COLOURS.index("red"), dtype=np.int64)
    for edge, name in _HUE_BINS:
        out[h >= edge] = COLOURS.index(name)
    out[(h >= 345) | (h < 12)] = COLOURS.index("red")
    out[(h >= 10) & (h < 45) & (v < 0.55)] = COLOURS.index("brown")
    grey = s < 0.18
    out[grey] = COLOURS.index("gray")
    out[grey & (v > 0.75)] = COLOURS.index("white")
    out[v < 0.22] = COLOURS.index("black")
    return out


def erode(mask: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Binary erosion of [N, H, W] masks (boundary pixels mix with the background)."""
    if mask.numel() == 0:
        return mask
    inv = (~mask).float()[:, None]
    return ~(F.max_pool2d(inv, k, stride=1, padding=k // 2)[:, 0] > 0)


def instance_colours(hsv: np.ndarray, masks: torch.Tensor) -> list[str | None]:
    """hsv [H, W, 3] from :func:`hsv_image`, masks bool [N, H, W] -> a colour name (or None) per instance."""
    if masks.shape[0] == 0:
        return []
    bins = torch.from_numpy(pixel_colour_bins(hsv))
    inner = erode(masks)
    out: list[str | None] = []
    for m, mi in zip(masks, inner):
        sel = mi if mi.sum() >= MIN_PIXELS else m
        vals = bins[sel]
        if vals.numel() < MIN_PIXELS:
            out.append(None)
            continue
        counts = torch.bincount(vals, minlength=len(COLOURS))
        best = int(counts.argmax())
        out.append(COLOURS[best] if counts[best] >= MIN_FRACTION * vals.numel() else None)
    return out
