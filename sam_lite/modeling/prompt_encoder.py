"""GeometricPromptEncoder: points, a box and exemplar boxes -> prompt tokens, read as K/V next to the words.

As in SAM's prompt encoder, a point or a box corner becomes one token: random Fourier features of its coordinates
(normalised to the model's padded input square, SAM's ``PositionEmbeddingRandom``) plus a learned embedding of its
type. Each coordinate token also carries the image tokens' own 2-D sine code at that place
(:func:`~sam_lite.modeling.attention.sine_position_encoding_points`): the image side of sam-lite uses DETR's sine
encoding, not SAM's dense random one, so this lets Q of a patch (image + its sine code) find the click it sits under
from the first step. An exemplar box is two corner tokens plus one appearance token: the stride-16 image tokens
(after the encoder's self-attention, before fusion; prompt-independent) pooled inside the box by
``torchvision.ops.roi_align`` on a 3x3 grid and projected to d_model. The stride-16 tokens rather than the stride-4
pixel features: they are what K/V of the fusion and decoder already live in, and what says *what* an object is.

Token layout of one prompt row (G = N + 2 + 3E tokens)::

    N point tokens | box corner 1, box corner 2 | per exemplar: corner 1, corner 2, appearance

Padding (a point labelled -1, an absent box, an unused exemplar slot) is the "not a point" embedding, and masked.

The geometry (:meth:`sam_lite.structures.Prompt.geometry`) holds, per prompt row, in pixels of the model input (after the processor's resize, before padding):
``points [P,N,2]`` (x, y), ``point_labels [P,N]`` (1 positive, 0 negative, -1 padding), ``boxes [P,4]`` xyxy with
``box_valid [P]``, ``exemplars [P,E,4]`` xyxy with ``exemplar_valid [P,E]`` and optionally ``text_valid [P]``
(False: the row has no text, see :meth:`SamLiteModel.prompt_tokens`). Coordinates follow SAM: pixel indices, so a box
from a mask is (min x, min y, max x, max y) of its pixels, and each coordinate is shifted by 0.5 to the pixel centre.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from ..structures import PROMPT_TOKEN_TYPES as TYPE_NAMES
from .attention import sine_position_encoding_points

POSITIVE, NEGATIVE, BOX_1, BOX_2, EXEMPLAR_1, EXEMPLAR_2, EXEMPLAR_APPEARANCE, NOT_A_POINT = range(len(TYPE_NAMES))
ROI_SIZE = 3  # roi_align output bins per side for an exemplar's appearance token


class PositionEmbeddingRandom(nn.Module):
    """SAM's positional encoding with random spatial frequencies: coords [..., 2] in [0, 1] -> [..., 2F]."""

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def forward(self, coords: Tensor) -> Tensor:
        c = (2 * coords.float() - 1) @ self.positional_encoding_gaussian_matrix
        c = 2 * math.pi * c
        return torch.cat([c.sin(), c.cos()], dim=-1)


class GeometricPromptEncoder(nn.Module):
    """Geometry dict (see the module docstring) + image tokens grid [P, D, h, w] -> tokens [P, G, D], padding [P, G]
    (True = padding). ``no_text_embed`` [1, D] is the K/V token of a prompt without text (see SamLiteModel.decode)."""

    def __init__(self, d_model: int, image_size: int) -> None:
        super().__init__()
        if d_model % 4:
            raise ValueError(f"d_model must be divisible by 4 for the prompt encoder, got {d_model}")
        self.d_model, self.image_size = d_model, image_size
        self.pe_layer = PositionEmbeddingRandom(d_model // 2)
        self.type_embed = nn.Embedding(len(TYPE_NAMES), d_model)
        self.appearance_proj = nn.Sequential(nn.Linear(d_model * ROI_SIZE * ROI_SIZE, d_model), nn.LayerNorm(d_model))
        self.no_text_embed = nn.Embedding(1, d_model)

    def encode_coords(self, xy: Tensor) -> Tensor:
        """Pixel coordinates of the model input [..., 2] (x, y) -> [..., D]: random Fourier features + sine code."""
        c = (xy.float() + 0.5) / self.image_size
        return self.pe_layer(c) + sine_position_encoding_points(c, self.d_model)

    def _typed(self, coords: Tensor, types: Tensor, pad: Tensor) -> Tensor:
        """Coordinate tokens [..., D] + type embedding; padding rows carry only the "not a point" embedding."""
        enc = self.encode_coords(torch.where(pad[..., None], torch.zeros_like(coords), coords))
        types = torch.where(pad, torch.full_like(types, NOT_A_POINT), types)
        return torch.where(pad[..., None], torch.zeros_like(enc), enc) + self.type_embed(types)

    def appearance(self, image_grid: Tensor, boxes: Tensor) -> Tensor:
        """image_grid [P, D, h, w] (stride 16), boxes [P, E, 4] xyxy pixel indices -> pooled tokens [P, E, D]."""
        p, e = boxes.shape[:2]
        ext = boxes.float() + torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device)  # pixel indices -> extent
        index = torch.arange(p, device=boxes.device, dtype=ext.dtype)[:, None, None].expand(p, e, 1)
        rois = torch.cat([index, ext], dim=-1).reshape(p * e, 5)
        pooled = roi_align(image_grid.float(), rois, output_size=ROI_SIZE,
                           spatial_scale=image_grid.shape[-1] / self.image_size, sampling_ratio=2, aligned=True)
        return self.appearance_proj(pooled.flatten(1).to(image_grid.dtype)).reshape(p, e, self.d_model)

    def forward(self, geometry: dict[str, Tensor], image_grid: Tensor) -> tuple[Tensor, Tensor]:
        p, dev = image_grid.shape[0], image_grid.device
        labels = geometry["point_labels"].to(dev).long()
        pt_pad = labels < 0
        pt_types = torch.where(labels == 1, torch.full_like(labels, POSITIVE), torch.full_like(labels, NEGATIVE))
        tokens = [self._typed(geometry["points"].to(dev).float(), pt_types, pt_pad)]
        pads = [pt_pad]

        box_pad = ~geometry["box_valid"].to(dev).bool()[:, None].expand(p, 2)
        box_types = torch.tensor([BOX_1, BOX_2], device=dev).expand(p, 2)
        tokens.append(self._typed(geometry["boxes"].to(dev).float().reshape(p, 2, 2), box_types, box_pad))
        pads.append(box_pad)

        ex, ex_valid = geometry["exemplars"].to(dev).float(), geometry["exemplar_valid"].to(dev).bool()
        e = ex.shape[1]
        if e:
            ex = torch.where(ex_valid[..., None], ex, torch.zeros_like(ex))
            ex_pad = ~ex_valid[..., None].expand(p, e, 3)
            corner_types = torch.tensor([EXEMPLAR_1, EXEMPLAR_2], device=dev).expand(p, e, 2)
            corners = self._typed(ex.reshape(p, e, 2, 2), corner_types, ex_pad[..., :2])
            app_type = torch.where(ex_valid, torch.full_like(ex_valid, EXEMPLAR_APPEARANCE, dtype=torch.long),
                                   torch.full_like(ex_valid, NOT_A_POINT, dtype=torch.long))
            app = torch.where(ex_valid[..., None], self.appearance(image_grid, ex), 0.0) + self.type_embed(app_type)
            tokens.append(torch.cat([corners, app[:, :, None]], dim=2).reshape(p, 3 * e, self.d_model))
            pads.append(ex_pad.reshape(p, 3 * e))
        return torch.cat(tokens, 1).to(image_grid.dtype), torch.cat(pads, 1)
