"""SamLiteProcessor: image in -> model tensors; mask logits out -> masks at the original image size."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.ops import box_convert

from .config import SamLiteConfig

MAX_IMAGE_SIDE = 4096  # larger inputs are downscaled (not refused) before anything else happens
ORIGINAL_SIZE_KEY = "sam_lite_original_size"  # PIL info key: (H, W) before that downscaling


@dataclass
class ImageMeta:
    original_size: tuple[int, int]  # (H, W) as given by the user, after EXIF rotation
    resized_size: tuple[int, int]  # (h, w) inside the padded square model input
    input_size: int


def load_image(image) -> Image.Image:
    """Accept a PIL image, an HxW / HxWx3 / HxWx4 numpy array (uint8 or uint16) or a path; return an RGB PIL image.

    Applies EXIF rotation; grayscale, palette, RGBA and 16-bit images become 8-bit RGB. Raises ``ValueError`` with a
    clear message for anything unreadable.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        if path.stat().st_size == 0:
            raise ValueError(f"image file is empty (0 bytes): {path}")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy() if im.mode != "P" else im.convert("RGBA")
                image.info.update(im.info)
                exif = im.getexif()
                if exif:
                    image = ImageOps.exif_transpose(im)
        except Image.DecompressionBombError as e:
            raise ValueError(f"image refused as a possible decompression bomb ({path}): {e}") from e
        except (OSError, SyntaxError, Image.UnidentifiedImageError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from e
    elif isinstance(image, (bytes, bytearray)):
        return load_image_bytes(bytes(image))
    elif isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif isinstance(image, Image.Image):
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # pragma: no cover - broken EXIF block: keep pixels as they are
            pass
    else:
        raise ValueError(f"unsupported image type {type(image).__name__}: give a PIL image, a numpy array or a path")
    return _to_rgb(image)


def load_image_bytes(data: bytes) -> Image.Image:
    if not data:
        raise ValueError("image data is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:
        raise ValueError(f"image refused as a possible decompression bomb: {e}") from e
    except (OSError, SyntaxError, Image.UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image: {e}") from e


def _array_to_pil(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"image array must be HxW, HxWx3 or HxWx4, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image has zero size: {a.shape}")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype in (np.float32, np.float64):
        if not np.isfinite(a).all():
            raise ValueError("image array contains NaN or infinite values")
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8) if a.max() <= 1.0 else np.clip(a, 0, 255).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {a.dtype}: use uint8, uint16 or float in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(a))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.width == 0 or im.height == 0:
        raise ValueError(f"image has zero size: {im.width}x{im.height}")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.uint32)
        im = Image.fromarray((a >> 8 if a.max() > 255 else a).clip(0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        im = bg
    im = im.convert("RGB")
    if max(im.size) > MAX_IMAGE_SIDE:
        s = MAX_IMAGE_SIDE / max(im.size)
        warnings.warn(f"image of {im.width}x{im.height} downscaled to longest side {MAX_IMAGE_SIDE}", stacklevel=3)
        original = (im.height, im.width)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
        im.info[ORIGINAL_SIZE_KEY] = original
    return im


class SamLiteProcessor:
    """Photos in: resize the longest side to ``image_size`` (the model pads bottom/right to a square and scales,
    SAM's scheme). Outputs back: mask logits and boxes of the padded input -> the photo's pixels."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    @classmethod
    def from_config(cls, config: SamLiteConfig) -> "SamLiteProcessor":
        return cls(config.image_size)

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        s = self.image_size / max(h, w)
        return max(1, round(h * s)), max(1, round(w * s))

    def preprocess(self, image) -> tuple[Tensor, ImageMeta]:
        """image (anything :func:`load_image` takes; an RGB PIL image is used as it is) -> the photo resized so its
        longest side is ``image_size``: float [1, 3, h, w] in 0..255, and its meta. The model scales and pads it
        (:meth:`SamLiteModel.preprocess`)."""
        pil = image if isinstance(image, Image.Image) and image.mode == "RGB" else load_image(image)
        rgb = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)
        return self.resize(rgb)

    def resize(self, rgb: Tensor) -> tuple[Tensor, ImageMeta]:
        """rgb uint8 [3, H, W] -> float [1, 3, h, w] (longest side ``image_size``, antialiased bilinear), meta."""
        h, w = rgb.shape[-2:]
        rh, rw = self.resized_size(h, w)
        x = F.interpolate(rgb[None].float(), size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
        return x, ImageMeta((int(h), int(w)), (rh, rw), self.image_size)

    def postprocess_masks(self, mask_logits: Tensor, meta: ImageMeta) -> Tensor:
        """mask_logits [N, h, w] (stride 4 of the padded input) -> logits [N, H, W] at the original size."""
        if mask_logits.shape[0] == 0:
            return mask_logits.new_zeros((0, *meta.original_size))
        x = F.interpolate(mask_logits[None].float(), size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False)
        x = x[..., : meta.resized_size[0], : meta.resized_size[1]]
        return F.interpolate(x, size=meta.original_size, mode="bilinear", align_corners=False)[0]

    def postprocess_regions(self, regions: Tensor, meta: ImageMeta) -> Tensor:
        """Disjoint low-resolution regions bool [N, h, w] -> label map long [H, W] at the original size: each pixel
        gets the region whose bilinearly upsampled indicator is largest there (smooth borders between regions),
        computed at the model's input size and resized by nearest neighbour (one map, not N)."""
        x = F.interpolate(regions[None].float() * 2 - 1, size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False)[0].argmax(0)
        x = x[: meta.resized_size[0], : meta.resized_size[1]]
        return F.interpolate(x[None, None].float(), size=meta.original_size, mode="nearest")[0, 0].long()

    def postprocess_boxes(self, boxes_cxcywh: Tensor, meta: ImageMeta) -> Tensor:
        """Normalised cxcywh of the padded input [N, 4] -> xyxy pixels of the original image [N, 4]."""
        scale = meta.original_size[0] / meta.resized_size[0]
        b = box_convert(boxes_cxcywh.float(), "cxcywh", "xyxy") * self.image_size * scale
        h, w = meta.original_size
        return torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], -1)
