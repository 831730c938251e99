"""Typed carriers passed between the parts of sam-lite: what ``set_image`` caches (:class:`ImageEmbedding`), what is
asked (:class:`Prompt`), the encoded words (:class:`TextEmbedding`) and the attention weights (:class:`Attentions`).

They depend on torch only, so every layer (modeling, data, processing, predictor, export) can use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor


def _index(t: Tensor | None, index: Tensor) -> Tensor | None:
    """Rows ``index`` of ``t``; from a single image, a broadcast view (no copy of the image's features)."""
    if t is None:
        return None
    if t.shape[0] == 1 and not torch.jit.is_tracing():
        return t.expand(len(index), *t.shape[1:])
    return t[index.to(t.device)]


@dataclass
class ImageEmbedding:
    """The prompt-independent image embedding of B images (what :meth:`SamLitePredictor.set_image` caches).

    tokens [B, N, D] (N = h*w stride-16 patches after the encoder's self-attention), pos [N, D] their sine code,
    grid (h, w), pixel_features [B, mask_dim, S/4, S/4], class_logits [B, 1000, S/32, S/32] (ImageNet prior) or
    None, concept_embedding [B, 384, S/8, S/8] and concept_probs [B, C, S/8, S/8] (the concept map: per-pixel
    embedding and its softmax over the vocabulary, background left out) or None, image_concept [B, 384] (the
    pooled image in the sentence space, :class:`~sam_lite.modeling.concept_map.ImagePresence`) or None,
    encoder_attentions: per encoder layer [B, H, N, N] (empty unless asked for).
    """

    tokens: Tensor
    pos: Tensor
    grid: tuple[int, int]
    pixel_features: Tensor
    class_logits: Tensor | None = None
    concept_embedding: Tensor | None = None
    concept_probs: Tensor | None = None
    image_concept: Tensor | None = None
    encoder_attentions: list[Tensor] = field(default_factory=list)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, index: Tensor) -> "ImageEmbedding":
        """Rows ``index`` [P] (prompt i reads image index[i]); pos and grid are shared."""
        return replace(self, tokens=_index(self.tokens, index), pixel_features=_index(self.pixel_features, index),
                       class_logits=_index(self.class_logits, index),
                       concept_embedding=_index(self.concept_embedding, index),
                       concept_probs=_index(self.concept_probs, index),
                       image_concept=_index(self.image_concept, index),
                       encoder_attentions=[_index(a, index) for a in self.encoder_attentions])


@dataclass
class TextEmbedding:
    """P encoded prompts: features [P, T, 384] (MiniLM last hidden states, zero at padding), padding_mask [P, T]
    (True = padding), sentence [P, 384] (normalised mean pool; zero for a prompt without text)."""

    features: Tensor
    padding_mask: Tensor
    sentence: Tensor

    def __len__(self) -> int:
        return self.features.shape[0]


# the kinds of visual-prompt token (modeling/prompt_encoder.py embeds one of each; attention plots label them)
PROMPT_TOKEN_TYPES = ("positive point", "negative point", "box corner 1", "box corner 2", "exemplar corner 1",
                      "exemplar corner 2", "exemplar appearance", "not a point")
GEOMETRY_FIELDS = ("points", "point_labels", "boxes", "box_valid", "exemplars", "exemplar_valid")


@dataclass
class Prompt:
    """P prompt rows: words and, for visual prompts, SAM-style geometry in pixels of the model input (after the
    processor's resize, before padding; a point (X, Y) is the pixel whose centre is at (X + 0.5, Y + 0.5)).

    text: P strings ("" = no text), or None when only encoded text exists (an exported graph's inputs; then give
    text_valid). Geometry (all None for a text-only batch): points [P, N, 2] (x, y) with
    point_labels [P, N] (1 positive, 0 negative, -1 padding), boxes [P, 4] xyxy with box_valid [P], exemplars
    [P, E, 4] xyxy with exemplar_valid [P, E]. text_valid [P]: False for rows whose text is to be ignored (set from
    ``text`` when not given; a given value is and-ed with it).
    """

    text: list[str] | None
    points: Tensor | None = None
    point_labels: Tensor | None = None
    boxes: Tensor | None = None
    box_valid: Tensor | None = None
    exemplars: Tensor | None = None
    exemplar_valid: Tensor | None = None
    text_valid: Tensor | None = None

    def __post_init__(self) -> None:
        given = [getattr(self, f) is not None for f in GEOMETRY_FIELDS]
        if any(given) and not all(given):
            raise ValueError(f"a geometric Prompt needs all of {GEOMETRY_FIELDS}")
        if self.text is None:
            if self.text_valid is None:
                raise ValueError("a Prompt without text strings needs text_valid")
            return
        self.text = [t if isinstance(t, str) else "" for t in self.text]
        # on the device of a given text_valid (Prompt.to keeps it there), else the CPU
        device = self.text_valid.device if self.text_valid is not None else None
        nonempty = torch.tensor([bool(t.strip()) for t in self.text], dtype=torch.bool, device=device)
        self.text_valid = nonempty if self.text_valid is None else nonempty & self.text_valid.bool()

    def __len__(self) -> int:
        return self.text_valid.shape[0]

    @property
    def is_geometric(self) -> bool:
        return self.points is not None

    @classmethod
    def from_rows(cls, text: list[str], rows: list[dict | None], min_points: int = 0, min_exemplars: int = 0,
                  text_valid: list[bool] | Tensor | None = None) -> "Prompt":
        """Per-row visual prompts -> one padded geometric Prompt. Each row is ``None`` (no geometry: a text prompt)
        or a dict with any of ``points [n, 2]``, ``point_labels [n]``, ``box [4]``, ``exemplars [e, 4]``;
        N = max(n, min_points), E likewise (padding: label -1, invalid box / exemplar slots)."""
        rows = [r or {} for r in rows]
        n = max([min_points] + [len(r.get("points", ())) for r in rows])
        e = max([min_exemplars] + [len(r.get("exemplars", ())) for r in rows])
        p = len(rows)
        points, labels = torch.zeros(p, n, 2), torch.full((p, n), -1, dtype=torch.long)
        boxes, box_valid = torch.zeros(p, 4), torch.zeros(p, dtype=torch.bool)
        exemplars, exemplar_valid = torch.zeros(p, e, 4), torch.zeros(p, e, dtype=torch.bool)
        for i, r in enumerate(rows):
            if r.get("points") is not None and len(r["points"]):
                k = len(r["points"])
                points[i, :k] = torch.as_tensor(r["points"], dtype=torch.float32)
                lab = r.get("point_labels")
                labels[i, :k] = torch.ones(k, dtype=torch.long) if lab is None else torch.as_tensor(lab).long()
            if r.get("box") is not None:
                boxes[i], box_valid[i] = torch.as_tensor(r["box"], dtype=torch.float32), True
            if r.get("exemplars") is not None and len(r["exemplars"]):
                k = len(r["exemplars"])
                exemplars[i, :k] = torch.as_tensor(r["exemplars"], dtype=torch.float32)
                exemplar_valid[i, :k] = True
        valid = None if text_valid is None else torch.as_tensor(text_valid, dtype=torch.bool)
        return cls(list(text), points, labels, boxes, box_valid, exemplars, exemplar_valid, valid)

    def geometry(self) -> dict[str, Tensor]:
        """The geometry tensors by name (``GEOMETRY_FIELDS`` + text_valid)."""
        if not self.is_geometric:
            raise ValueError("this Prompt has no points, boxes or exemplars")
        return {**{f: getattr(self, f) for f in GEOMETRY_FIELDS}, "text_valid": self.text_valid}

    def to(self, device: torch.device | str) -> "Prompt":
        moved = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "text"}
        return replace(self, **{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in moved.items()})


@dataclass
class LayerAttention:
    """One layer's attention weights [P, H, Lq, Lk] (rows sum to 1), by kind; None where the layer has none."""

    self_attn: Tensor | None = None
    text_cross_attn: Tensor | None = None
    image_cross_attn: Tensor | None = None

    def select(self, i: int) -> "LayerAttention":
        return LayerAttention(*(None if a is None else a[i] for a in (self.self_attn, self.text_cross_attn,
                                                                        self.image_cross_attn)))


@dataclass
class Attentions:
    """Attention weights of one forward pass, per stage and layer (Q rows, K/V columns):

    * ``encoder[l].self_attn``: patches -> patches [P, H, N, N] (image encoder);
    * ``fusion[l].text_cross_attn``: patches -> prompt tokens [P, H, N, T];
    * ``decoder[l].self_attn`` [P, H, 1+K, 1+K], ``.text_cross_attn`` [P, H, 1+K, T], ``.image_cross_attn``
      [P, H, 1+K, N]: row 0 is the presence token, rows 1..K the object queries.

    ``grid`` (h, w) is the patch grid (N = h*w); ``tokens`` names the prompt tokens (K/V of the text attention) when
    the predictor fills it. :meth:`select` takes one prompt row (P dropped from every shape).
    """

    encoder: list[LayerAttention]
    fusion: list[LayerAttention]
    decoder: list[LayerAttention]
    grid: tuple[int, int]
    tokens: list[str] | None = None

    def named(self) -> list[tuple[str, Tensor]]:
        """Every weight tensor with a readable label ("decoder layer 0 image_cross_attn"), in stage order."""
        out = []
        for stage in ("encoder", "fusion", "decoder"):
            for i, layer in enumerate(getattr(self, stage)):
                for kind in ("self_attn", "text_cross_attn", "image_cross_attn"):
                    if getattr(layer, kind) is not None:
                        out.append((f"{stage} layer {i} {kind}", getattr(layer, kind)))
        return out

    def select(self, i: int) -> "Attentions":
        return Attentions([a.select(i) for a in self.encoder], [a.select(i) for a in self.fusion],
                          [a.select(i) for a in self.decoder], self.grid, self.tokens)
