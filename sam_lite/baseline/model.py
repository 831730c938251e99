"""A CLIPSeg-style baseline on the same backbones as sam-lite: one semantic mask per (image, prompt), no instances.

Frozen EfficientNet-Lite0 (ImageNet weights, BatchNorm in eval mode) gives stride 4/8/16 features; the frozen
all-MiniLM-L6-v2 sentence embedding of the prompt modulates the stride-16 and stride-8 features by FiLM
(``x * (1 + gamma) + beta``, gamma/beta from a linear layer, initialised to the identity); a small conv decoder
upsamples to stride 4 and outputs one mask logit map. A presence logit comes from the pooled FiLM'd stride-16
features. :class:`~sam_lite.baseline.predictor.BaselinePredictor` turns the semantic mask into instances by
connected components, so the baseline is evaluated with the same instance metrics as sam-lite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SamLiteConfig
from ..modeling.image_encoder import EfficientNetLite
from ..modeling.pretrained import PreTrainedModel
from ..modeling.text_encoder import TextEncoder
from .config import ClipSegBaselineConfig


def _norm(d: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if d % 8 == 0 else 1, d)


def _conv_block(cin: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, d, 3, padding=1), _norm(d), nn.GELU())


class FiLM(nn.Module):
    """Feature-wise linear modulation by the sentence embedding: x * (1 + gamma(s)) + beta(s), identity at init."""

    def __init__(self, text_dim: int, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * d)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, sentence: Tensor) -> Tensor:
        gamma, beta = self.proj(sentence.to(x.dtype)).chunk(2, dim=-1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class ClipSegBaseline(PreTrainedModel):
    """``forward(pixel_values [B,3,S,S], prompts list[str] of length B)`` ->
    ``{"semantic_logits": [B, S/4, S/4], "presence_logits": [B]}``."""

    config_class, model_type, backbone_prefix = ClipSegBaselineConfig, "clipseg_baseline", "backbone."

    def __init__(self, config: ClipSegBaselineConfig | None = None, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = config = config or ClipSegBaselineConfig()
        self.register_pixel_statistics()
        d, t = config.d_model, config.text_dim
        self.backbone = EfficientNetLite("lite0")
        if load_pretrained:
            self.backbone.load_state_dict(self.backbone.load_pretrained_state_dict(), strict=True)
        self.backbone.to(memory_format=torch.channels_last)  # 2.5x faster depthwise convs on CPU, as in sam-lite
        self.backbone.requires_grad_(False)
        # the text encoder only reads max_text_tokens / freeze_text_encoder from its config
        self.text_encoder = TextEncoder(SamLiteConfig(max_text_tokens=config.max_text_tokens, freeze_text_encoder=True))
        self.text_mlp = nn.Sequential(nn.Linear(t, t), nn.GELU(), nn.Linear(t, t))
        self.proj16 = nn.Sequential(nn.Conv2d(112, d, 1), _norm(d))
        self.proj8 = nn.Sequential(nn.Conv2d(40, d, 1), _norm(d))
        # stride 4 runs at a reduced width (CLIPSeg's reduce_dim): at full width it cost ~80 % of a training step
        d4 = config.d_model_stride4
        self.proj4 = nn.Sequential(nn.Conv2d(24, d4, 1), _norm(d4))
        self.reduce8 = nn.Conv2d(d, d4, 1)
        self.film16 = FiLM(t, d)
        self.film8 = FiLM(t, d)
        self.block16 = _conv_block(d, d)
        self.block8 = _conv_block(d, d)
        self.block4 = nn.Sequential(_conv_block(d4, d4), _conv_block(d4, d4))
        self.mask_out = nn.Conv2d(d4, 1, 1)
        self.presence_head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))
        nn.init.constant_(self.mask_out.bias, -2.0)  # start close to "nothing here"
        self.train()

    # ---------------------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "ClipSegBaseline":
        super().train(mode)
        self.backbone.eval()  # frozen backbone: BatchNorm keeps its ImageNet statistics
        self.text_encoder.train(False)
        return self

    def encode_image(self, pixel_values: Tensor) -> dict[str, Tensor]:
        """pixel_values [B,3,S,S] in [-1, 1] -> backbone features f4, f8, f16 (prompt independent, cacheable)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be [B, 3, S, S], got {tuple(pixel_values.shape)}")
        with torch.no_grad():
            x = pixel_values.float().contiguous(memory_format=torch.channels_last)
            return {k: v.contiguous() for k, v in self.backbone.forward_features(x, with_classifier=False).items()}

    def encode_text(self, prompts: list[str]) -> Tensor:
        """P prompts -> normalised MiniLM sentence embeddings [P, 384] (frozen, cached by the text encoder)."""
        return self.text_encoder(prompts)["sentence"]

    def decode(self, features: dict[str, Tensor], sentence: Tensor, image_index: Tensor | None = None) -> dict:
        """Pair prompt i with image ``image_index[i]`` (default: i, or 0 for one image) and predict."""
        p, n_img = sentence.shape[0], features["f16"].shape[0]
        if image_index is None:
            if n_img not in (p, 1):
                raise ValueError(f"{p} prompts cannot be paired with {n_img} images without an image_index")
            image_index = (torch.arange(p, device=sentence.device) if n_img == p
                           else torch.zeros(p, dtype=torch.long, device=sentence.device))
        f4, f8, f16 = (features[k][image_index] for k in ("f4", "f8", "f16"))
        s = sentence.to(f16.dtype)
        s = s + self.text_mlp(s)
        x16 = self.film16(self.proj16(f16), s)
        pooled = torch.cat([x16.mean((2, 3)), x16.amax((2, 3))], dim=1)
        presence = self.presence_head(pooled)[:, 0]
        x16 = self.block16(x16)
        x8 = self.film8(self.proj8(f8), s) + F.interpolate(x16, size=f8.shape[-2:], mode="bilinear",
                                                            align_corners=False)
        x8 = self.block8(x8)
        x4 = self.proj4(f4) + F.interpolate(self.reduce8(x8), size=f4.shape[-2:], mode="bilinear",
                                            align_corners=False)
        logits = self.mask_out(self.block4(x4))[:, 0]
        return {"semantic_logits": logits, "presence_logits": presence}

    def forward(self, pixel_values: Tensor, prompts: list[str], image_index: Tensor | None = None) -> dict:
        if isinstance(prompts, str):
            prompts = [prompts]
        if image_index is None and len(prompts) != pixel_values.shape[0]:
            raise ValueError(f"got {pixel_values.shape[0]} images but {len(prompts)} prompts: give one prompt per "
                             "image (or an image_index)")
        return self.decode(self.encode_image(pixel_values), self.encode_text(list(prompts)), image_index)

    # ---------------------------------------------------------------------------------------------------------
    def loss(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """outputs of :meth:`forward`; targets: one dict per (image, prompt) with ``"masks"`` bool [N, h, w] at the
        output resolution (N = 0 for an absent concept). The instance masks are united into one semantic target.

        Returns ``loss_mask_bce`` (per-pixel BCE over all samples), ``loss_mask_dice`` (dice on the samples whose
        concept is present), ``loss_presence`` (BCE of the presence logit against N > 0) and ``loss`` (weighted sum).
        """
        logits, presence = outputs["semantic_logits"], outputs["presence_logits"]
        b, h, w = logits.shape
        if len(targets) != b:
            raise ValueError(f"{len(targets)} targets for a batch of {b}")
        union, present = [], []
        for i, t in enumerate(targets):
            m = torch.as_tensor(t["masks"], device=logits.device)
            if m.ndim == 2:
                m = m[None]
            if m.ndim != 3 or (m.shape[0] and tuple(m.shape[-2:]) != (h, w)):
                raise ValueError(f"targets[{i}]['masks'] must be [N, {h}, {w}] (the output resolution), "
                                 f"got {tuple(m.shape)}")
            m = m.bool() if m.dtype == torch.bool else m > 0.5
            union.append(m.any(0) if m.shape[0] else torch.zeros((h, w), dtype=torch.bool, device=logits.device))
            present.append(m.shape[0] > 0)
        target = torch.stack(union).to(logits.dtype)
        present_t = torch.tensor(present, dtype=logits.dtype, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        prob = logits.sigmoid().flatten(1)
        tflat = target.flatten(1)
        dice_all = 1 - (2 * (prob * tflat).sum(1) + 1) / (prob.sum(1) + tflat.sum(1) + 1)
        dice = (dice_all * present_t).sum() / present_t.sum().clamp(min=1)
        pres = F.binary_cross_entropy_with_logits(presence, present_t)
        c = self.config
        total = c.bce_weight * bce + c.dice_weight * dice + c.presence_weight * pres
        return {"loss": total, "loss_mask_bce": bce, "loss_mask_dice": dice, "loss_presence": pres}

    @staticmethod
    def packaged_prefixes() -> list[str]:
        """State-dict prefixes of the frozen pretrained backbones (never written to checkpoints)."""
        return ["backbone.", "text_encoder.bert."]
