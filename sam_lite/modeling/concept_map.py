"""The concept map: which image patches are relevant to which words, once per image (LSeg / OpenSeg style).

The image encoder paints a per-pixel embedding E(x) [B, 384, S/8, S/8] in the text encoder's sentence space. Trained
with a dense softmax over the MiniLM embeddings of every concept name of the training set plus a learned background
embedding, on every labelled pixel of each photo, it learns "this pixel is sky, not grass, not tree, not person".

The image encoder also keeps P(c | x) = softmax_c'(scale * <E(x), e_c'>)[c] per image. For a prompt p, its
similarity to the known concepts picks the concepts it means (:class:`~.priors.ConceptMapPrior`), so "automobile"
reads the map of "car" instead of competing with it: P(p | x) = sum_c w_c(p) P(c | x). That heat map (and the raw
cosine map <E(x), e_p>) becomes prior channels for the image tokens and the pixel embedding, and its statistics vote
on presence. A new prompt on a cached image costs one weighted sum over the concepts.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONCEPT_DIM = 384  # MiniLM's sentence space


@functools.lru_cache(maxsize=8)
def concept_name_embeddings(names: tuple[str, ...]) -> Tensor:
    """Normalised MiniLM sentence embeddings [C, 384] of the concept names (frozen encoder: computed once)."""
    from .text_encoder import minilm_sentence_embeddings

    return minilm_sentence_embeddings(list(names))


def _conv_norm_act(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.GroupNorm(8 if cout % 8 == 0 else 1, cout),
                         nn.GELU())


class ConceptMap(nn.Module):
    """Backbone features (+ the attended patch tokens) -> per-pixel concept embedding at stride 8.

    Inputs: f8 [B,c8,S/8,S/8], f16 [B,c16,S/16,S/16], tokens grid [B,D,S/16,S/16], head [B,c32,S/32,S/32] (the
    classifier's head features). A 1x1 FPN to ``hidden`` channels, two 3x3 convolutions at stride 8, a 1x1 to 384-d,
    L2-normalised.
    """

    def __init__(self, names: list[str], d_model: int, c8: int, c16: int, c32: int, hidden: int = 128,
                 temperature: float = 0.1) -> None:
        super().__init__()
        if not names:
            raise ValueError("the concept map needs a vocabulary of concept names (config.concept_names)")
        self.names = list(names)
        self.temperature = temperature
        self.lateral32 = nn.Conv2d(c32, hidden, 1)
        self.lateral16 = nn.Conv2d(c16, hidden, 1)
        self.tokens16 = nn.Conv2d(d_model, hidden, 1)
        self.lateral8 = nn.Conv2d(c8, hidden, 1)
        self.refine = nn.Sequential(_conv_norm_act(hidden, hidden, 3), _conv_norm_act(hidden, hidden, 3))
        self.out = nn.Conv2d(hidden, CONCEPT_DIM, 1)
        self.background = nn.Parameter(F.normalize(torch.randn(CONCEPT_DIM), dim=0))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
        self.register_buffer("concept_embeddings", concept_name_embeddings(tuple(self.names)).clone(),
                             persistent=False)

    def forward(self, f8: Tensor, f16: Tensor, grid: Tensor, head: Tensor) -> Tensor:
        """-> concept embedding [B, 384, S/8, S/8], unit norm per pixel."""
        up = lambda x, ref: F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa
        p16 = self.lateral16(f16) + self.tokens16(grid) + up(self.lateral32(head), f16)
        p8 = self.lateral8(f8) + up(p16, f8)
        return F.normalize(self.out(self.refine(p8)), dim=1)

    def vocabulary(self) -> Tensor:
        """[C+1, 384]: the concept name embeddings and (last) the learned background."""
        return torch.cat([self.concept_embeddings, F.normalize(self.background, dim=0)[None]])

    def logits(self, embedding: Tensor) -> Tensor:
        """embedding [B,384,h,w] -> logits over the vocabulary [B, C+1, h, w] (background last)."""
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        return scale * torch.einsum("bchw,kc->bkhw", embedding, self.vocabulary().to(embedding.dtype))


class ImagePresence(nn.Module):
    """Image-level presence in the text space: is concept c anywhere in the photo?

    The classifier-head features [B,c32,S/32,S/32] and the attended patch tokens [B,N,D], each average- and
    max-pooled, -> one unit vector v [B, 384] in MiniLM's sentence space. The logit that a concept with sentence
    embedding e is in the image is ``scale * <v, e> + bias``. Trained against every concept a photo labels present
    or absent (on coco_mini v3 the 80 things on every photo, at box level at least: dense image-level supervision a
    prompt-level presence loss gets 4 samples of), it is the linear probe on pooled head features made part of the
    model. A prompt's logit reaches its presence logit with the weight :attr:`vote_weight` (0 at the start, so a
    checkpoint fine-tuned into this module answers as before at step 0).
    """

    # Adam moves a parameter by about the learning rate per step whatever its gradient: the vote is stored divided
    # by this gain, so that it can reach ~1 within a few hundred steps at lr 3e-4 (measured: stored unscaled, it
    # had moved 0.003 after 200 steps)
    VOTE_GAIN = 30.0

    def __init__(self, c_head: int, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * (c_head + d_model), CONCEPT_DIM)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-2.0))  # most concepts are absent from most photos
        self.vote = nn.Parameter(torch.zeros(()))

    @property
    def vote_weight(self) -> Tensor:
        """The weight of the image-level logit in each prompt's presence logit."""
        return self.VOTE_GAIN * self.vote

    @property
    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def forward(self, head: Tensor, tokens: Tensor) -> Tensor:
        """head [B,c32,h,w], tokens [B,N,D] -> v [B, 384], unit norm."""
        pooled = torch.cat([head.float().mean((2, 3)), head.float().amax((2, 3)), tokens.float().mean(1),
                            tokens.float().amax(1)], dim=1)
        return F.normalize(self.proj(pooled.to(self.proj.weight.dtype)), dim=-1)

    def logits(self, v: Tensor, names: Tensor) -> Tensor:
        """v [B, 384], names [C, 384] (unit sentence embeddings) -> [B, C] logits, every concept on every image."""
        return self.scale * (v @ names.to(v.dtype).T) + self.bias

    def prompt_logits(self, v: Tensor, sentence: Tensor) -> Tensor:
        """v [P, 384] (each prompt's image), sentence [P, 384] -> [P]: the logit that prompt p is in its image."""
        return self.scale * (v * sentence.to(v.dtype)).sum(-1) + self.bias


def image_presence_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """logits [B, C]; labels [B, C]: 1 present, 0 known absent, -1 unknown (ignored) -> mean BCE over the known."""
    known = labels >= 0
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float()[known], labels.float()[known])


def concept_loss(logits: Tensor, labels: Tensor, allowed: Tensor) -> Tensor:
    """Dense softmax with partial labels.

    logits [B, C+1, h, w] (background last); labels [B, h, w]: a concept index where the pixel is annotated, -1 where
    it is not (its concept is then one of ``allowed``), -2 to ignore (padding); allowed [B, C+1] bool: the concepts an
    unannotated pixel may belong to (unlabelled or not exhaustively labelled categories, crowd regions, background).
    An annotated pixel gets the usual cross-entropy; an unannotated one -log sum_{c in allowed} p(c) (the likelihood
    of "one of the concepts this photo does not label"), so a person-only photo teaches "not person" off the people
    and nothing about cars. Mean over the pixels that are not ignored.
    """
    logits = logits.float()
    lse = logits.logsumexp(1)  # [B, h, w]
    annotated = labels >= 0
    picked = logits.gather(1, labels.clamp(min=0)[:, None])[:, 0]
    masked = logits.masked_fill(~allowed[:, :, None, None], float("-inf"))
    lse_allowed = masked.logsumexp(1)
    unannotated = labels == -1
    loss = torch.where(annotated, lse - picked, torch.where(unannotated, lse - lse_allowed, torch.zeros_like(lse)))
    n = (annotated | unannotated).sum()
    return loss.sum() / n.clamp(min=1)
