"""What every converter shares: the error type, the atomic COCO writer, shapes -> RLE, class-name lists."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
ORIENTATION = 0x0112  # the EXIF orientation tag


class ConvertError(ValueError):
    """Malformed input: the message is one line, ``<file>: <entry>: <what is wrong>``."""

    def __init__(self, file, entry: str | None, what: str) -> None:
        parts = [str(file)] + ([entry] if entry else []) + [what]
        super().__init__(": ".join(" ".join(str(p).split()) for p in parts))


def polygon_rle(flat: list[float], h: int, w: int) -> dict:
    """One polygon [x0, y0, x1, y1, ...] in COCO's continuous pixel coordinates -> RLE."""
    return mask_utils.frPyObjects([list(map(float, flat))], h, w)[0]


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> list[float]:
    """An ellipse (radians ``theta`` rotation) as a polygon fine enough for its size (at least 16 points)."""
    n = max(16, min(360, int(2 * math.pi * max(rx, ry) / 2)))
    t = np.arange(n) * 2 * math.pi / n
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(theta), math.sin(theta)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1).ravel().tolist()


def mask_rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def points_array(points, file, entry: str, min_points: int) -> np.ndarray:
    """A list of [x, y] pairs -> float array [N, 2], or a ConvertError saying what is wrong."""
    try:
        arr = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        raise ConvertError(file, entry, "points are not a list of [x, y] numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConvertError(file, entry, "points are not a list of [x, y] numbers")
    if not np.isfinite(arr).all():
        raise ConvertError(file, entry, "points contain a non-finite number")
    if len(arr) < min_points:
        raise ConvertError(file, entry, f"{len(arr)} point(s), at least {min_points} needed")
    return arr


def read_classes(path: Path) -> list[str]:
    """A class-name list, one name per line (surrounding spaces dropped; no empty lines or duplicates)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(path, None, f"cannot read the class list: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise ConvertError(path, None, "the class list is empty")
    for i, name in enumerate(names):
        if not name:
            raise ConvertError(path, f"line {i + 1}", "empty class name")
        if name in names[:i]:
            raise ConvertError(path, f"line {i + 1}", f"duplicate class name {name!r}")
    return names


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(path, None, f"cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise ConvertError(path, f"line {e.lineno} column {e.colno}", f"not valid JSON ({e.msg})") from None


def open_photo(path_or_bytes, file, entry: str | None = None) -> Image.Image:
    """Open and fully decode a photo (a truncated or unreadable one is an error here, not during training)."""
    try:
        im = Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
        im.load()
        return im
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ConvertError(file, entry, f"cannot read the photo: {e}") from None


class CocoWriter:
    """Builds ``annotations.json`` + ``images/`` in a temporary folder next to ``out`` and renames it to ``out`` on
    :meth:`finish`; on any error (``with`` block left by an exception) the temporary folder is removed, so nothing
    is left at ``out``. An existing ``out`` is replaced only with ``overwrite`` and only if it looks like a dataset
    (``annotations.json`` and/or ``images/``, nothing else) or is empty.

    Photos are copied (or hard-linked with ``link``) byte for byte, except photos with an EXIF orientation other
    than 1: those are re-encoded without the tag in the annotation frame (``frame="stored"``: the pixels as stored,
    ``"oriented"``: the photo turned as a viewer shows it), so the trainer, which reads stored pixels, and the
    predictor, which applies the tag, see the same picture as the annotations.
    """

    def __init__(self, out: str | Path, overwrite: bool = False, link: bool = False,
                 sources: tuple[Path, ...] = ()) -> None:
        self.out = Path(out).absolute()
        self.link = link
        self.overwrite = overwrite
        for src in sources:
            src = Path(src).absolute()
            if self.out == src or self.out in src.parents:
                raise ConvertError(out, None, f"the output folder would contain the input {src}")
        if self.out.exists() and not overwrite:
            raise ConvertError(out, None, "already exists (pass --overwrite to replace it)")
        if self.out.exists():
            self._check_replaceable()
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.reencoded = 0
        self._names: set[str] = set()
        self.tmp: Path | None = None

    def _check_replaceable(self) -> None:
        if not self.out.is_dir():
            raise ConvertError(self.out, None, "exists and is not a folder")
        extra = sorted(p.name for p in self.out.iterdir() if p.name not in {"annotations.json", "images"})
        if extra:
            raise ConvertError(self.out, None, f"not replaced: it holds more than a dataset ({', '.join(extra[:3])})")

    def __enter__(self) -> "CocoWriter":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the dataset private
        (self.tmp / "images").mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- content ---------------------------------------------------------------------------------------------
    def add_image(self, src: Path | bytes, name: str, file, entry: str | None = None,
                  frame: str = "stored", **fields) -> dict:
        """Add a photo (a path, or encoded bytes) as ``images/<name>``; returns its image record (id, size)."""
        if name in self._names:
            raise ConvertError(file, entry, f"a second photo named {name!r} (output file names must be unique)")
        im = open_photo(src, file, entry)
        orientation = im.getexif().get(ORIENTATION, 1)
        dest = self.tmp / "images" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if orientation in (None, 1):
            width, height = im.size
            if isinstance(src, bytes):
                dest.write_bytes(src)
            else:
                self._copy(Path(src), dest)
        else:
            pixels = ImageOps.exif_transpose(im) if frame == "oriented" else im.copy()
            pixels.info.pop("exif", None)
            fmt = {"MPO": "JPEG"}.get(im.format, im.format) or "PNG"  # MPO: a camera JPEG with a preview
            kwargs = {"quality": 95} if fmt == "JPEG" else {}
            if im.info.get("icc_profile"):
                kwargs["icc_profile"] = im.info["icc_profile"]
            pixels.save(dest, format=fmt, **kwargs)
            width, height = pixels.size
            self.reencoded += 1
        record = {"id": len(self.images) + 1, "file_name": name, "width": width, "height": height, **fields}
        self.images.append(record)
        self._names.add(name)
        return record

    def _copy(self, src: Path, dest: Path) -> None:
        if self.link:
            try:
                os.link(src, dest)
                return
            except OSError:
                pass  # another file system: copy instead
        shutil.copyfile(src, dest)

    def add_annotation(self, image: dict, category: str, rles: list[dict], file, entry: str) -> dict:
        """One instance: the union of ``rles`` (at the image's size). An empty mask is an error."""
        rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
        area = int(mask_utils.area(rle))
        if area == 0:
            raise ConvertError(file, entry, f"covers no pixel of the {image['width']}x{image['height']} photo")
        ann = {"id": len(self.annotations) + 1, "image_id": image["id"], "category": category,
               "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
               "area": area, "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0}
        self.annotations.append(ann)
        return ann

    def finish(self, categories: list[str], isthing: bool = True, info: dict | None = None) -> dict:
        """Write ``annotations.json`` (category ids 1.. in ``categories`` order) and move the folder to ``out``.
        Returns a summary: photos, annotations, categories, per-category counts, re-encoded photos."""
        ids = {name: i + 1 for i, name in enumerate(categories)}
        missing = sorted({a["category"] for a in self.annotations} - set(ids))
        if missing:
            raise ValueError(f"categories missing from the list: {missing}")  # a bug in a converter, not input
        anns = [{k: v for k, v in a.items() if k != "category"} | {"category_id": ids[a["category"]]}
                for a in self.annotations]
        data = {"info": info or {}, "licenses": [], "images": self.images, "annotations": anns,
                "categories": [{"id": i, "name": n, "supercategory": n, "isthing": int(isthing)}
                               for n, i in ids.items()]}
        (self.tmp / "annotations.json").write_text(json.dumps(data))
        old = None
        if self.out.exists():  # checked in __init__ too; replaced only now that the new one is complete
            if not self.overwrite:
                raise ConvertError(self.out, None, "appeared while converting (pass --overwrite to replace it)")
            self._check_replaceable()
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
            os.rename(self.out, old / "dataset")
        try:
            os.rename(self.tmp, self.out)
        except OSError:
            if old is not None:  # put the previous dataset back
                os.rename(old / "dataset", self.out)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        counts = dict.fromkeys(categories, 0) | Counter(a["category"] for a in self.annotations)
        return {"out": str(self.out), "photos": len(self.images), "annotations": len(self.annotations),
                "categories": len(categories), "per_category": counts, "reencoded": self.reencoded}


def list_photos(folder: Path) -> list[Path]:
    """The photos directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
