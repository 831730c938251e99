"""Dense geometry prior: a visual prompt drawn as maps, added to the image side like the concept-map prior.

The geometric prompt tokens (:mod:`.prompt_encoder`) tell the queries *where* through attention alone; interactive
segmentation models also draw the clicks next to the image (RITM's click maps, SAM's dense mask prompt), which hands
the mask head the location directly. Per prompt row, maps over the padded model input:

====  =============================================================================================================
 0    positive clicks: max over the row's positive points of exp(-d^2 / 2 sigma^2), sigma = ``CLICK_SIGMA`` x S
 1    negative clicks: the same for its negative points
 2    box: 1 inside the (pixel-index, inclusive) xyxy box
 3    exemplars: 1 inside any exemplar box
 4    like this: cosine similarity of each cell's concept embedding to the mean concept embedding under the
      positive clicks, the box and the exemplars (LSeg-style; 0 without a concept map)
====  =============================================================================================================

A row without geometry (a text prompt) gets all-zero maps and the projections that read them have no bias, so text
answers do not depend on this module; the projections start at zero, so a text checkpoint fine-tuned into a
geometric one (``train --init-from``) answers text exactly as before at step 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_GEOMETRY_CHANNELS = 5
CLICK_SIGMA = 0.03  # of the input side: 7.7 px at 256


def _cell_centres(size: int, image_size: int, device) -> Tensor:
    """Pixel-index coordinates (as the geometry dict's) of the centres of ``size`` cells across the input side."""
    stride = image_size / size
    return (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * stride - 0.5


def _inside(boxes: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """boxes [..., 4] xyxy -> [..., H, W] 1.0 where the cell centre lies in the box (edges inclusive)."""
    x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
    return ((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)).float()


def geometry_maps(geometry: dict[str, Tensor], size: int, image_size: int) -> Tensor:
    """Channels 0-3 of the module docstring at ``size`` x ``size`` -> [P, 4, size, size]."""
    pts, labels = geometry["points"].float(), geometry["point_labels"]
    dev = pts.device
    xs = _cell_centres(size, image_size, dev)[None, :]  # [1, W]
    ys = _cell_centres(size, image_size, dev)[:, None]  # [H, 1]
    p = pts.shape[0]
    if pts.shape[1]:
        d2 = (xs - pts[..., 0, None, None]) ** 2 + (ys - pts[..., 1, None, None]) ** 2  # [P, N, H, W]
        g = torch.exp(-d2 / (2 * (CLICK_SIGMA * image_size) ** 2))
        pos = (g * (labels == 1)[..., None, None].float()).amax(1)
        neg = (g * (labels == 0)[..., None, None].float()).amax(1)
    else:
        pos = neg = pts.new_zeros(p, size, size)
    box = _inside(geometry["boxes"].float(), xs, ys) * geometry["box_valid"].float()[:, None, None]
    ex, ex_valid = geometry["exemplars"].float(), geometry["exemplar_valid"].float()
    exemplar = ((_inside(ex, xs, ys) * ex_valid[..., None, None]).amax(1) if ex.shape[1]
                else pts.new_zeros(p, size, size))
    return torch.stack([pos, neg, box, exemplar], 1)


def like_this(concept: Tensor, maps: Tensor) -> Tensor:
    """concept [P, C, h, w] unit embeddings, maps [P, 4, h, w] (channels 0-3 at the concept grid) -> the cosine
    similarity [P, h, w] of every cell to the mean embedding under the positive clicks, box and exemplars (0 for
    rows without any)."""
    weight = maps[:, 0] + maps[:, 2] + maps[:, 3]  # [P, h, w]
    proto = (concept * weight[:, None]).sum((2, 3))  # [P, C]
    has = weight.flatten(1).sum(1) > 0
    proto = F.normalize(proto, dim=1) * has[:, None].to(proto.dtype)
    return torch.einsum("pc,pchw->phw", proto, concept)


def geometry_prior(geometry: dict[str, Tensor], size: int, image_size: int, concept: Tensor | None = None) -> Tensor:
    """The five maps of the module docstring [P, 5, size, size] for the geometry dict's rows; ``concept``
    [P, C, h, w]: the rows' concept embeddings (the image's, paired by row), or None."""
    maps = geometry_maps(geometry, size, image_size)
    if concept is None:
        sim = maps.new_zeros(maps.shape[0], size, size)
    else:
        small = geometry_maps(geometry, concept.shape[-1], image_size)
        sim = like_this(concept.float(), small)
        sim = F.interpolate(sim[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return torch.cat([maps, sim[:, None]], 1)
