"""Scores a person can read: a reliability table, its expected calibration error, and Platt scaling.

An instance score s = sigmoid(match) x presence ranks instances but says little about how likely each is right.
Platt scaling fits P(right | s) = sigmoid(a * logit(s) + b) on validation half 1 (a prediction is right when it
matches a ground-truth box at IoU 0.5); the pair (a, b) is stored as ``score_calibration`` in the checkpoint's
``inference_config.json`` and applied by :func:`sam_lite.postprocessing.instance_scores`. It is monotonic: the
ranking of instances, and so AP, are unchanged; a threshold of 0.5 then keeps what is more likely right than wrong.
"""

from __future__ import annotations

import math

import numpy as np


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


def logit(p: np.ndarray | float, eps: float = 1e-6):
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def fit_platt(pairs: list[tuple[float, bool]], iterations: int = 200) -> tuple[float, float]:
    """(score, right) pairs -> (a, b) of P(right) = sigmoid(a * logit(score) + b), by Newton's method on the
    log-likelihood (a tiny L2 term keeps it finite when the classes separate)."""
    if len(pairs) < 2 or len({bool(r) for _, r in pairs}) < 2:
        raise ValueError(f"Platt scaling needs right and wrong predictions, got {len(pairs)} pairs")
    x = logit(np.array([p[0] for p in pairs], dtype=np.float64))
    y = np.array([float(p[1]) for p in pairs])
    X = np.stack([x, np.ones_like(x)], 1)
    w = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + 1e-4 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-4 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def apply_platt(score: float, a: float, b: float) -> float:
    return 1 / (1 + math.exp(-(a * float(logit(score)) + b)))
