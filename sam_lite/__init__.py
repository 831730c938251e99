"""sam-lite: a small text-promptable segmentation model (image encoder with self-attention, text encoder, query
decoder with a presence token) that trains and runs on a laptop CPU."""

from .config import InferenceConfig, SamLiteConfig
from .modeling import SamLiteModel
from .predictor import PredictionResult, SamLitePredictor
from .processing import SamLiteProcessor, load_image
from .structures import Attentions, ImageEmbedding, Prompt, TextEmbedding

__version__ = "0.1.0"
__all__ = ["Attentions", "ImageEmbedding", "InferenceConfig", "PredictionResult", "Prompt", "SamLiteConfig", "SamLiteModel",
           "SamLitePredictor", "SamLiteProcessor", "TextEmbedding", "load_image"]
