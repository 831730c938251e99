"""Scores a person can read: a reliability table, its expected calibration error, and the calibration itself.

The raw instance score s = sigmoid(match) x presence ranks instances but says little about how likely each is right.
:func:`fit_logistic` fits P(right) = sigmoid(w . x + b) on validation half 1, where x are features of the query
(:data:`~sam_lite.config.SCORE_FEATURES`: its match and presence logits, and, as in Mask Scoring R-CNN, what the
mask says of itself: mean foreground probability, the IoU head, its area) and a prediction is right when it matches
a ground-truth box at IoU 0.5 (greedily in score order, as COCO does). The fit is stored as ``score_calibration`` in
the checkpoint's ``inference_config.json`` and applied by :func:`sam_lite.postprocessing.calibrate`. With the
single feature ``score`` it is Platt scaling (monotonic: rankings unchanged); with the mask's features it also
re-ranks (docs/experiments.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def reliability(pairs: list[tuple[float, bool]], bins: int = 10) -> dict:
    """(score, right) pairs -> {"ece", "n", "bins": [{"lo", "hi", "n", "mean_score", "accuracy"}]}: equal-width
    score bins; ECE = sum over bins of n_bin / n x |accuracy - mean score|."""
    if not pairs:
        return {"ece": float("nan"), "n": 0, "bins": []}
    s = np.array([p[0] for p in pairs], dtype=np.float64)
    r = np.array([p[1] for p in pairs], dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for i in range(bins):
        sel = (s >= edges[i]) & ((s < edges[i + 1]) if i < bins - 1 else (s <= 1.0))
        if not sel.any():
            continue
        ms, acc = float(s[sel].mean()), float(r[sel].mean())
        ece += sel.sum() / len(s) * abs(acc - ms)
        table.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": int(sel.sum()), "mean_score": ms,
                      "accuracy": acc})
    return {"ece": float(ece), "n": len(s), "bins": table}


def fit_logistic(x: np.ndarray, right: np.ndarray, l2: float = 1e-3, iterations: int = 100
                 ) -> tuple[list[float], float]:
    """x [n, F] features, right [n] bool -> (weights [F], bias) of P(right) = sigmoid(x . w + b), by Newton's method
    on the log-likelihood (a small L2 term keeps it finite when the classes separate)."""
    y = np.asarray(right, dtype=np.float64)
    if len(y) < 2 or y.min() == y.max():
        raise ValueError(f"calibration needs right and wrong predictions, got {len(y)} predictions, "
                         f"{int(y.sum())} right")
    X = np.concatenate([np.asarray(x, dtype=np.float64), np.ones((len(y), 1))], 1)
    w = np.zeros(X.shape[1])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(X @ w)))
        step = np.linalg.solve((X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(len(w)), X.T @ (p - y) + l2 * w)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return [float(v) for v in w[:-1]], float(w[-1])


def right_in_score_order(boxes: torch.Tensor, gt: torch.Tensor, iou_threshold: float = 0.5) -> list[bool]:
    """Predicted boxes [N, 4] best first, GT boxes [M, 4] -> whether each prediction is right: it takes the unmatched
    GT box it overlaps most, at IoU >= ``iou_threshold`` (COCO's greedy matching)."""
    if not len(boxes):
        return []
    if not len(gt):
        return [False] * len(boxes)
    iou = box_iou(boxes.float(), gt.float())
    taken = torch.zeros(len(gt), dtype=torch.bool)
    right = []
    for row in iou:
        row = row.masked_fill(taken, -1.0)
        j = int(row.argmax())
        right.append(bool(row[j] >= iou_threshold))
        taken[j] |= right[-1]
    return right


@torch.inference_mode()
def calibration_data(predictor, samples, features: list[str], floor: float = 0.0) -> tuple[np.ndarray, np.ndarray,
                                                                                           np.ndarray]:
    """The box protocol's prompts (:func:`~.boxes.box_samples`) through a predictor with raw scores -> (features
    [n, F], raw scores [n], right [n]) of every instance it returns above ``floor``."""
    from ..postprocessing import score_features
    from ..structures import Prompt

    if predictor.inference_config.score_calibration is not None:
        raise ValueError("fit a calibration on raw scores: give a predictor whose score_calibration is None")
    groups: dict = {}
    for s in samples:
        groups.setdefault(s.image_id, []).append(s)
    xs, raw, right = [], [], []
    for group in groups.values():
        predictor.set_image(group[0].file_path)
        prompts = [s.prompt for s in group]
        out = predictor.predict_torch(Prompt(prompts))
        feats = score_features({k: v.cpu() for k, v in out.items() if isinstance(v, torch.Tensor)}, features,
                               predictor.inference_config.mask_threshold)
        for j, (s, r) in enumerate(zip(group, predictor.predict(prompts, score_threshold=floor))):
            xs.append(feats[j, r.query_indices].numpy())
            raw += r.scores.tolist()
            right += right_in_score_order(r.boxes, s.boxes)
    x = np.concatenate(xs) if xs else np.zeros((0, len(features)))
    return x, np.array(raw), np.array(right, dtype=bool)
