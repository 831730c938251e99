from .image_encoder import ImageEncoder
from .sam_lite import SamLiteModel
from .text_encoder import TextEncoder

__all__ = ["ImageEncoder", "SamLiteModel", "TextEncoder"]
