"""HungarianMatcher: a one-to-one assignment of object queries to ground-truth instances (DETR, Mask2Former)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """bool [n, H, W] -> float [n, h, w] area fractions (soft targets at the prediction resolution)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.float()
    return F.interpolate(masks[None].float(), size=size, mode="area")[0]


def batch_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """logits [K, P], targets [n, P] -> 1 - dice [K, n]."""
    p = logits.sigmoid()
    num = 2 * p @ targets.T
    den = p.sum(-1)[:, None] + targets.sum(-1)[None]
    return 1 - (num + 1) / (den + 1)


def batch_bce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean per-pixel BCE of each prediction against each target: [K, n]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


def projections(masks: Tensor) -> tuple[Tensor, Tensor]:
    """[..., h, w] mask probabilities (or a box drawn as a mask) -> max-projections on the x axis [..., w] and on
    the y axis [..., h] (BoxInst: a mask fits its box iff both projections equal the box's)."""
    return masks.amax(-2), masks.amax(-1)


def batch_projection_cost(prob: Tensor, boxes: Tensor) -> Tensor:
    """prob [K, h, w] mask probabilities, boxes [n, h, w] boxes drawn as masks -> the dice cost of the x and y
    projections, summed [K, n]."""
    cost = 0.0
    for p, t in zip(projections(prob), projections(boxes)):
        num = 2 * p @ t.T
        den = p.sum(-1)[:, None] + t.sum(-1)[None]
        cost = cost + 1 - (num + 1) / (den + 1)
    return cost


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 cost_bbox: float = 5.0, cost_giou: float = 2.0, alpha: float = 0.25, gamma: float = 2.0,
                 mask_cost_stride: int = 2) -> None:
        super().__init__()
        self.mask_cost_stride = mask_cost_stride
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.cost_bbox, self.cost_giou, self.alpha, self.gamma = cost_bbox, cost_giou, alpha, gamma

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """outputs: pred_logits [B,K], pred_masks [B,K,h,w], pred_boxes [B,K,4]; targets: B dicts with masks
        [n,H,W] (bool or float at [h,w]), boxes [n,4] normalised cxcywh and optionally has_mask [n] (False: a
        box-only instance, its mask the filled box: its mask costs are those of the box's projections). Returns B
        (query_idx, target_idx)."""
        out, device = [], outputs["pred_logits"].device  # the indices live where the outputs do
        for b, t in enumerate(targets):
            n = t["boxes"].shape[0]
            if n == 0:
                out.append((torch.empty(0, dtype=torch.long, device=device),
                            torch.empty(0, dtype=torch.long, device=device)))
                continue
            logits = outputs["pred_logits"][b].float()
            prob = logits.sigmoid()
            # focal-style classification cost (Deformable DETR)
            neg = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
            pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
            c_class = (pos - neg)[:, None].expand(-1, n)
            pm = outputs["pred_masks"][b].float()
            if self.mask_cost_stride > 1:  # costs on a coarser grid: the assignment barely changes, the cost halves
                pm = F.avg_pool2d(pm[None], self.mask_cost_stride)[0]
            grid = pm.shape[-2:]
            tm = resize_masks(t["masks"], grid).flatten(1)
            pm = pm.flatten(1)
            c_mask, c_dice = batch_bce_cost(pm, tm), batch_dice_cost(pm, tm)
            has_mask = t.get("has_mask")
            if has_mask is not None and not bool(has_mask.all()):
                box_only = ~has_mask.to(pm.device)
                c_proj = batch_projection_cost(pm.sigmoid().view(-1, *grid), tm.view(-1, *grid))
                c_mask = torch.where(box_only[None], torch.zeros_like(c_mask), c_mask)
                c_dice = torch.where(box_only[None], c_proj / 2, c_dice)
            pb, tb = outputs["pred_boxes"][b].float(), t["boxes"].float()
            c_bbox = torch.cdist(pb, tb, p=1)
            c_giou = -generalized_box_iou(box_convert(pb, "cxcywh", "xyxy"), box_convert(tb, "cxcywh", "xyxy"))
            c = (self.cost_class * c_class + self.cost_mask * c_mask + self.cost_dice * c_dice
                 + self.cost_bbox * c_bbox + self.cost_giou * c_giou)
            i, j = linear_sum_assignment(c.cpu().numpy())
            out.append((torch.as_tensor(i, dtype=torch.long, device=device),
                        torch.as_tensor(j, dtype=torch.long, device=device)))
        return out
