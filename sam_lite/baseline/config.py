"""ClipSegBaselineConfig: the baseline's hyper-parameters (serialised like every family's, see PretrainedConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import PretrainedConfig


@dataclass
class ClipSegBaselineConfig(PretrainedConfig):
    """Configuration of :class:`ClipSegBaseline`. Masks come out at ``image_size // 4`` per side."""

    model_type: ClassVar[str] = "clipseg_baseline"

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
