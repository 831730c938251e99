"""Evaluation: gIoU / cIoU / presence / IL-MCC / COCO mask AP per prompt type and threshold calibration
(:mod:`.metrics`); the evaluation loop and CLI live in :mod:`sam_lite.evaluation.evaluate` (``evaluate``, ``main``)."""

from .metrics import (DEFAULT_THRESHOLDS, PROMPT_TYPES, APSample, SegmentationMetrics, choose_threshold, ciou,
                      coco_mask_ap, giou, intersection_union, matthews_corrcoef, mcc_from_counts, presence_accuracy,
                      presence_auroc, roc_auc, sample_iou)

__all__ = ["DEFAULT_THRESHOLDS", "PROMPT_TYPES", "APSample", "SegmentationMetrics", "choose_threshold", "ciou",
           "coco_mask_ap", "giou", "intersection_union", "matthews_corrcoef", "mcc_from_counts", "presence_accuracy",
           "presence_auroc", "roc_auc", "sample_iou"]
