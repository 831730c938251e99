"""Priors: prompt-conditioned maps added to the image side before fusion, behind one interface.

Each prior turns (image embedding, prompt) into maps [P, C, h', w'] and, optionally, statistics [P, S]. It owns
three projections: ``token_proj`` adds the maps (resized to the patch grid) to the image tokens, ``pixel_proj`` adds
them to the stride-4 pixel embedding, ``presence_proj`` adds the statistics to the presence token's initial state
(the statistics also reach the presence head directly, see :class:`~.heads.PredictionHeads`).

* :class:`ImageNetPrior`: what the pretrained backbone already knows. Lite0's own classifier at every stride-32
  location, its 1,000 class probabilities weighted by how similar the prompt is to each class name ("a photo of a
  {class}", MiniLM, softmax at a low temperature): "dog", "automobile", "mug" light up the right region with no
  training; for concepts ImageNet lacks ("person", "sky") the similarity is low and the model learns to ignore it.
* :class:`ConceptMapPrior`: the prompt's heat map on the image's concept map (:mod:`.concept_map`).
* :class:`GeometryPrior`: a visual prompt drawn as maps (:mod:`.geometry_prior`); no bias and zero-initialised, so
  text rows are untouched.

Rows whose ``prompt.text_valid`` is False (a click without words) get zero text-prior maps and statistics: they say
nothing about a click.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..structures import ImageEmbedding, Prompt, TextEmbedding
from .geometry_prior import NUM_GEOMETRY_CHANNELS, geometry_prior
from .text_encoder import imagenet_class_embeddings


class PromptPrior(nn.Module):
    """Base: subclasses implement :meth:`maps`; :meth:`forward` adds them through the three projections."""

    channels: int = 0
    num_stats: int = 0

    def __init__(self, d_model: int, mask_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.token_proj = nn.Linear(self.channels, d_model, bias=bias)
        self.pixel_proj = nn.Conv2d(self.channels, mask_dim, 1, bias=bias)
        self.presence_proj = nn.Linear(self.num_stats, d_model) if self.num_stats else None

    def applies_to(self, prompt: Prompt) -> bool:
        """Whether this prior has anything to say about ``prompt`` (decode skips it otherwise)."""
        return True

    def maps(self, image: ImageEmbedding, text: TextEmbedding, prompt: Prompt
             ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """-> maps [P, C, h', w'], stats [P, S] or None, and a heat map [P, h', w'] worth showing (or None)."""
        raise NotImplementedError

    def forward(self, tokens: Tensor, pixel: Tensor, image: ImageEmbedding, text: TextEmbedding, prompt: Prompt
                ) -> tuple[Tensor, Tensor, dict[str, Tensor | None]]:
        """tokens [P, N, D], pixel [P, Dm, S/4, S/4] -> both with the maps added, and ``{"maps", "stats",
        "presence", "heat"}`` (presence [P, D]: the statistics' vote for the presence token, or None)."""
        maps, stats, heat = self.maps(image, text, prompt)
        maps = maps.to(tokens.dtype)
        if stats is not None:
            stats = stats.to(tokens.dtype)
        tok = F.interpolate(maps, size=image.grid, mode="bilinear", align_corners=False)
        tokens = tokens + self.token_proj(tok.flatten(2).transpose(1, 2))
        pixel = pixel + self.pixel_proj(F.interpolate(maps, size=pixel.shape[-2:], mode="bilinear",
                                                      align_corners=False))
        presence = self.presence_proj(stats) if self.presence_proj is not None else None
        return tokens, pixel, {"maps": maps, "stats": stats, "presence": presence, "heat": heat}


def text_rows(prompt: Prompt, like: Tensor) -> Tensor | None:
    """[P] 1.0 for rows with text, 0.0 for rows without (None when every row has text and no geometry)."""
    if not prompt.is_geometric:
        return None
    return prompt.text_valid.to(device=like.device, dtype=like.dtype)


class ImageNetPrior(PromptPrior):
    """Maps [P, 4, S/32, S/32]: P(prompt | x), its log / 4, P / max P, the best class-name similarity; stats [P, 4]:
    max, mean, log max / 4, best similarity."""

    channels, num_stats = 4, 4

    def __init__(self, d_model: int, mask_dim: int, temperature: float) -> None:
        super().__init__(d_model, mask_dim)
        self.temperature = temperature
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)

    def class_embedding_table(self, ref: Tensor) -> Tensor:
        """The MiniLM embeddings of the 1,000 class names [1000, 384] (loaded once)."""
        if self.class_embeddings.numel() == 0:
            self.class_embeddings = imagenet_class_embeddings().to(ref.device)
        return self.class_embeddings.to(ref.dtype)

    def class_weights(self, sentence: Tensor) -> tuple[Tensor, Tensor]:
        """sentence [P, 384] -> weights over classes [P, 1000] (sum 1), best cosine similarity [P]."""
        sim = sentence @ self.class_embedding_table(sentence).T
        return (sim / self.temperature).softmax(-1), sim.max(-1).values

    def maps(self, image: ImageEmbedding, text: TextEmbedding, prompt: Prompt
             ) -> tuple[Tensor, Tensor, None]:
        class_logits = image.class_logits.float()
        w, best_sim = self.class_weights(text.sentence.float())
        p = torch.einsum("bk,bkhw->bhw", w, class_logits.softmax(1))  # probability of the prompted concept
        peak = p.flatten(1).max(1).values
        maps = torch.stack([p, torch.log(p + 1e-4) / 4.0, p / (peak[:, None, None] + 1e-4),
                            best_sim[:, None, None].expand_as(p)], dim=1)
        stats = torch.stack([peak, p.flatten(1).mean(1), torch.log(peak + 1e-4) / 4.0, best_sim], dim=1)
        keep = text_rows(prompt, maps)
        if keep is not None:
            maps, stats = maps * keep[:, None, None, None], stats * keep[:, None]
        return maps, stats, None


class ConceptMapPrior(PromptPrior):
    """The prompt's heat map on the concept map. For a prompt p, its similarity to the known concepts (softmax over
    cos(p, concept) at a low temperature) picks the concepts it means, so "automobile" reads the map of "car":
    P(p | x) = sum_c w_c(p) * P(c | x). Maps [P, 4, S/8, S/8]: P(p | x), its log / 4, P / max P, the raw cosine
    <E(x), e_p>; stats [P, 5]: max, mean, log max / 4, fraction of pixels above 0.5, best prompt-concept similarity.
    The heat map is P(p | x)."""

    channels, num_stats = 4, 5

    def __init__(self, d_model: int, mask_dim: int, concept_embeddings: Tensor, temperature: float) -> None:
        super().__init__(d_model, mask_dim)
        self.temperature = temperature
        self.register_buffer("concept_embeddings", concept_embeddings.clone(), persistent=False)

    def prompt_weights(self, sentence: Tensor) -> tuple[Tensor, Tensor]:
        """sentence [P, 384] -> weights over the concepts [P, C] (sum 1) and the best cosine similarity [P]."""
        sim = sentence @ self.concept_embeddings.to(sentence.dtype).T
        return (sim / self.temperature).softmax(-1), sim.max(-1).values

    def maps(self, image: ImageEmbedding, text: TextEmbedding, prompt: Prompt) -> tuple[Tensor, Tensor, Tensor]:
        # the concept embedding is trained by its own dense loss: read detached (concept_probs keeps the gradient to
        # the map's background embedding and temperature, shared with the dense softmax)
        sentence, embedding = text.sentence.float(), image.concept_embedding.detach().float()
        w, best_sim = self.prompt_weights(sentence)
        p = torch.einsum("pk,pkhw->phw", w, image.concept_probs.float())  # P(prompt | x)
        cos = torch.einsum("pchw,pc->phw", embedding, sentence)
        peak = p.flatten(1).max(1).values
        maps = torch.stack([p, torch.log(p + 1e-4) / 4.0, p / (peak[:, None, None] + 1e-4), cos], dim=1)
        stats = torch.stack([peak, p.flatten(1).mean(1), torch.log(peak + 1e-4) / 4.0,
                             (p > 0.5).flatten(1).float().mean(1), best_sim], dim=1)
        keep = text_rows(prompt, maps)
        if keep is not None:
            maps, stats, p = maps * keep[:, None, None, None], stats * keep[:, None], p * keep[:, None, None]
        return maps, stats, p


class GeometryPrior(PromptPrior):
    """Clicks, box, exemplars and a "like this" concept-map similarity as maps [P, 5, S/4, S/4]; no statistics.
    Bias-free projections that start at zero: a text checkpoint fine-tuned into a geometric one answers text exactly
    as before at step 0, and text rows (all-zero maps) never depend on it."""

    channels, num_stats = NUM_GEOMETRY_CHANNELS, 0

    def __init__(self, d_model: int, mask_dim: int, image_size: int) -> None:
        super().__init__(d_model, mask_dim, bias=False)
        self.image_size = image_size
        nn.init.zeros_(self.token_proj.weight)
        nn.init.zeros_(self.pixel_proj.weight)

    def applies_to(self, prompt: Prompt) -> bool:
        return prompt.is_geometric

    def maps(self, image: ImageEmbedding, text: TextEmbedding, prompt: Prompt) -> tuple[Tensor, None, None]:
        concept = image.concept_embedding.detach() if image.concept_embedding is not None else None
        dev = image.pixel_features.device
        geometry = {k: v.to(dev) for k, v in prompt.geometry().items()}
        return geometry_prior(geometry, image.pixel_features.shape[-1], self.image_size, concept), None, None
