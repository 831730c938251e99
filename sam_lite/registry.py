"""One registry of model types: ``model_type`` (in every ``config.json``) -> config, model, predictor and training
objective. Entries are "module:attribute" strings imported on use, so reading the registry imports nothing heavy.

    family = model_family("clipseg_baseline")
    predictor = load_predictor("runs/x/final")  # the right predictor for whatever the checkpoint holds
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path


def _resolve(ref: str):
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ModelFamily:
    name: str
    config_ref: str
    model_ref: str
    predictor_ref: str
    objective_ref: str  # training: callable(model, core, batch) -> losses (sam_lite.training.objectives)

    @property
    def config_class(self):
        return _resolve(self.config_ref)

    @property
    def model_class(self):
        return _resolve(self.model_ref)

    @property
    def predictor_class(self):
        return _resolve(self.predictor_ref)

    @property
    def objective_class(self):
        return _resolve(self.objective_ref)


MODEL_FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily("sam_lite", "sam_lite.config:SamLiteConfig", "sam_lite.modeling:SamLiteModel",
                "sam_lite.predictor:SamLitePredictor", "sam_lite.training.objectives:SetPredictionObjective"),
    ModelFamily("clipseg_baseline", "sam_lite.baseline.config:ClipSegBaselineConfig",
                "sam_lite.baseline.model:ClipSegBaseline", "sam_lite.baseline.predictor:BaselinePredictor",
                "sam_lite.training.objectives:SemanticMaskObjective"),
)}


def model_family(name: str) -> ModelFamily:
    if name not in MODEL_FAMILIES:
        raise ValueError(f"unknown model type {name!r}; known: {sorted(MODEL_FAMILIES)}")
    return MODEL_FAMILIES[name]


def checkpoint_family(directory: str | Path) -> ModelFamily:
    """The family of a checkpoint directory, from its config.json's ``model_type`` (default: sam_lite)."""
    path = Path(directory) / "config.json"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: config must be a JSON object")
    try:
        return model_family(d.get("model_type", "sam_lite"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def load_predictor(directory: str | Path, device=None):
    """The predictor of the checkpoint's family, loaded from ``directory`` (onto ``device``; default the CPU)."""
    return checkpoint_family(directory).predictor_class.from_pretrained(directory, device=device)
