"""Prediction heads: per query a mask, a box and a match logit; per image-prompt pair a presence logit.

score = sigmoid(match) x sigmoid(presence): a query says "this is one instance", the presence token says "the concept
is in the image at all".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import MLP


class PredictionHeads(nn.Module):
    def __init__(self, dim: int, mask_dim: int, prior_dim: int = 0, iou_head: bool = False) -> None:
        super().__init__()
        self.match = nn.Linear(dim, 1)
        self.box = MLP(dim, dim, 4, 3)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        self.presence = nn.Linear(dim, 1)
        # the presence token also paints one semantic mask (the union of all instances): dense supervision that
        # teaches the pixel embedding where the concept is, even when few queries are matched
        self.semantic_embed = MLP(dim, dim, mask_dim, 2)
        # the ImageNet prior's per-image statistics vote on presence directly (starts at zero)
        self.presence_prior = nn.Linear(prior_dim, 1) if prior_dim else None
        if self.presence_prior is not None:
            nn.init.zeros_(self.presence_prior.weight)
            nn.init.zeros_(self.presence_prior.bias)
        # SAM's IoU prediction: how well each query's mask covers the wanted object (ranks alternative masks)
        self.iou = MLP(dim, dim, 1, 3) if iou_head else None

    def forward(self, states: Tensor, pixel_embedding: Tensor, prior_stats: Tensor | None = None) -> dict[str, Tensor]:
        """states [B, 1+K, D] (index 0 = presence token), pixel_embedding [B, Dm, h, w] (stride 4).

        Returns pred_logits [B, K] (match), pred_boxes [B, K, 4] (cx, cy, w, h in [0, 1] of the padded input),
        pred_masks [B, K, h, w] (logits), presence_logits [B], pred_semantic [B, h, w] (logits of the union mask)
        and, with the IoU head, pred_iou [B, K] in [0, 1] (the predicted IoU of each query's mask with its object).
        """
        presence, queries = states[:, 0], states[:, 1:]
        presence_logits = self.presence(presence)[:, 0]
        if self.presence_prior is not None and prior_stats is not None:
            presence_logits = presence_logits + self.presence_prior(prior_stats)[:, 0]
        masks = torch.einsum("bkc,bchw->bkhw", self.mask_embed(queries), pixel_embedding)
        out = {"pred_logits": self.match(queries)[..., 0], "pred_boxes": self.box(queries).sigmoid(),
               "pred_masks": masks, "presence_logits": presence_logits,
               "pred_semantic": torch.einsum("bc,bchw->bhw", self.semantic_embed(presence), pixel_embedding)}
        if self.iou is not None:
            out["pred_iou"] = self.iou(queries)[..., 0].sigmoid()
        return out
