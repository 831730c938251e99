"""A CLIPSeg-style baseline on the same backbones as sam-lite: one semantic mask per (image, prompt), no instances.

Frozen EfficientNet-Lite0 (ImageNet weights, BatchNorm in eval mode) gives stride 4/8/16 features; the frozen
all-MiniLM-L6-v2 sentence embedding of the prompt modulates the stride-16 and stride-8 features by FiLM
(``x * (1 + gamma) + beta``, gamma/beta from a linear layer, initialised to the identity); a small conv decoder
upsamples to stride 4 and outputs one mask logit map. A presence logit comes from the pooled FiLM'd stride-16
features. :class:`BaselinePredictor` turns the semantic mask into instances by connected components, so the baseline
can be evaluated with the same instance metrics as sam-lite.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .image_encoder import EfficientNetLite

MODEL_TYPE = "clipseg_baseline"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class ClipSegBaselineConfig:
    """Configuration of :class:`ClipSegBaseline`. Masks come out at ``image_size // 4`` per side."""

    image_size: int = 256
    d_model: int = 128  # width at stride 16 and 8 (CLIPSeg decodes at 64)
    d_model_stride4: int = 64  # width of the stride-4 (mask resolution) blocks
    text_dim: int = 384
    max_text_tokens: int = 24
    # loss weights
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    presence_weight: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"invalid ClipSegBaselineConfig: {msg}")

        need(isinstance(self.image_size, int) and self.image_size >= 32 and self.image_size % 32 == 0,
             f"image_size must be a multiple of 32 and >= 32, got {self.image_size!r}")
        for name in ("d_model", "d_model_stride4"):
            v = getattr(self, name)
            need(isinstance(v, int) and v > 0, f"{name} must be a positive int, got {v!r}")
        need(self.text_dim == 384, f"text_dim must be 384 (all-MiniLM-L6-v2), got {self.text_dim!r}")
        need(isinstance(self.max_text_tokens, int) and self.max_text_tokens >= 1,
             f"max_text_tokens must be an int >= 1, got {self.max_text_tokens!r}")
        for name in ("bce_weight", "dice_weight", "presence_weight"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and v >= 0, f"{name} must be a number >= 0, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipSegBaselineConfig":
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(f"config has model_type {model_type!r}, expected {MODEL_TYPE!r}"
                             + (" (load it with SamLiteModel / SamLitePredictor)" if model_type == "sam_lite" else ""))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"model_type", "sam_lite_version"})
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"model_type": MODEL_TYPE, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ClipSegBaselineConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        try:
            return cls.from_dict(d)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from e


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


class ClipSegBaseline(nn.Module):
    """``forward(pixel_values [B,3,S,S], prompts list[str] of length B)`` ->
    ``{"semantic_logits": [B, S/4, S/4], "presence_logits": [B]}``."""

    def __init__(self, config: ClipSegBaselineConfig | None = None, load_pretrained: bool = True) -> None:
        super().__init__()
        from ..config import SamLiteConfig
        from .text_encoder import TextEncoder

        self.config = config = config or ClipSegBaselineConfig()
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
            image_index = torch.arange(p) if n_img == p else torch.zeros(p, dtype=torch.long)
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

    # ---------------------------------------------------------------------------------------------------------
    @staticmethod
    def packaged_prefixes() -> list[str]:
        """State-dict prefixes of the frozen pretrained backbones (never written to checkpoints)."""
        return ["backbone.", "text_encoder.bert."]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        skip = tuple(self.packaged_prefixes())
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``config.json`` (``"model_type": "clipseg_baseline"``) and ``model.safetensors`` without the frozen
        backbone weights, atomically."""
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        tmp_w, tmp_c = out / (WEIGHTS_NAME + ".tmp"), out / (CONFIG_NAME + ".tmp")
        save_file(sd, str(tmp_w), metadata={"format": "pt", "model_type": MODEL_TYPE})
        self.config.save(tmp_c)
        tmp_w.replace(out / WEIGHTS_NAME)
        tmp_c.replace(out / CONFIG_NAME)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> "ClipSegBaseline":
        """Load a directory written by :meth:`save_pretrained`; errors name the file and what is wrong."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {directory}")
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        config = ClipSegBaselineConfig.load(cfg_path)
        if not w_path.is_file():
            pickles = sorted(p.name for p in directory.glob("*") if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"})
            hint = f" (found {pickles}: pickle files are never loaded, only safetensors)" if pickles else ""
            raise FileNotFoundError(f"weights file not found: {w_path}{hint}")
        try:
            state = load_file(str(w_path), device=map_location)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"{w_path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
        model = cls(config)
        expected = model.trainable_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{w_path} does not match {cfg_path}: {len(missing)} missing tensors {missing[:5]}, "
                             f"{len(unexpected)} unexpected tensors {unexpected[:5]}")
        for k, v in state.items():
            if v.shape != expected[k].shape:
                raise ValueError(f"{w_path} does not match {cfg_path}: tensor {k} has shape {tuple(v.shape)}, "
                                 f"the config needs {tuple(expected[k].shape)}")
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
        return model.eval()


def is_baseline_checkpoint(directory: str | Path) -> bool:
    """True when ``directory/config.json`` says ``"model_type": "clipseg_baseline"``."""
    try:
        return json.loads((Path(directory) / CONFIG_NAME).read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


class BaselinePredictor:
    """The :class:`sam_lite.SamLitePredictor` interface for the baseline: ``set_image`` once, ``predict`` prompts.

    Instances are the connected components (8-connected) of the semantic mask ``sigmoid(logit) >= mask_threshold``
    at the original image size; each scores ``presence x mean probability inside it``. Components smaller than
    ``min_area_fraction`` of the image are dropped, then those scoring below ``score_threshold``.
    """

    def __init__(self, model: ClipSegBaseline, processor=None) -> None:
        from ..processing import SamLiteProcessor

        self.model = model.eval()
        self.processor = processor or SamLiteProcessor(model.config.image_size)
        self.reset_image()

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "BaselinePredictor":
        return cls(ClipSegBaseline.from_pretrained(directory))

    def reset_image(self) -> None:
        self._features: dict | None = None
        self._meta = None
        self._image = None

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def image(self):
        return self._image

    @torch.inference_mode()
    def set_image(self, image) -> None:
        """image: PIL image, HxWx3 uint8 array or a file path. Computes and caches the backbone features."""
        from ..processing import load_image

        pil = load_image(image)
        pixel_values, meta = self.processor.preprocess(pil)
        self._features = self.model.encode_image(pixel_values)
        self._meta, self._image = meta, pil

    @torch.inference_mode()
    def predict(self, prompt: str | list[str], score_threshold: float = 0.5, mask_threshold: float = 0.5,
                min_area_fraction: float = 0.001, max_instances: int | None = None):
        """One string -> one :class:`sam_lite.PredictionResult`; a list -> a list of them."""
        from scipy import ndimage

        from ..predictor import PredictionResult
        from ..processing import boxes_from_masks

        if not self.is_image_set:
            raise ValueError("no image set: call set_image(image) before predict(prompt)")
        single = isinstance(prompt, str)
        if not single and not isinstance(prompt, (list, tuple)):
            raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        sentence = self.model.encode_text(prompts)
        out = self.model.decode(self._features, sentence, torch.zeros(len(prompts), dtype=torch.long))
        presence = out["presence_logits"].float().sigmoid()
        probs = self.processor.postprocess_masks(out["semantic_logits"].float(), self._meta).sigmoid()  # [P, H, W]
        h, w = self._meta.original_size
        min_area = min_area_fraction * h * w
        structure = np.ones((3, 3), dtype=bool)
        results = []
        for i, p in enumerate(prompts):
            prob = probs[i].numpy()
            labels, n = ndimage.label(prob >= mask_threshold, structure=structure)
            masks = torch.zeros((0, h, w), dtype=torch.bool)
            scores = torch.zeros(0)
            if n:
                ids = np.arange(1, n + 1)
                areas = ndimage.sum_labels(np.ones_like(prob), labels, ids)
                means = ndimage.mean(prob, labels, ids)
                comp_scores = float(presence[i]) * np.asarray(means)
                keep = (areas >= min_area) & (comp_scores >= score_threshold)
                ids, comp_scores = ids[keep], comp_scores[keep]
                order = np.argsort(-comp_scores, kind="stable")
                if max_instances is not None:
                    order = order[:max_instances]
                ids, comp_scores = ids[order], comp_scores[order]
                if len(ids):
                    lab = torch.from_numpy(labels)
                    masks = lab[None] == torch.from_numpy(ids)[:, None, None]
                    scores = torch.from_numpy(comp_scores).float()
            boxes = boxes_from_masks(masks, torch.zeros((masks.shape[0], 4)))
            results.append(PredictionResult(prompt=" ".join(p.split()), masks=masks, scores=scores, boxes=boxes,
                                            presence=float(presence[i])))
        return results[0] if single else results
