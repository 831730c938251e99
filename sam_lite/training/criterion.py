"""SetCriterion (DETR style): match, then sum weighted losses over the final and every auxiliary decoder layer.

Losses: ``loss_ce`` sigmoid focal loss on every query's match logit (matched -> 1, others and every query of a
negative prompt -> 0), ``loss_mask`` BCE and ``loss_dice`` on matched masks, ``loss_bbox`` L1 and ``loss_giou`` on
matched boxes, ``loss_presence`` BCE of the presence logit against "the prompt has at least one instance",
``loss_sem_bce`` and ``loss_sem_dice`` on the semantic (union of instances) mask painted by the presence token,
for a model with a concept map, ``loss_concept``: its dense softmax over the vocabulary with partial labels, once
per image (:func:`sam_lite.modeling.concept_map.concept_loss`), and for a model with the IoU head (geometric
prompts), ``loss_iou``: MSE of each query's ``pred_iou`` against the actual IoU of its (thresholded) mask, detached:
a matched query against its instance, the other queries of a prompt with instances against the best IoU they reach
with any of them (so the IoU ranks SAM-style alternative masks; the two means are added). Prompts without
instances leave the IoU head alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from ..modeling.concept_map import concept_loss
from .matcher import HungarianMatcher, resize_masks

DEFAULT_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_bbox": 5.0, "loss_giou": 2.0,
                   "loss_presence": 2.0, "loss_sem_bce": 2.0, "loss_sem_dice": 2.0, "loss_concept": 2.0,
                   "loss_iou": 1.0}


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-row dice loss: logits, targets [n, P] -> [n]."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


class SetCriterion(nn.Module):
    def __init__(self, matcher: HungarianMatcher | None = None, weight_dict: dict[str, float] | None = None,
                 focal_alpha: float = 0.25, match_loss_on_negatives: bool = True) -> None:
        """``match_loss_on_negatives=False`` leaves the queries of absent-concept prompts unsupervised (SAM 3's
        decoupling: presence alone says "not here", the queries only learn to tell instances apart)."""
        super().__init__()
        self.matcher = matcher or HungarianMatcher()
        self.weight_dict = dict(weight_dict or DEFAULT_WEIGHTS)
        self.focal_alpha = focal_alpha
        self.match_loss_on_negatives = match_loss_on_negatives

    def _losses(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], num_instances: float
                ) -> dict[str, Tensor]:
        indices = self.matcher(outputs, targets)
        logits = outputs["pred_logits"].float()
        b_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        q_idx = torch.cat([src for src, _ in indices])
        pm = outputs["pred_masks"].float()
        size = pm.shape[-2:]
        cls_target = torch.zeros_like(logits)
        if q_idx.numel():
            src_masks = pm[b_idx, q_idx].flatten(1)
            tgt_masks = torch.cat([resize_masks(t["masks"], size)[j] for t, (_, j) in zip(targets, indices)]).flatten(1)
            cls_target[b_idx, q_idx] = 1.0
            loss_mask = F.binary_cross_entropy_with_logits(src_masks, tgt_masks, reduction="none").mean(1).sum()
            loss_dice = dice_loss(src_masks, tgt_masks).sum()
            src_boxes = outputs["pred_boxes"][b_idx, q_idx].float()
            tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).float()
            loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum()
            giou = torch.diag(generalized_box_iou(box_convert(src_boxes, "cxcywh", "xyxy"),
                                                  box_convert(tgt_boxes, "cxcywh", "xyxy")))
            loss_giou = (1 - giou).sum()
        else:  # only negatives in the batch: keep the graph connected with zero-valued terms
            zero = pm.sum() * 0.0 + outputs["pred_boxes"].sum() * 0.0
            loss_mask = loss_dice = loss_bbox = loss_giou = zero
        loss_ce = sigmoid_focal_loss(logits, cls_target, alpha=self.focal_alpha, reduction="none")
        if not self.match_loss_on_negatives:
            has_instances = torch.tensor([t["boxes"].shape[0] > 0 for t in targets], device=logits.device)
            loss_ce = loss_ce * has_instances[:, None]
        loss_ce = loss_ce.sum() / num_instances
        present = torch.tensor([float(t["boxes"].shape[0] > 0) for t in targets], device=logits.device)
        loss_presence = F.binary_cross_entropy_with_logits(outputs["presence_logits"].float(), present)
        losses = {"loss_ce": loss_ce, "loss_mask": loss_mask / num_instances, "loss_dice": loss_dice / num_instances,
                  "loss_bbox": loss_bbox / num_instances, "loss_giou": loss_giou / num_instances,
                  "loss_presence": loss_presence}
        if "pred_iou" in outputs:
            losses["loss_iou"] = self._iou_loss(outputs["pred_iou"].float(), pm, targets, indices)
        if "pred_semantic" in outputs:
            sem = outputs["pred_semantic"].float()
            union = torch.stack([resize_masks(t["masks"], size).amax(0) if t["masks"].shape[0]
                                 else sem.new_zeros(size) for t in targets])
            losses["loss_sem_bce"] = F.binary_cross_entropy_with_logits(sem, union)
            has = present.bool()
            losses["loss_sem_dice"] = (dice_loss(sem[has].flatten(1), union[has].flatten(1)).mean() if has.any()
                                       else sem.sum() * 0.0)
        return losses

    @staticmethod
    def _iou_loss(pred_iou: Tensor, pred_masks: Tensor, targets: list[dict[str, Tensor]],
                  indices: list[tuple[Tensor, Tensor]]) -> Tensor:
        """pred_iou [B, K], pred_masks [B, K, h, w] logits -> the mean squared error of matched queries against the
        IoU with their instance plus that of the other queries of positive prompts against their best IoU."""
        size = pred_masks.shape[-2:]
        target = torch.zeros_like(pred_iou)
        matched = torch.zeros_like(pred_iou, dtype=torch.bool)
        positive = torch.zeros(pred_iou.shape[0], dtype=torch.bool, device=pred_iou.device)
        with torch.no_grad():
            for b, (t, (src, j)) in enumerate(zip(targets, indices)):
                if t["masks"].shape[0] == 0:
                    continue
                hard = (pred_masks[b] > 0).flatten(1).float()
                gt = (resize_masks(t["masks"], size) > 0.5).flatten(1).float().to(hard.device)
                inter = hard @ gt.T
                iou = inter / (hard.sum(1)[:, None] + gt.sum(1)[None] - inter).clamp(min=1)  # [K, n]
                target[b] = iou.max(1).values
                target[b, src] = iou[src, j]
                matched[b, src] = True
                positive[b] = True
        err = (pred_iou - target) ** 2
        others = positive[:, None] & ~matched
        zero = pred_iou.sum() * 0.0
        return ((err[matched].mean() if matched.any() else zero) + (err[others].mean() if others.any() else zero))

    def forward(self, outputs: dict, targets: list[dict[str, Tensor]], dense_labels: Tensor | None = None,
                dense_allowed: Tensor | None = None) -> dict[str, Tensor]:
        """Returns every loss term (``_i`` suffix for auxiliary layer i) and ``loss``, their weighted sum.
        ``dense_labels`` [B_images, h, w] and ``dense_allowed`` [B_images, C+1]: the concept map's targets (see
        ``ConceptSegmentationDataset``), used when ``outputs`` holds ``concept_logits``."""
        n = float(sum(t["boxes"].shape[0] for t in targets))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([n])
            torch.distributed.all_reduce(t)
            n = t.item() / torch.distributed.get_world_size()
        n = max(n, 1.0)
        losses = self._losses(outputs, targets, n)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self._losses(aux, targets, n).items()})
        if "concept_logits" in outputs and dense_labels is not None:
            logits = F.interpolate(outputs["concept_logits"].float(), size=dense_labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            losses["loss_concept"] = concept_loss(logits, dense_labels.to(logits.device),
                                                  dense_allowed.to(logits.device))
        losses["loss"] = sum(v * self.weight_dict[k.rsplit("_", 1)[0] if k[-1].isdigit() else k]
                             for k, v in losses.items())
        return losses
