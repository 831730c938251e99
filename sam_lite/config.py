"""One dataclass holds every hyper-parameter of the model; presets name the useful sizes."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# The 133 COCO panoptic concepts (80 things, 53 stuff) as prompts, in category-id order: the concept map's vocabulary
# when a config asks for the map without naming one (training replaces it with the dataset's own categories).
COCO_PANOPTIC_CONCEPTS: tuple[str, ...] = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
    'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed',
    'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven',
    'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush', 'banner', 'blanket', 'bridge', 'cardboard', 'counter', 'curtain', 'door', 'floor wood', 'flower',
    'fruit', 'gravel', 'house', 'light', 'mirror', 'net', 'pillow', 'platform', 'playingfield', 'railroad', 'river',
    'road', 'roof', 'sand', 'sea', 'shelf', 'snow', 'stairs', 'tent', 'towel', 'wall brick', 'wall stone',
    'wall tile', 'wall wood', 'water', 'window blind', 'window', 'tree', 'fence', 'ceiling', 'sky', 'cabinet',
    'table', 'floor', 'pavement', 'mountain', 'grass', 'dirt', 'paper', 'food', 'building', 'rock', 'wall', 'rug',
)


class PretrainedConfig:
    """Serialisation shared by the configs of every model family: ``config.json`` is the dataclass's fields plus
    ``"model_type"``; unknown fields and another family's config are clear errors naming the file."""

    model_type: ClassVar[str]
    ignored_fields: ClassVar[tuple[str, ...]] = ("model_type", "sam_lite_version")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def check_legacy(cls, d: dict[str, Any]) -> None:
        """Raise ``ValueError`` for fields of older versions that cannot be honoured (default: none)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"config has model_type {model_type!r}, expected {cls.model_type!r} (load a checkpoint of "
                             f"any type with sam_lite.registry.load_predictor)")
        cls.check_legacy(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - set(cls.ignored_fields))
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:  # pragma: no cover - defensive
            raise ValueError(f"invalid config: {e}") from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"model_type": self.model_type, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path):
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


# Options measured and rejected (figures in docs/experiments.md), removed from the code: an old config.json may still
# name them at the value they always had.
REMOVED_OPTIONS: dict[str, Any] = {"fusion_self_attention": False, "fused_pixel_embedding": False,
                                   "mask_rescoring": False, "concept_rescoring": False, "instance_inference": "queries",
                                   "prior_image_size": 0}
INFERENCE_FIELDS = ("score_threshold", "presence_threshold")  # in config.json before inference_config.json existed
REMOVED_OPTIONS_NAMES = (*REMOVED_OPTIONS, *INFERENCE_FIELDS)


@dataclass
class SamLiteConfig(PretrainedConfig):
    """Configuration of :class:`sam_lite.SamLiteModel`.

    Image side: ``image_size`` px, EfficientNet-Lite0 gives stride-16 tokens (``image_size // 16`` per side) and a
    stride-4 pixel embedding for masks. Text side: all-MiniLM-L6-v2 per-token states, up to ``max_text_tokens``.
    """

    # image encoder
    image_size: int = 256
    # "lite0" or "lite2" (EfficientNet-Lite2: wider and deeper, about 2x Lite0's cost at the same size)
    backbone: str = "lite0"
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: float = 4.0
    encoder_layers: int = 2
    # EfficientNet-Lite0 has 7 stages (0..6; the conv stem counts as stage 0). Stages from <= s < to are fine-tuned
    # (from == to: the whole backbone is frozen). Stages 5-6 only feed the ImageNet prior (classifier never trained).
    backbone_trainable_from: int = 7
    backbone_trainable_to: int = 7
    mask_dim: int = 64
    # ImageNet prior: Lite0's own classifier applied per location, weighted by the prompt's similarity to class names
    use_imagenet_prior: bool = True
    prior_temperature: float = 0.1
    # concept map: a stride-8 per-pixel embedding in MiniLM's sentence space, trained with a dense softmax over the
    # embeddings of ``concept_names`` (+ background); a prompt's heat map on it is a prior for tokens, pixels and
    # presence (see modeling/concept_map.py). Training fills ``concept_names`` from the dataset's categories.
    concept_map: bool = False
    concept_names: list[str] = field(default_factory=list)
    concept_hidden: int = 128
    # image-level presence in the text space (needs the concept map's vocabulary to train): the pooled image as one
    # vector in MiniLM's sentence space, trained against every concept the photo labels present or absent; each
    # prompt's logit <v, e_prompt> votes on its presence (modeling/concept_map.py, ImagePresence)
    image_presence: bool = False
    # text encoder
    text_dim: int = 384
    max_text_tokens: int = 24
    freeze_text_encoder: bool = True
    # fusion: image tokens cross-attend to the prompt tokens
    fusion_layers: int = 1
    # query decoder
    num_queries: int = 32
    decoder_layers: int = 3
    dropout: float = 0.0
    # visual prompts (SAM style): points, a box and exemplar boxes become prompt tokens (GeometricPromptEncoder)
    # that join the words as K/V of the fusion layer and the decoder, plus a per-query predicted-IoU head. False:
    # the model and its state dict are exactly those of a text-only model
    geometric_prompts: bool = False
    # with geometric_prompts: the visual prompt also drawn as dense maps (clicks, box, exemplars, "like this"
    # similarity on the concept map) added to the image tokens and pixel embedding (modeling/geometry_prior.py)
    geometry_prior: bool = False

    model_type: ClassVar[str] = "sam_lite"
    ignored_fields: ClassVar[tuple[str, ...]] = ("model_type", "sam_lite_version", *REMOVED_OPTIONS_NAMES)

    def __post_init__(self) -> None:
        self.concept_names = list(self.concept_names) if isinstance(self.concept_names, (list, tuple)) \
            else self.concept_names
        if self.concept_map is True and self.concept_names == []:
            self.concept_names = list(COCO_PANOPTIC_CONCEPTS)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field that cannot work."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"invalid SamLiteConfig: {msg}")

        need(isinstance(self.image_size, int) and self.image_size >= 32 and self.image_size % 32 == 0,
             f"image_size must be a multiple of 32 and >= 32, got {self.image_size!r}")
        need(isinstance(self.d_model, int) and self.d_model > 0, f"d_model must be a positive int, got {self.d_model!r}")
        need(isinstance(self.num_heads, int) and self.num_heads > 0 and self.d_model % self.num_heads == 0,
             f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        for name in ("encoder_layers", "fusion_layers"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 0, f"{name} must be an int >= 0, got {v!r}")
        for name in ("decoder_layers", "num_queries", "mask_dim", "max_text_tokens"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 1, f"{name} must be an int >= 1, got {v!r}")
        need(isinstance(self.backbone_trainable_from, int) and 0 <= self.backbone_trainable_from <= 7,
             f"backbone_trainable_from must be in 0..7, got {self.backbone_trainable_from!r}")
        need(isinstance(self.backbone_trainable_to, int)
             and self.backbone_trainable_from <= self.backbone_trainable_to <= 7,
             f"backbone_trainable_to must be in backbone_trainable_from..7, got {self.backbone_trainable_to!r}")
        need(self.backbone in ("lite0", "lite2"), f"backbone must be 'lite0' or 'lite2', got {self.backbone!r}")
        need(isinstance(self.concept_names, (list, tuple)) and all(isinstance(n, str) and n.strip()
                                                                  for n in self.concept_names),
             "concept_names must be a list of non-empty strings")
        need(len(set(self.concept_names)) == len(self.concept_names), "concept_names must not repeat a name")
        need(not self.concept_map or len(self.concept_names) >= 1,
             "concept_map needs concept_names (training fills them from the dataset's categories)")
        need(isinstance(self.concept_hidden, int) and self.concept_hidden >= 8,
             f"concept_hidden must be an int >= 8, got {self.concept_hidden!r}")
        need(self.text_dim == 384, f"text_dim must be 384 (all-MiniLM-L6-v2), got {self.text_dim!r}")
        need(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("use_imagenet_prior", "freeze_text_encoder", "concept_map", "image_presence",
                     "geometric_prompts", "geometry_prior"):
            need(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        need(not self.geometry_prior or self.geometric_prompts, "geometry_prior needs geometric_prompts")
        need(not self.image_presence or self.concept_map, "image_presence needs concept_map (its vocabulary)")
        need(self.prior_temperature > 0, f"prior_temperature must be > 0, got {self.prior_temperature!r}")

    # --- presets and (de)serialisation -------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "SamLiteConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown config preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def check_legacy(cls, d: dict[str, Any]) -> None:
        """Options that were measured and removed (docs/experiments.md) are accepted at the value they always had;
        inference fields (thresholds) belong to :class:`InferenceConfig` (``InferenceConfig.load`` reads them from an
        old config.json)."""
        for name, default in REMOVED_OPTIONS.items():
            if name in d and d[name] != default:
                raise ValueError(f"config option {name}={d[name]!r} was measured, rejected and removed (see "
                                 f"docs/experiments.md); only its old default {default!r} is accepted")


INFERENCE_CONFIG_NAME = "inference_config.json"


# what a score calibration may read of a query (computed by :func:`sam_lite.postprocessing.score_features`)
SCORE_FEATURES = ("score", "match", "presence", "mask_confidence", "predicted_iou", "mask_area")


def _check_score_calibration(c) -> dict | None:
    """A score calibration as stored -> {"features", "weights", "bias"} (the older Platt pair [a, b] included), or
    ValueError. The score must rise with the match logit (the weight of "score" or "match" > 0)."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if c is None:
        return None
    if isinstance(c, (list, tuple)) and len(c) == 2 and all(number(v) for v in c):
        c = {"features": ["score"], "weights": [c[0]], "bias": c[1]}
    if not (isinstance(c, dict) and set(c) == {"features", "weights", "bias"} and isinstance(c["features"], list)
            and isinstance(c["weights"], list) and len(c["features"]) == len(c["weights"]) > 0
            and all(f in SCORE_FEATURES for f in c["features"]) and len(set(c["features"])) == len(c["features"])
            and all(number(v) for v in c["weights"]) and number(c["bias"])):
        raise ValueError(f"invalid InferenceConfig: score_calibration must be {{'features': [...], 'weights': [...], "
                         f"'bias': b}} with features from {list(SCORE_FEATURES)} (or Platt's [a, b]), got {c!r}")
    weights = dict(zip(c["features"], c["weights"]))
    if weights.get("score", 0.0) + weights.get("match", 0.0) <= 0:
        raise ValueError(f"invalid InferenceConfig: score_calibration must rise with the match (a positive weight on "
                         f"'score' or 'match'), got {c!r}")
    return {"features": list(c["features"]), "weights": [float(v) for v in c["weights"]], "bias": float(c["bias"])}


@dataclass
class InferenceConfig:
    """How raw outputs become answers (post-processing policy), stored beside the weights as
    ``inference_config.json`` (as HF stores ``generation_config.json``): thresholds chosen on validation data after
    training, so they travel with the checkpoint and can change without retraining.

    score_threshold: an instance is kept when sigmoid(match) x presence reaches it; presence_threshold: presence
    probability above which the concept counts as "in the image" (presence accuracy, the demo's wording);
    mask_threshold: mask logit above which a pixel is in the mask; nms_iou: mask IoU above which a lower-scoring
    instance is a duplicate; score_calibration: {"features": [...], "weights": [...], "bias": b}, the reported score
    is then sigmoid(features . weights + b), P(the instance is right) fitted on validation data (features:
    :data:`SCORE_FEATURES`; :mod:`sam_lite.evaluation.calibration`); the older [a, b] is
    Platt scaling, read as features ["score"], weights [a], bias b; None: the raw score sigmoid(match) x presence.
    best_instance_presence: when a prompt's presence probability reaches it and no instance reaches the score
    threshold, its best instance is returned anyway (None: never).
    """

    score_threshold: float = 0.5
    presence_threshold: float = 0.5
    mask_threshold: float = 0.0
    nms_iou: float = 0.6
    score_calibration: dict | None = None
    best_instance_presence: float | None = None

    def __post_init__(self) -> None:
        for name in ("score_threshold", "presence_threshold", "nms_iou"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"invalid InferenceConfig: {name} must be in [0, 1], got {v!r}")
        if isinstance(self.mask_threshold, bool) or not isinstance(self.mask_threshold, (int, float)):
            raise ValueError(f"invalid InferenceConfig: mask_threshold must be a number, got {self.mask_threshold!r}")
        self.score_calibration = _check_score_calibration(self.score_calibration)
        b = self.best_instance_presence
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b <= 1.0):
            raise ValueError(f"invalid InferenceConfig: best_instance_presence must be in [0, 1] or null, got {b!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InferenceConfig":
        if not isinstance(d, dict):
            raise ValueError(f"inference config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown inference config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_model_config(cls, d: dict[str, Any]) -> "InferenceConfig":
        """The thresholds an old config.json (before inference_config.json existed) carried."""
        return cls(**{k: d[k] for k in INFERENCE_FIELDS if k in d})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "InferenceConfig":
        """``directory/inference_config.json``; without it the thresholds of an old ``config.json``, else the
        defaults."""
        directory = Path(directory)
        path = directory / INFERENCE_CONFIG_NAME
        source = path if path.is_file() else directory / "config.json"
        if not source.is_file():
            return cls()
        try:
            d = json.loads(source.read_text())
            return cls.from_dict(d) if source == path else cls.from_model_config(d)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{source} is not valid JSON: {e}") from e
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e


PRESETS: dict[str, dict[str, Any]] = {
    # for tests: real pretrained backbones, a tiny everything else
    "tiny": dict(image_size=64, d_model=32, num_heads=2, encoder_layers=1, fusion_layers=1, decoder_layers=2,
                 num_queries=8, mask_dim=16, max_text_tokens=16, concept_map=True, concept_hidden=16),
    "small": dict(image_size=256, d_model=96, num_heads=4, encoder_layers=1, decoder_layers=2, num_queries=16,
                  concept_map=True),
    "base": dict(concept_map=True),
    # the shipped model of stop 8 (sam-lite-base before the concept map)
    "base-v1": dict(),
}
