"""Metrics for promptable concept segmentation, in the spirit of SAM 3's SA-Co evaluation.

A *sample* is one (image, text prompt) pair. Its ground truth is the set of instance masks of that concept in the
image (possibly none: an absent concept, a "negative"); a prediction is a set of scored instance masks and a presence
probability.

* **gIoU** — mean over samples of IoU(union of predicted masks, union of GT masks). An absent concept with an empty
  prediction scores 1, an absent concept with any predicted pixel scores 0.
* **cIoU** — cumulative intersection / cumulative union over all samples (large objects weigh more).
* **presence accuracy** — ``(presence >= presence_threshold) == (GT has >= 1 instance)``; **presence AUROC** ranks
  presence probabilities (``nan`` when only one class is present).
* **IL-MCC** — image-level Matthews correlation coefficient between "predicted >= 1 instance" and "GT has >= 1
  instance" (SAM 3's ``IL_MCC``); ``nan`` when the GT has one class only (e.g. a row of positives), 0 for a
  constant prediction.
* **mask AP / AP50 / AP75** — COCO mask AP from ``pycocotools``: each distinct prompt is a category, each sample an
  image; AP is averaged over prompts that have at least one GT instance.
* **instance F1@.5** — predictions matched one-to-one to GT instances with maximum total mask IoU (Hungarian); a
  pair with IoU >= 0.5 is a TP, other predictions FP, other GT FN; F1 = 2TP / (2TP + FP + FN) from the counts summed
  over the samples of a group (micro-average), ``nan`` when there is nothing to count (negatives, empty prediction).

Everything that depends on the score threshold (gIoU, cIoU, IL-MCC, F1) is kept for a whole grid of thresholds, so one
pass over the data gives the metrics at any grid threshold and a calibrated threshold (:func:`choose_threshold`,
:meth:`SegmentationMetrics.calibrate`). This assumes that the prediction at threshold ``t`` is the prediction at a
lower threshold with the masks scoring below ``t`` dropped, which holds for both predictors of this package
(score filtering, then greedy NMS in score order / connected components scored independently).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..postprocessing import keeps_best_instance
from .instance_matching import mask_iou_matrix, match_counts, prf_from_counts

PROMPT_TYPES = ("category", "colour", "stuff", "negative", "synonym")
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95


# --------------------------------------------------------------------------------------------------------------
# per-sample quantities
# --------------------------------------------------------------------------------------------------------------
def _as_bool_masks(masks, name: str) -> Tensor:
    m = torch.as_tensor(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"{name} must be [N, H, W] (or [H, W]), got shape {tuple(m.shape)}")
    return m.bool() if m.dtype == torch.bool else m > 0.5


def union_mask(masks: Tensor) -> Tensor:
    """bool [N, H, W] -> bool [H, W] (all False for N = 0)."""
    masks = _as_bool_masks(masks, "masks")
    return masks.any(0) if masks.shape[0] else torch.zeros(masks.shape[-2:], dtype=torch.bool)


def intersection_union(pred_masks: Tensor, gt_masks: Tensor) -> tuple[int, int]:
    """Pixel counts |P n G| and |P u G| of the union of predicted masks P and the union of GT masks G."""
    p, g = union_mask(pred_masks), union_mask(gt_masks)
    if p.shape != g.shape:
        raise ValueError(f"predicted masks are {tuple(p.shape)} but GT masks are {tuple(g.shape)}: both must be at "
                         "the original image size")
    return int((p & g).sum()), int((p | g).sum())


def sample_iou(intersection, union):
    """IoU of one sample (or an array of samples); an empty union (absent concept, empty prediction) gives 1."""
    inter, uni = np.asarray(intersection, dtype=np.float64), np.asarray(union, dtype=np.float64)
    out = np.where(uni > 0, inter / np.maximum(uni, 1), 1.0)
    return float(out) if out.ndim == 0 else out


def giou(intersections: Sequence[int], unions: Sequence[int]) -> float:
    """Mean per-sample IoU (see :func:`sample_iou`); ``nan`` for no samples."""
    if len(intersections) == 0:
        return float("nan")
    return float(np.mean(sample_iou(intersections, unions)))


def ciou(intersections: Sequence[int], unions: Sequence[int]) -> float:
    """Cumulative IoU: sum of intersections / sum of unions; ``nan`` when the total union is 0 (no samples, or
    only absent concepts with empty predictions: nothing to measure)."""
    total_union = float(np.sum(np.asarray(unions, dtype=np.float64)))
    if total_union <= 0:
        return float("nan")
    return float(np.sum(np.asarray(intersections, dtype=np.float64)) / total_union)


# --------------------------------------------------------------------------------------------------------------
# presence / image-level classification
# --------------------------------------------------------------------------------------------------------------
def presence_accuracy(presence: Sequence[float], gt_present: Sequence[bool], threshold: float = 0.5) -> float:
    """Fraction of samples where ``presence >= threshold`` agrees with "GT has >= 1 instance"; ``nan`` if empty."""
    p, y = np.asarray(presence, dtype=np.float64), np.asarray(gt_present, dtype=bool)
    if p.size == 0:
        return float("nan")
    return float(np.mean((p >= threshold) == y))


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); ``nan`` if one class is missing."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


presence_auroc = roc_auc


def mcc_from_counts(tp: int, fp: int, fn: int, tn: int) -> float:
    """Matthews correlation coefficient of a 2x2 confusion matrix (rows: predicted, columns: actual).

    Degenerate cases: ``nan`` when the ground truth has one class only (the data cannot measure a correlation);
    0.0 when both classes occur but the prediction is constant (a constant predictor carries no information)."""
    tp, fp, fn, tn = (float(v) for v in (tp, fp, fn, tn))
    if tp + fn == 0 or tn + fp == 0:
        return float("nan")
    denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denom == 0:
        return 0.0
    return float((tp * tn - fp * fn) / math.sqrt(denom))


def matthews_corrcoef(predicted: Sequence[bool], actual: Sequence[bool]) -> float:
    """MCC between two boolean vectors (IL-MCC when predicted = "any instance predicted", actual = "GT has any")."""
    p, a = np.asarray(predicted, dtype=bool), np.asarray(actual, dtype=bool)
    if p.shape != a.shape:
        raise ValueError(f"predicted {p.shape} and actual {a.shape} must have the same length")
    return mcc_from_counts(int((p & a).sum()), int((p & ~a).sum()), int((~p & a).sum()), int((~p & ~a).sum()))


# --------------------------------------------------------------------------------------------------------------
# COCO mask AP
# --------------------------------------------------------------------------------------------------------------
def encode_masks(masks: Tensor) -> list[dict]:
    """bool [N, H, W] -> N compressed RLEs (pycocotools format, ``counts`` as bytes)."""
    from pycocotools import mask as mask_utils

    masks = _as_bool_masks(masks, "masks")
    if masks.shape[0] == 0:
        return []
    arr = np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
    return mask_utils.encode(arr)


@dataclass
class APSample:
    """What mask AP needs of one sample: the prompt (its COCO category), GT RLEs, predicted RLEs and scores."""

    prompt: str
    height: int
    width: int
    gt_rles: list = field(default_factory=list)
    pred_rles: list = field(default_factory=list)
    pred_scores: list = field(default_factory=list)
    gt_iscrowd: list | None = None


def coco_mask_ap(samples: Sequence[APSample], max_dets: int = 100) -> dict[str, float]:
    """COCO mask AP (``COCOeval(iouType="segm")``) with one category per distinct prompt and one image per sample.

    Returns ``{"AP", "AP50", "AP75"}`` in [0, 1]. ``nan`` when no sample has a GT instance (AP is undefined); 0.0
    when there are GT instances but no predictions at all. Categories are evaluated one at a time on the samples
    of that prompt only (the same numbers as one COCOeval over everything, without its images x categories loop).
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    nan = {"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
    by_prompt: dict[str, list[APSample]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt, []).append(s)
    per_cat = []  # precision [T, R] at area "all", maxDets = max_dets, for each prompt with GT
    iou_thrs = None
    for prompt, group in by_prompt.items():
        n_gt = sum(len(s.gt_rles) - sum(s.gt_iscrowd or []) for s in group)
        if n_gt == 0:  # no (non-crowd) GT instance of this prompt anywhere: AP undefined, prompt left out
            continue
        images, gts, dts = [], [], []
        for img_id, s in enumerate(group, start=1):
            images.append({"id": img_id, "height": s.height, "width": s.width})
            crowd = s.gt_iscrowd or [0] * len(s.gt_rles)
            for rle, c in zip(s.gt_rles, crowd):
                gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": 1, "segmentation": rle,
                            "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(),
                            "iscrowd": int(c)})
            for rle, score in zip(s.pred_rles, s.pred_scores):
                dts.append({"id": len(dts) + 1, "image_id": img_id, "category_id": 1, "segmentation": rle,
                            "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(),
                            "score": float(score), "iscrowd": 0})
        if not dts:
            per_cat.append(None)  # GT but nothing predicted: precision 0 everywhere
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {"images": images, "annotations": gts, "categories": [{"id": 1, "name": prompt}]}
            gt.createIndex()
            dt = COCO()
            dt.dataset = {"images": images, "annotations": dts, "categories": [{"id": 1, "name": prompt}]}
            dt.createIndex()
            ev = COCOeval(gt, dt, iouType="segm")
            ev.params.maxDets = [1, 10, max_dets] if max_dets > 10 else [max_dets]
            ev.evaluate()
            ev.accumulate()
        iou_thrs = ev.params.iouThrs
        prec = ev.eval["precision"][:, :, 0, 0, -1]  # [T, R], area "all", largest maxDets
        if (prec > -1).all():
            per_cat.append(prec)
    if not per_cat:
        return nan
    if iou_thrs is None:  # GT somewhere, but no predictions for any prompt
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    precs = np.stack([np.zeros((len(iou_thrs), 101)) if p is None else p for p in per_cat])  # [K, T, R]
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    return {"AP": float(precs.mean()), "AP50": float(precs[:, t50].mean()), "AP75": float(precs[:, t75].mean())}


# --------------------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------------------
def choose_threshold(thresholds: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """The threshold with the highest metric value, and that value. Ties (a plateau) take the middle of the tied
    thresholds, which is the most robust choice; ``nan`` values are ignored."""
    t, v = np.asarray(thresholds, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.size == 0:
        raise ValueError(f"need as many values as thresholds (got {v.size} and {t.size}, at least one)")
    if np.isnan(v).all():
        return float("nan"), float("nan")
    best = np.nanmax(v)
    tied = np.flatnonzero(np.abs(np.nan_to_num(v, nan=-np.inf) - best) <= 1e-12)
    i = int(tied[(len(tied) - 1) // 2])
    return float(t[i]), float(v[i])


# --------------------------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------------------------
class SegmentationMetrics:
    """Accumulate predictions sample by sample, then :meth:`compute` every metric per prompt type.

    Memory is bounded: per sample only a few numbers per grid threshold (intersection, union, best score) and, for
    mask AP, compressed RLEs of the GT masks and of the predicted masks scoring >= ``ap_min_score``.

    ``thresholds``: the score thresholds at which threshold-dependent metrics are kept (the grid of
    :meth:`calibrate`); ``threshold`` (the reported one) is added to it. Predictions passed to :meth:`update` must
    include every mask scoring >= the lowest of them (predict with that threshold). ``best_instance_presence``: the
    inference rule of the same name (:class:`~sam_lite.config.InferenceConfig`): at every threshold, a sample whose
    presence reaches it keeps at least its best mask.
    """

    def __init__(self, threshold: float = 0.5, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 ap_min_score: float = 0.05, compute_ap: bool = True,
                 best_instance_presence: float | None = None) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.thresholds = np.array(sorted({round(float(t), 6) for t in thresholds} | {round(self.threshold, 6)}))
        self.ap_min_score = float(ap_min_score)
        self.compute_ap = compute_ap
        self.best_instance_presence = best_instance_presence
        self.prompt_types: list[str] = []
        self.image_ids: list[int] = []
        self.prompts: list[str] = []
        self.presence: list[float] = []
        self.gt_count: list[int] = []
        self.max_score: list[float] = []  # best score of a non-empty predicted mask (-inf if none, inf if kept anyway)
        self.inters: list[np.ndarray] = []  # [T] per sample
        self.unions: list[np.ndarray] = []
        self.inst_counts: list[np.ndarray] = []  # [T, 3] per sample: instance TP, FP, FN at IoU 0.5
        self.ap_samples: list[APSample] = []

    @property
    def min_score(self) -> float:
        """The lowest score a prediction must be kept down to (predict with this threshold)."""
        return float(min(self.thresholds[0], self.ap_min_score if self.compute_ap else 1.0))

    def __len__(self) -> int:
        return len(self.prompts)

    def update(self, prompt_type: str, pred_masks: Tensor, scores: Tensor, presence: float, gt_masks: Tensor,
               image_id: int, prompt: str, gt_iscrowd: Sequence[int] | None = None) -> None:
        """Add one sample. pred_masks bool [N, H, W] and gt_masks bool [M, H, W] at the original image size,
        scores [N], presence: probability that the concept is in the image."""
        pred = _as_bool_masks(pred_masks, "pred_masks").cpu()
        gt = _as_bool_masks(gt_masks, "gt_masks").cpu()
        scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).cpu()
        if scores.numel() != pred.shape[0]:
            raise ValueError(f"{pred.shape[0]} predicted masks but {scores.numel()} scores")
        if pred.shape[-2:] != gt.shape[-2:]:
            raise ValueError(f"predicted masks are {tuple(pred.shape[-2:])} but GT masks are {tuple(gt.shape[-2:])}: "
                             "both must be at the original image size")
        h, w = gt.shape[-2:]
        nonempty = pred.flatten(1).any(1)
        pred, scores = pred[nonempty], scores[nonempty]
        order = scores.argsort(descending=True, stable=True)
        pred, scores = pred[order], scores[order]
        n = pred.shape[0]

        # Pixel counts of the union of the first k masks, k = 0..n: each covered pixel is counted at the first
        # (best-scoring) mask that covers it.
        gt_union = gt.any(0) if gt.shape[0] else torch.zeros((h, w), dtype=torch.bool)
        gt_area = int(gt_union.sum())
        if n:
            covered = pred.any(0)
            first = pred.to(torch.uint8).argmax(0)
            area_k = torch.bincount(first[covered], minlength=n).cumsum(0)
            inter_k = torch.bincount(first[covered & gt_union], minlength=n).cumsum(0)
            area_k = torch.cat([area_k.new_zeros(1), area_k]).numpy()
            inter_k = torch.cat([inter_k.new_zeros(1), inter_k]).numpy()
        else:
            area_k = inter_k = np.zeros(1, dtype=np.int64)
        # number of masks kept at each threshold (scores are descending)
        k = (scores.numpy()[None, :] >= self.thresholds[:, None] - 1e-9).sum(1) if n else np.zeros(
            len(self.thresholds), dtype=np.int64)
        keeps_best = n > 0 and keeps_best_instance(presence, self.best_instance_presence)
        if keeps_best:
            k = np.maximum(k, 1)
        inter = inter_k[k]
        self.inters.append(inter.astype(np.int64))
        self.unions.append((area_k[k] + gt_area - inter).astype(np.int64))
        iou = mask_iou_matrix(pred, gt)  # at each threshold only the first k (best-scoring) masks are matched
        by_k = {j: match_counts(iou[:j]) for j in set(k.tolist())}
        self.inst_counts.append(np.array([by_k[j] for j in k.tolist()], dtype=np.int64).reshape(-1, 3))
        self.max_score.append(float("inf") if keeps_best else float(scores[0]) if n else float("-inf"))
        self.presence.append(float(presence))
        self.gt_count.append(int(gt.shape[0]))
        self.prompt_types.append(str(prompt_type))
        self.image_ids.append(int(image_id))
        self.prompts.append(str(prompt))
        if self.compute_ap:
            keep = scores >= self.ap_min_score - 1e-9
            self.ap_samples.append(APSample(prompt=" ".join(str(prompt).split()), height=int(h), width=int(w),
                                            gt_rles=encode_masks(gt), pred_rles=encode_masks(pred[keep]),
                                            pred_scores=scores[keep].tolist(),
                                            gt_iscrowd=list(gt_iscrowd) if gt_iscrowd is not None else None))

    # ---------------------------------------------------------------------------------------------------------
    def _threshold_index(self, threshold: float) -> int:
        i = int(np.argmin(np.abs(self.thresholds - threshold)))
        if abs(self.thresholds[i] - threshold) > 1e-6:
            raise ValueError(f"threshold {threshold} is not in the accumulated grid {self.thresholds.tolist()}")
        return i

    def _indices(self, prompt_type: str) -> np.ndarray:
        types = np.asarray(self.prompt_types)
        return np.arange(len(types)) if prompt_type == "all" else np.flatnonzero(types == prompt_type)

    def _group_metrics(self, idx: np.ndarray, ti: int, presence_threshold: float, with_ap: bool) -> dict:
        threshold = float(self.thresholds[ti])
        inters = np.array([self.inters[i][ti] for i in idx], dtype=np.int64)
        unions = np.array([self.unions[i][ti] for i in idx], dtype=np.int64)
        gt_present = np.array([self.gt_count[i] > 0 for i in idx], dtype=bool)
        presence = np.array([self.presence[i] for i in idx], dtype=np.float64)
        pred_present = np.array([self.max_score[i] >= threshold - 1e-9 for i in idx], dtype=bool)
        out = {"n": int(len(idx)), "n_positive": int(gt_present.sum()), "gIoU": giou(inters, unions),
               "cIoU": ciou(inters, unions), "presence_acc": presence_accuracy(presence, gt_present, presence_threshold),
               "presence_auroc": roc_auc(presence, gt_present), "IL_MCC": matthews_corrcoef(pred_present, gt_present),
               "IL_acc": float(np.mean(pred_present == gt_present)) if len(idx) else float("nan")}
        counts = sum((self.inst_counts[i][ti] for i in idx), np.zeros(3, dtype=np.int64))
        out["inst_precision_50"], out["inst_recall_50"], out["F1_50"] = prf_from_counts(*counts.tolist())
        if with_ap and self.compute_ap:
            out.update(coco_mask_ap([self.ap_samples[i] for i in idx]))
        return out

    def compute(self, threshold: float | None = None, presence_threshold: float | None = None,
                with_ap: bool = True) -> dict[str, dict]:
        """Metrics per prompt type: ``{"all": {...}, "category": {...}, ...}`` (only types that occur). Each holds
        n, n_positive, gIoU, cIoU, presence_acc, presence_auroc, IL_MCC, IL_acc, F1_50 (instance F1 at IoU 0.5)
        with inst_precision_50 / inst_recall_50 and (with AP) AP, AP50, AP75.
        ``threshold`` (default: the one given at construction) must be on the grid; ``presence_threshold``
        defaults to ``threshold``."""
        ti = self._threshold_index(self.threshold if threshold is None else threshold)
        pt = float(self.thresholds[ti]) if presence_threshold is None else float(presence_threshold)
        groups = ["all"] + [t for t in PROMPT_TYPES if t in self.prompt_types]
        groups += sorted(set(self.prompt_types) - set(groups))
        return {g: self._group_metrics(self._indices(g), ti, pt, with_ap) for g in groups}

    def threshold_curve(self, metric: str = "gIoU", prompt_type: str = "all") -> tuple[list[float], list[float]]:
        """(thresholds, metric value at each) for ``gIoU``, ``cIoU``, ``IL_MCC``, ``IL_acc``, ``F1_50`` (the score
        threshold) or ``presence_acc`` (the presence threshold)."""
        idx = self._indices(prompt_type)
        if metric == "presence_acc":
            p = np.array([self.presence[i] for i in idx])
            y = np.array([self.gt_count[i] > 0 for i in idx])
            return self.thresholds.tolist(), [presence_accuracy(p, y, t) for t in self.thresholds]
        if metric not in ("gIoU", "cIoU", "IL_MCC", "IL_acc", "F1_50"):
            raise ValueError(f"cannot calibrate on {metric!r}: use gIoU, cIoU, IL_MCC, IL_acc, F1_50 or "
                             "presence_acc")
        vals = [self._group_metrics(idx, ti, 0.5, with_ap=False)[metric] for ti in range(len(self.thresholds))]
        return self.thresholds.tolist(), vals

    def calibrate(self, metric: str = "gIoU", prompt_type: str = "all",
                  grid: Sequence[float] | None = None) -> dict:
        """Pick the grid threshold maximising ``metric``: ``{"metric", "threshold", "value", "curve"}``.
        ``grid`` restricts the search to some of the accumulated thresholds (default: all of them)."""
        ts, vals = self.threshold_curve(metric, prompt_type)
        if grid is not None:
            want = [self._threshold_index(t) for t in grid]
            ts, vals = [ts[i] for i in want], [vals[i] for i in want]
        best_t, best_v = choose_threshold(ts, vals)
        return {"metric": metric, "threshold": best_t, "value": best_v,
                "curve": {f"{t:.2f}": v for t, v in zip(ts, vals)}}
