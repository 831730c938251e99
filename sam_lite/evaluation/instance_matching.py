"""One-to-one matching of predicted to ground-truth instance masks, for instance precision / recall / F1.

Predictions are matched to GT with maximum total IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``); a
matched pair with IoU >= ``iou_threshold`` is a true positive, every other prediction a false positive and every
other GT instance a false negative.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def mask_iou_matrix(pred_masks: Tensor, gt_masks: Tensor) -> np.ndarray:
    """Pairwise IoU of bool masks [N, H, W] x [M, H, W] -> float64 [N, M] (exact pixel counts, via a matmul)."""
    n, m = pred_masks.shape[0], gt_masks.shape[0]
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=np.float64)
    p, g = pred_masks.flatten(1).float(), gt_masks.flatten(1).float()  # counts < 2^24: exact in float32
    inter = (p @ g.T).double()
    union = p.sum(1, dtype=torch.float64)[:, None] + g.sum(1, dtype=torch.float64)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter)).numpy()


def match_counts(iou: np.ndarray, iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """(TP, FP, FN) of the max-total-IoU one-to-one matching of the rows (predictions) of ``iou`` [N, M] to its
    columns (GT instances)."""
    from scipy.optimize import linear_sum_assignment

    n, m = iou.shape
    tp = 0
    if n and m:
        rows, cols = linear_sum_assignment(iou, maximize=True)
        tp = int((iou[rows, cols] >= iou_threshold - 1e-12).sum())
    return tp, n - tp, m - tp


def prf_from_counts(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1) with F1 = 2TP / (2TP + FP + FN); each is ``nan`` when its denominator is 0."""
    div = lambda a, b: float(a / b) if b > 0 else float("nan")  # noqa: E731
    return div(tp, tp + fp), div(tp, tp + fn), div(2 * tp, 2 * tp + fp + fn)
