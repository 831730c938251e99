"""ImageEncoder: pretrained EfficientNet-Lite0 (or Lite2) conv stages -> stride-16 patch tokens -> self-attention over patches.

Every patch attends to every other patch: Q from a patch, K and V from all patches. A stride-4 pixel embedding (an FPN
over the conv features and the attended tokens) keeps boundaries sharp for the mask head, and the concept map (a
stride-8 embedding in the text encoder's sentence space, :mod:`.concept_map`) says which patches are relevant to
which words.
"""

from __future__ import annotations

import weakref
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SamLiteConfig
from ..structures import ImageEmbedding
from .attention import Attention, FeedForward, sine_position_encoding_2d
from .backbone import (BN_EPS, LITE_STAGES, Conv2dSame, EfficientNetLite, FoldedEfficientNetLite, MBConvBlock,
                       fold_batchnorm)

# the backbone classes lived here before sam_lite/modeling/backbone.py; importing them from here keeps working
__all__ = ["BN_EPS", "LITE_STAGES", "Conv2dSame", "EfficientNetLite", "MBConvBlock", "EncoderLayer", "ImageEncoder",
           "attention_weights", "weights_key", "input_version"]
from .concept_map import ConceptMap, ImagePresence

class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: self-attention among patches (positions added to Q and K), then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, pos: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x [B, N, D], pos [N, D] -> (x [B, N, D], (q, k) each [B, H, N, Dh]). Attention runs in
        ``F.scaled_dot_product_attention``; q and k are returned so that the weights can be formed on demand
        (:func:`attention_weights`) without running the layer again."""
        h = self.norm1(x)
        qk = h + pos
        attn = self.self_attn
        q, k, v = attn._heads(attn.q_proj(qk)), attn._heads(attn.k_proj(qk)), attn._heads(attn.v_proj(h))
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if self.training else 0.0)
        b, _, n, _ = a.shape
        x = x + attn.out_proj(a.transpose(1, 2).reshape(b, n, attn.num_heads * attn.head_dim))
        return x + self.mlp(self.norm2(x)), (q, k)


def attention_weights(q: Tensor, k: Tensor) -> Tensor:
    """q, k [B, H, N, Dh] -> softmax(q k^T / sqrt(Dh)) [B, H, N, N] (each row sums to 1; before dropout)."""
    return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)


def input_version(x: Tensor) -> tuple:
    """What changes when ``x`` is written to: its version counter, or for an inference tensor (which has none) its
    storage and a checksum of its values."""
    if x.is_inference():
        return x.data_ptr(), tuple(x.shape), float(x.double().sum()), float(x.abs().double().sum())
    return x.data_ptr(), tuple(x.shape), x._version


def weights_key(module: nn.Module) -> tuple:
    """Identity of ``module``'s current weights: changes on load_state_dict, an optimiser step or ``.to()``."""
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))


class ImageEncoder(nn.Module):
    """Pixels [B,3,S,S] (scaled to [-1,1]) -> tokens [B, (S/16)^2, D], pixel embedding [B, mask_dim, S/4, S/4]."""

    def __init__(self, config: SamLiteConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.backbone = EfficientNetLite(config.backbone).to(memory_format=torch.channels_last)
        ch = self.backbone.channels
        self.patch_proj = nn.Sequential(nn.Conv2d(ch["f16"], d, 1), nn.GroupNorm(1, d))
        self.layers = nn.ModuleList(EncoderLayer(d, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.encoder_layers))
        self.norm = nn.LayerNorm(d)
        # FPN to stride 4 for the pixel embedding, at mask_dim channels (the stride-4 convolutions dominate cost)
        m = config.mask_dim
        groups = 8 if m % 8 == 0 else 1
        self.top16 = nn.Conv2d(d, m, 1)
        self.lateral8 = nn.Conv2d(ch["f8"], m, 1)
        self.lateral4 = nn.Conv2d(ch["f4"], m, 1)
        self.smooth8 = nn.Sequential(nn.Conv2d(m, m, 3, padding=1), nn.GroupNorm(groups, m), nn.GELU())
        self.smooth4 = nn.Sequential(nn.Conv2d(m, m, 3, padding=1), nn.GroupNorm(groups, m), nn.GELU())
        self.pixel_proj = nn.Conv2d(m, m, 1)
        self.concept_map = (ConceptMap(config.concept_names, d, ch["f8"], ch["f16"], ch["head"],
                                       config.concept_hidden, config.prior_temperature)
                            if config.concept_map else None)
        self.image_presence = ImagePresence(ch["head"], d) if config.image_presence else None

    def load_backbone_weights(self) -> None:
        self.backbone.load_state_dict(self.backbone.load_pretrained_state_dict(), strict=True)

    def frozen_backbone_prefixes(self) -> list[str]:
        """Names (relative to this module) of backbone parts that stay at the packaged ImageNet weights."""
        lo, hi = self.config.backbone_trainable_from, self.config.backbone_trainable_to
        names = ["backbone._conv_stem", "backbone._bn0"] if lo > 0 or hi == 0 else []
        names += [f"backbone._blocks.{i}" for i, s in enumerate(self.backbone.stage_of_block) if not lo <= s < hi]
        names += ["backbone._conv_head", "backbone._bn1", "backbone._fc"]  # the classifier is never trained
        return names

    def freeze_backbone(self) -> None:
        frozen = tuple(p + "." for p in self.frozen_backbone_prefixes())
        for name, p in self.named_parameters():
            if name.startswith(frozen):
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode)
        # BatchNorm statistics stay at ImageNet values: batches here are small and few.
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for k in ("_folded", "_last"):  # caches (a weak reference among them): rebuilt on use, never copied or saved
            state.pop(k, None)
        return state

    def folded_backbone(self) -> FoldedEfficientNetLite:
        """The backbone with its BatchNorms folded (:func:`.backbone.fold_batchnorm`), built on first use and rebuilt
        when a backbone weight changes. Not a submodule: no state-dict keys, not trained."""
        key = weights_key(self.backbone)
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_folded"] = (key, fold_batchnorm(self.backbone))
        return cached[1]

    def _backbone(self, pixel_values: Tensor, with_classifier: bool, grad: bool) -> dict[str, Tensor]:
        # The conv stem runs in fp32 and channels-last: on CPU that is faster than NCHW, and bf16 autocast makes
        # depthwise convolutions ~20x slower. No graph is kept for the frozen stages; without a graph the folded
        # copy runs (~25% faster, same features within ~1e-4).
        with torch.autocast("cpu", enabled=False), torch.set_grad_enabled(grad):
            x = pixel_values.float().contiguous(memory_format=torch.channels_last)
            net = self.backbone if grad else self.folded_backbone()
            return net.forward_features(x, with_classifier=with_classifier)

    def forward(self, pixel_values: Tensor, output_attentions: bool = False) -> ImageEmbedding:
        """pixel_values [B,3,S,S] scaled to [-1, 1] -> :class:`ImageEmbedding`: tokens [B,N,D] (N = h*w, stride 16),
        pos [N,D], grid (h, w), pixel_features [B,mask_dim,S/4,S/4] (FPN before the mask projection), class_logits
        [B,1000,S/32,S/32] or None, the concept map's embedding and probabilities, the image-level concept vector
        [B,384] (``image_presence``), encoder attentions [B,H,N,N] per layer when asked for.

        Asking for the attentions costs no second pass: the layers always keep Q and K, and without gradients the
        last call is remembered (the input tensor by identity and version or checksum, and the weights' identity), so
        ``forward(same_pixel_values, output_attentions=True)`` after ``forward(same_pixel_values)`` (what the
        predictor does when a prompt asks for attention on a cached image) only forms softmax(Q K^T / sqrt(d)) from
        them. A repeated call without ``output_attentions`` runs the encoder as before."""
        remember = not torch.is_grad_enabled() and not self.training
        if remember:
            key = (weights_key(self), input_version(pixel_values))
            last = self.__dict__.get("_last")
            if output_attentions and last is not None and last[0]() is pixel_values and last[1] == key:
                return replace(last[2], encoder_attentions=[attention_weights(q, k) for q, k in last[3]])
        embedding, qks = self._encode(pixel_values)
        if remember:
            self.__dict__["_last"] = (weakref.ref(pixel_values), key, embedding, qks)
        return replace(embedding, encoder_attentions=[attention_weights(q, k) for q, k in qks]) \
            if output_attentions else embedding

    def _encode(self, pixel_values: Tensor) -> tuple[ImageEmbedding, list[tuple[Tensor, Tensor]]]:
        """The encoder pass: the embedding (no attentions) and each layer's (q, k) [B, H, N, Dh]."""
        trainable = self.config.backbone_trainable_from < self.config.backbone_trainable_to
        use_prior = self.config.use_imagenet_prior
        # (image_presence needs the concept map, so the classifier head is computed whenever it exists)
        feats = self._backbone(pixel_values, with_classifier=use_prior or self.concept_map is not None,
                               grad=torch.is_grad_enabled() and trainable)
        x = self.patch_proj(feats["f16"])
        b, d, h, w = x.shape
        pos = sine_position_encoding_2d(h, w, d, device=x.device, dtype=x.dtype)
        tokens = x.flatten(2).transpose(1, 2)
        qks = []
        for layer in self.layers:
            tokens, qk = layer(tokens, pos)
            qks.append(qk)
        tokens = self.norm(tokens)
        grid = tokens.transpose(1, 2).reshape(b, d, h, w)
        p8 = self.smooth8(F.interpolate(self.top16(grid), size=feats["f8"].shape[-2:], mode="bilinear", align_corners=False)
                          + self.lateral8(feats["f8"]))
        p4 = self.smooth4(F.interpolate(p8, size=feats["f4"].shape[-2:], mode="bilinear", align_corners=False)
                          + self.lateral4(feats["f4"]))
        concept = probs = None
        if self.concept_map is not None:
            concept = self.concept_map(feats["f8"], feats["f16"], grid, feats["head"])
            # P(concept | pixel) once per image; read detached by the prompt side (the embedding is trained by its own
            # dense loss), the gradient still reaches the shared background embedding and temperature
            probs = self.concept_map.logits(concept.detach().float()).softmax(1)[:, :-1]
        image_concept = self.image_presence(feats["head"], tokens) if self.image_presence is not None else None
        embedding = ImageEmbedding(tokens=tokens, pos=pos, grid=(h, w), pixel_features=self.pixel_proj(p4),
                                   class_logits=feats.get("class_logits") if use_prior else None,
                                   concept_embedding=concept, concept_probs=probs, image_concept=image_concept)
        return embedding, qks
