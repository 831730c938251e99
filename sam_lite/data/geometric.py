"""Geometric training prompts from the same instance masks: a click, a box or an exemplar box.

* **point**: a positive point drawn uniformly inside one instance, and with probability ``NEGATIVE_POINT_PROB`` a
  negative point on another instance (outside the first) or on the background; target: that one instance.
* **box**: the instance's tight box, each edge moved outward by up to ``BOX_JITTER`` of the box's side (a drawn box
  is loose, never cut into the object), clipped to the image; target: that instance.
* **exemplar**: the tight box of one instance of an exhaustively labelled concept; target: every instance of that
  concept, and with probability ``EXEMPLAR_TEXT_PROB`` the concept's name is the text prompt too.

Coordinates are pixel indices of the model input (x, y), as the predictor passes them (see
:mod:`sam_lite.modeling.prompt_encoder`).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor
from torchvision.ops import masks_to_boxes

GEOMETRIC_KINDS = ("point", "box", "exemplar")
NEGATIVE_POINT_PROB = 0.5
BOX_JITTER = 0.1
EXEMPLAR_TEXT_PROB = 0.5


def sample_point(mask: Tensor, rng: random.Random) -> list[float]:
    """A pixel drawn uniformly from a non-empty bool mask [H, W] -> [x, y]."""
    ys, xs = mask.nonzero(as_tuple=True)
    i = rng.randrange(len(ys))
    return [float(xs[i]), float(ys[i])]


def jittered_box(mask: Tensor, rng: random.Random, jitter: float = BOX_JITTER) -> list[float]:
    """The tight xyxy box of a mask [H, W], each edge moved outward by U(0, jitter) x the side, clipped to the
    image: it always contains the instance."""
    x0, y0, x1, y1 = masks_to_boxes(mask[None])[0].tolist()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    hh, ww = mask.shape
    return [max(0.0, x0 - rng.uniform(0, jitter) * w), max(0.0, y0 - rng.uniform(0, jitter) * h),
            min(ww - 1.0, x1 + rng.uniform(0, jitter) * w), min(hh - 1.0, y1 + rng.uniform(0, jitter) * h)]


def tight_box(mask: Tensor) -> list[float]:
    return masks_to_boxes(mask[None])[0].tolist()


def sample_geometric_prompt(masks: Tensor, names: list[str], positives: list[str], valid: Tensor,
                            rng: random.Random) -> tuple[str, list[int], str, dict]:
    """One geometric prompt on an augmented photo.

    masks bool [n, S, S] (n >= 1, non-crowd instances), names [n] their concepts, positives: the concepts whose every
    instance is annotated (exemplar prompts only use those), valid bool [S, S]: the image area (not padding).
    Returns (text prompt, "" for none; target instance indices; kind; geometry row for
    :meth:`~sam_lite.structures.Prompt.from_rows`).
    """
    kind = rng.choice(GEOMETRIC_KINDS if positives else GEOMETRIC_KINDS[:2])
    if kind == "exemplar":
        name = rng.choice(positives)
        idx = [i for i, n in enumerate(names) if n == name]
        box = tight_box(masks[rng.choice(idx)])
        text = name if rng.random() < EXEMPLAR_TEXT_PROB else ""
        return text, idx, kind, {"exemplars": torch.tensor([box])}
    i = rng.randrange(len(names))
    if kind == "box":
        return "", [i], kind, {"box": torch.tensor(jittered_box(masks[i], rng))}
    points, labels = [sample_point(masks[i], rng)], [1]
    if rng.random() < NEGATIVE_POINT_PROB:
        others = [j for j in range(len(names)) if j != i and (masks[j] & ~masks[i]).any()]
        background = valid & ~masks.any(0)
        if others and (rng.random() < 0.5 or not background.any()):
            points.append(sample_point(masks[rng.choice(others)] & ~masks[i], rng))
            labels.append(0)
        elif background.any():
            points.append(sample_point(background, rng))
            labels.append(0)
    return "", [i], kind, {"points": torch.tensor(points), "point_labels": torch.tensor(labels)}
