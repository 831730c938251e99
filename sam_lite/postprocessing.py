"""The inference policy: raw model outputs -> the instances a user gets (DETR's ``PostProcess``).

One place for every rule, shared by the predictor, evaluation, export and the benchmark:

* an instance's score is sigmoid(match) x presence (:func:`instance_scores`); a calibrated checkpoint reports
  instead P(right) from a logistic model of the query's match, presence, mask confidence, predicted IoU and mask area
  (:func:`calibrate`, Mask Scoring R-CNN's idea that the mask's own quality belongs in its score);
* text and exemplar prompts: every query scoring at least ``score_threshold``, empty masks dropped, duplicates
  suppressed by mask NMS (:meth:`PostProcess.instances`);
* points and/or a box: the one object under them (:meth:`PostProcess.one_object`): queries whose mask agrees with
  the prompt first, then by score x mask confidence, up to three distinct alternatives;
* masks are upsampled to the photo and a blob that vanishes at the photo's size is never returned.

Thresholds come from :class:`~sam_lite.config.InferenceConfig`, stored beside the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import masks_to_boxes

from .config import SCORE_FEATURES, InferenceConfig
from .processing import ImageMeta, SamLiteProcessor


def instance_scores(outputs: dict) -> tuple[Tensor, Tensor]:
    """outputs of P prompt rows -> raw scores [P, K] = sigmoid(match) x presence, presence probabilities [P]."""
    presence = outputs["presence_logits"].float().sigmoid()
    return outputs["pred_logits"].float().sigmoid() * presence[:, None], presence


def score_features(outputs: dict, names: list[str] | tuple[str, ...], mask_threshold: float = 0.0) -> Tensor:
    """outputs of P prompt rows -> [P, K, F] the features ``names`` of every query, each on a logit-like scale:
    ``score`` logit of sigmoid(match) x presence, ``match`` / ``presence`` their logits, ``mask_confidence`` the logit
    of Mask2Former's mean foreground probability, ``predicted_iou`` the logit of the IoU head's output, ``mask_area``
    the log of the mask's share of the low-resolution grid."""
    eps = 1e-4

    def feature(name: str) -> Tensor:
        if name == "score":
            return torch.logit(instance_scores(outputs)[0], eps)
        if name == "match":
            return outputs["pred_logits"].float()
        if name == "presence":
            return outputs["presence_logits"].float()[:, None].expand(outputs["pred_logits"].shape)
        masks = outputs["pred_masks"].float()
        if name == "mask_confidence":
            return torch.logit(mask_confidence(masks, mask_threshold), eps)
        if name == "mask_area":
            return (masks > mask_threshold).flatten(-2).float().mean(-1).clamp(min=eps).log()
        if name == "predicted_iou":
            if "pred_iou" not in outputs:
                raise ValueError("score_calibration uses predicted_iou but this model has no IoU head")
            return torch.logit(outputs["pred_iou"].float(), eps)
        raise ValueError(f"unknown score feature {name!r}; known: {SCORE_FEATURES}")

    return torch.stack([feature(n) for n in names], -1)


def calibrate(outputs: dict, scores: Tensor, calibration: dict | None, mask_threshold: float = 0.0) -> Tensor:
    """Raw scores [P, K] -> what a score means: P(right) = sigmoid(features . weights + bias) for ``calibration``
    {"features", "weights", "bias"} (:class:`~sam_lite.config.InferenceConfig`); None: ``scores`` unchanged."""
    if calibration is None:
        return scores
    x = score_features(outputs, calibration["features"], mask_threshold)
    w = torch.tensor(calibration["weights"], dtype=x.dtype)
    return torch.sigmoid(x @ w + calibration["bias"])


def keeps_best_instance(presence: float | None, best_instance_presence: float | None) -> bool:
    """The rule ``best_instance_presence`` (:class:`~sam_lite.config.InferenceConfig`): a prompt whose presence
    probability reaches it keeps its best instance even below the score threshold (None: never)."""
    return best_instance_presence is not None and presence is not None and presence >= best_instance_presence


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """a [N, ...], b [M, ...] boolean masks -> IoU [N, M]."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return inter / union.clamp(min=1)


def suppress_duplicates(masks: Tensor, scores: Tensor, iou_threshold: float = 0.6) -> Tensor:
    """Greedy mask NMS. masks [N, h, w] bool, scores [N] -> kept indices, best first."""
    order = scores.argsort(descending=True)
    if order.numel() == 0:
        return order
    iou = mask_iou(masks[order], masks[order])
    keep: list[int] = []
    for i in range(order.numel()):
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(i)
    return order[torch.tensor(keep, dtype=torch.long)]


def boxes_from_masks(masks: Tensor, fallback: Tensor) -> Tensor:
    """Tight xyxy boxes of boolean masks [N, H, W]; rows with an empty mask take ``fallback`` [N, 4]."""
    boxes = fallback.clone().float()
    nonempty = masks.flatten(1).any(1)
    if nonempty.any():
        boxes[nonempty] = masks_to_boxes(masks[nonempty]).float()
    return boxes


def mask_confidence(mask_logits: Tensor, mask_threshold: float = 0.0) -> Tensor:
    """[..., h, w] logits -> [...]: mean probability inside the mask (0 for an empty mask), as in Mask2Former."""
    prob = mask_logits.sigmoid().flatten(-2)
    inside = (mask_logits > mask_threshold).flatten(-2).float()
    return (prob * inside).sum(-1) / inside.sum(-1).clamp(min=1.0)


def agrees_with_prompt(mask_logits: Tensor, prompt: dict[str, Tensor], input_size: int,
                       mask_threshold: float = 0.0) -> Tensor:
    """mask_logits [K, h, w] (stride 4 of the padded input), one row's visual prompt in model-input pixels (points,
    point_labels, box) -> bool [K]: the mask holds every positive point, none of the negative ones, and (with a box)
    at least half of it lies in the box. The logits are read bilinearly at each point, as the upsampling would."""
    k = mask_logits.shape[0]
    ok = torch.ones(k, dtype=torch.bool)
    if "points" in prompt:
        g = ((prompt["points"].float() + 0.5) / input_size * 2 - 1)[None, None]  # [1, 1, N, 2]
        at = F.grid_sample(mask_logits[None].float(), g, mode="bilinear", align_corners=False)[0, :, 0]  # [K, N]
        inside = at > mask_threshold
        positive = prompt["point_labels"].bool()[None]
        ok &= torch.where(positive, inside, ~inside).all(1)
    if "box" in prompt:
        h, w = mask_logits.shape[-2:]
        stride = input_size / w
        ys = (torch.arange(h) + 0.5) * stride - 0.5
        xs = (torch.arange(w) + 0.5) * stride - 0.5
        x0, y0, x1, y1 = prompt["box"].tolist()
        region = ((ys >= y0 - stride / 2) & (ys <= y1 + stride / 2))[:, None] & \
            ((xs >= x0 - stride / 2) & (xs <= x1 + stride / 2))[None]
        masks = mask_logits > mask_threshold
        inside = (masks & region).flatten(1).sum(1)
        ok &= inside * 2 >= masks.flatten(1).sum(1).clamp(min=1)
    return ok


class PostProcess:
    """Row i of the raw outputs -> (query indices [N] best first, masks bool [N, H, W] at the photo's size, scores
    [N], boxes [N, 4] xyxy photo pixels). ``processor`` carries masks and boxes back to the photo."""

    def __init__(self, processor: SamLiteProcessor, config: InferenceConfig | None = None) -> None:
        self.processor = processor
        self.config = config or InferenceConfig()

    def _visible(self, order: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """A blob of a few low-resolution cells can vanish when upsampled to a small photo: never return it."""
        visible = masks.flatten(1).any(1)
        return order[visible], masks[visible]

    def instances(self, outputs: dict, i: int, scores: Tensor, meta: ImageMeta, score_threshold: float | None = None,
                  max_instances: int | None = None, presence: float | None = None) -> tuple[Tensor, Tensor]:
        """Every instance of row i: queries scoring >= ``score_threshold`` (default: the config's), non-empty, mask
        NMS at ``config.nms_iou``, at most ``max_instances`` -> (query indices [N], masks bool [N, H, W]). With
        ``config.best_instance_presence`` and a ``presence`` probability at or above it, the best-scoring non-empty
        query is kept even below the threshold (the concept is there: answer with the best guess, as SAM 3's
        presence head decouples "is it here" from "which one is it")."""
        t = self.config.score_threshold if score_threshold is None else score_threshold
        mt = self.config.mask_threshold
        low = outputs["pred_masks"][i] > mt
        nonempty = low.flatten(1).any(1)
        candidate = (scores >= t) & nonempty
        if not candidate.any() and nonempty.any() and keeps_best_instance(presence, self.config.best_instance_presence):
            candidate[scores.masked_fill(~nonempty, -1.0).argmax()] = True
        keep = candidate.nonzero()[:, 0]
        low = low[keep]
        order = keep[suppress_duplicates(low, scores[keep], self.config.nms_iou)] if keep.numel() else keep
        order = order[:max_instances]
        masks = self.processor.postprocess_masks(outputs["pred_masks"][i, order], meta) > mt
        return self._visible(order, masks)

    def one_object(self, outputs: dict, i: int, scores: Tensor, visual: dict[str, Tensor], meta: ImageMeta,
                   multimask: bool = False) -> tuple[Tensor, Tensor]:
        """Row i's answer to a point / box prompt (``visual`` in model-input pixels) -> (query indices [n], masks
        bool [n, H, W]), n <= 1 (or <= 3 with ``multimask``): queries that agree with the prompt first, then by
        score x mask confidence (Mask2Former's mean foreground probability); distinct masks (mask NMS). Not by
        ``pred_iou`` as SAM does: on training photos this rule picked better masks than the score alone and than
        the IoU head (click 0.242 / 0.222 / 0.131, box 0.399 / 0.325 / 0.302 mean IoU; docs/experiments.md)."""
        mt = self.config.mask_threshold
        logits = outputs["pred_masks"][i].float()
        low = logits > mt
        cand = low.flatten(1).any(1).nonzero()[:, 0]
        if not cand.numel():
            return cand, self.processor.postprocess_masks(logits[:0], meta) > mt
        agree = agrees_with_prompt(logits, visual, self.processor.image_size, mt)
        rank = scores * mask_confidence(logits, mt) + 2.0 * agree.float()  # agreeing queries first
        order = cand[suppress_duplicates(low[cand], rank[cand], self.config.nms_iou)]
        want = 3 if multimask else 1
        order = order[: want + 3]  # a few spares in case a tiny mask vanishes when upsampled
        masks = self.processor.postprocess_masks(outputs["pred_masks"][i, order], meta) > mt
        order, masks = self._visible(order, masks)
        return order[:want], masks[:want]

    def boxes(self, outputs: dict, i: int, order: Tensor, masks: Tensor, meta: ImageMeta) -> Tensor:
        """Tight boxes of the masks [N, 4] xyxy photo pixels (the box head's where a mask is empty)."""
        return boxes_from_masks(masks, self.processor.postprocess_boxes(outputs["pred_boxes"][i, order], meta))
