"""The CLIPSeg-style baseline: one semantic mask per (image, prompt), split into instances by connected components."""

from .config import ClipSegBaselineConfig
from .model import ClipSegBaseline
from .predictor import BaselinePredictor

__all__ = ["BaselinePredictor", "ClipSegBaseline", "ClipSegBaselineConfig"]
