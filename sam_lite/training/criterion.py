"""SetCriterion (DETR style): match, then sum weighted losses over the final and every auxiliary decoder layer.

Losses: ``loss_ce`` sigmoid focal loss on every query's match logit (matched -> 1, others and every query of a
negative prompt -> 0), ``loss_mask`` BCE and ``loss_dice`` on matched masks, ``loss_proj`` (BoxInst) on the masks
of matched box-only instances: the dice of the mask's max-projections on the x and y axes against the box's (a box
says where the mask ends, never which pixels it holds), ``loss_bbox`` L1 and ``loss_giou`` on matched boxes,
``loss_presence`` BCE of the presence logit against "the prompt has at least one instance", ``loss_sem_bce`` and
``loss_sem_dice`` on the semantic (union of instances) mask painted by the presence token (inside the boxes of
box-only instances BCE is not applied and the dice is that of the projections),
for a model with a concept map, ``loss_concept``: its dense softmax over the vocabulary with partial labels, once
per image (:func:`sam_lite.modeling.concept_map.concept_loss`), for a model with image-level presence,
``loss_image_presence``: BCE of every vocabulary concept's image-level logit against what the photo labels present
or absent (:func:`~sam_lite.modeling.concept_map.image_presence_loss`), and for a model with the IoU head (geometric
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

from ..modeling.concept_map import concept_loss, image_presence_loss
from .matcher import HungarianMatcher, projections, resize_masks

DEFAULT_WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_proj": 5.0, "loss_bbox": 5.0,
                   "loss_giou": 2.0, "loss_presence": 2.0, "loss_sem_bce": 2.0, "loss_sem_dice": 2.0,
                   "loss_concept": 2.0, "loss_iou": 1.0, "loss_image_presence": 2.0}


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-row dice loss: logits, targets [n, P] -> [n]."""
    return prob_dice_loss(logits.sigmoid(), targets)


def prob_dice_loss(p: Tensor, targets: Tensor) -> Tensor:
    """Per-row dice loss of probabilities: p, targets [n, P] -> [n]."""
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def projection_loss(logits: Tensor, boxes: Tensor) -> Tensor:
    """BoxInst: logits [n, h, w], boxes drawn as masks [n, h, w] -> [n], the mean dice loss of the x and y
    max-projections of the mask probabilities against the box's."""
    (px, py), (tx, ty) = projections(logits.sigmoid()), projections(boxes)
    return (prob_dice_loss(px, tx) + prob_dice_loss(py, ty)) / 2


def _has_mask(t: dict[str, Tensor]) -> Tensor:
    """[n] bool: which instances of a target have a mask (default: all)."""
    return t["has_mask"] if "has_mask" in t else torch.ones(t["boxes"].shape[0], dtype=torch.bool,
                                                                              device=t["boxes"].device)


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
        zero = pm.sum() * 0.0 + outputs["pred_boxes"].sum() * 0.0  # keeps the graph connected
        if q_idx.numel():
            src_masks = pm[b_idx, q_idx]
            tgt_masks = torch.cat([resize_masks(t["masks"], size)[j] for t, (_, j) in zip(targets, indices)])
            has = torch.cat([_has_mask(t)[j] for t, (_, j) in zip(targets, indices)]).to(pm.device)
            cls_target[b_idx, q_idx] = 1.0
            src, tgt = src_masks[has].flatten(1), tgt_masks[has].flatten(1)
            loss_mask = (F.binary_cross_entropy_with_logits(src, tgt, reduction="none").mean(1).sum() if has.any()
                         else zero)
            loss_dice = dice_loss(src, tgt).sum() if has.any() else zero
            loss_proj = projection_loss(src_masks[~has], tgt_masks[~has]).sum() if (~has).any() else zero
            src_boxes = outputs["pred_boxes"][b_idx, q_idx].float()
            tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).float()
            loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum()
            giou = torch.diag(generalized_box_iou(box_convert(src_boxes, "cxcywh", "xyxy"),
                                                  box_convert(tgt_boxes, "cxcywh", "xyxy")))
            loss_giou = (1 - giou).sum()
        else:  # only negatives in the batch: zero-valued terms
            loss_mask = loss_dice = loss_proj = loss_bbox = loss_giou = zero
        loss_ce = sigmoid_focal_loss(logits, cls_target, alpha=self.focal_alpha, reduction="none")
        if not self.match_loss_on_negatives:
            has_instances = torch.tensor([t["boxes"].shape[0] > 0 for t in targets], device=logits.device)
            loss_ce = loss_ce * has_instances[:, None]
        loss_ce = loss_ce.sum() / num_instances
        present = torch.tensor([float(t["boxes"].shape[0] > 0) for t in targets], device=logits.device)
        loss_presence = F.binary_cross_entropy_with_logits(outputs["presence_logits"].float(), present)
        losses = {"loss_ce": loss_ce, "loss_mask": loss_mask / num_instances, "loss_dice": loss_dice / num_instances,
                  "loss_proj": loss_proj / num_instances, "loss_bbox": loss_bbox / num_instances,
                  "loss_giou": loss_giou / num_instances,
                  "loss_presence": loss_presence}
        if "pred_iou" in outputs:
            losses["loss_iou"] = self._iou_loss(outputs["pred_iou"].float(), pm, targets, indices)
        if "pred_semantic" in outputs:
            losses.update(self._semantic_losses(outputs["pred_semantic"].float(), targets))
        return losses

    @staticmethod
    def _semantic_losses(sem: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """sem [B, h, w] logits of the union mask. Target: the union of the instance masks; the boxes of box-only
        instances are left out of the BCE and, for a prompt with any, the dice is that of the projections."""
        size = sem.shape[-2:]
        union, boxes, weight = [], [], []
        for t in targets:
            m, has = resize_masks(t["masks"], size).to(sem.device), _has_mask(t).to(sem.device)
            union.append(m[has].amax(0) if has.any() else sem.new_zeros(size))
            boxes.append(m[~has].amax(0) if (~has).any() else sem.new_zeros(size))
            weight.append(1.0 - (boxes[-1] > 0).float() * (1.0 - union[-1]))  # 0 inside a box, outside the masks
        union, boxes, weight = torch.stack(union), torch.stack(boxes), torch.stack(weight)
        bce = F.binary_cross_entropy_with_logits(sem, union, weight=weight)
        dice = []
        for b, t in enumerate(targets):
            if not t["boxes"].shape[0]:
                continue
            if bool(_has_mask(t).all()):
                dice.append(dice_loss(sem[b].flatten()[None], union[b].flatten()[None])[0])
            else:
                dice.append(projection_loss(sem[b][None], torch.maximum(union[b], boxes[b])[None])[0])
        return {"loss_sem_bce": bce, "loss_sem_dice": torch.stack(dice).mean() if dice else sem.sum() * 0.0}

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
                if t["masks"].shape[0] == 0 or not bool(_has_mask(t).all()):  # a box says nothing of mask IoU
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
                dense_allowed: Tensor | None = None, image_labels: Tensor | None = None) -> dict[str, Tensor]:
        """Returns every loss term (``_i`` suffix for auxiliary layer i) and ``loss``, their weighted sum.
        ``dense_labels`` [B_images, h, w] and ``dense_allowed`` [B_images, C+1]: the concept map's targets (see
        ``ConceptSegmentationDataset``), used when ``outputs`` holds ``concept_logits``; ``image_labels``
        [B_images, C] (1 / 0 / -1 unknown): the image-level presence target, used with ``image_concept_logits``."""
        n = float(sum(t["boxes"].shape[0] for t in targets))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([n], device=outputs["pred_logits"].device)  # nccl reduces CUDA tensors only
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
        if "image_concept_logits" in outputs and image_labels is not None:
            losses["loss_image_presence"] = image_presence_loss(outputs["image_concept_logits"],
                                                                image_labels.to(outputs["image_concept_logits"].device))
        losses["loss"] = sum(v * self.weight_dict[k.rsplit("_", 1)[0] if k[-1].isdigit() else k]
                             for k, v in losses.items())
        return losses
