"""A folder of labelme json files (labelme 3-5) -> COCO instances.

Each ``*.json`` has ``shapes`` (``label``, ``points``, ``shape_type``, ``group_id``), ``imagePath`` (relative to the
json), ``imageHeight`` / ``imageWidth`` and optionally the photo itself in ``imageData`` (base64), used when the
photo file is missing. Shape types: polygon (3+ points), rectangle (2 corners), circle (centre, a point on the
circle), mask (labelme 5.3+: the box corners and a base64 PNG of the box); point, line and linestrip have no area
and are errors. Shapes with the same ``label`` and ``group_id`` are one instance (labelme's labelme2coco rule);
every other shape is an instance of its own. Points are labelme's continuous pixel coordinates, used as they are
(labelme2coco writes them to COCO unchanged). labelme turns photos by their EXIF orientation, so the converted
photo is turned the same way.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np

from .common import (ConvertError, CocoWriter, ellipse_polygon, mask_rle, open_photo, points_array, polygon_rle,
                     read_classes, read_json)

__all__ = ["convert_labelme"]


def _decode_b64(text, path, entry: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise ConvertError(path, entry, f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as e:
        raise ConvertError(path, entry, f"{what} is not valid base64 ({e})") from None


def shape_rle(shape: dict, h: int, w: int, path, entry: str) -> dict:
    """One labelme shape -> RLE at the photo's size (h, w)."""
    kind = shape.get("shape_type") or "polygon"
    if kind == "polygon":
        return polygon_rle(points_array(shape.get("points"), path, entry, 3).ravel().tolist(), h, w)
    if kind == "rectangle":
        pts = points_array(shape.get("points"), path, entry, 2)
        if len(pts) != 2:
            raise ConvertError(path, entry, f"a rectangle needs 2 corner points, got {len(pts)}")
        (x0, y0), (x1, y1) = np.sort(pts, axis=0)
        return polygon_rle([x0, y0, x1, y0, x1, y1, x0, y1], h, w)
    if kind == "circle":
        pts = points_array(shape.get("points"), path, entry, 2)
        if len(pts) != 2:
            raise ConvertError(path, entry, f"a circle needs 2 points (centre, edge), got {len(pts)}")
        r = float(np.hypot(*(pts[1] - pts[0])))
        if r == 0:
            raise ConvertError(path, entry, "a circle of radius 0")
        return polygon_rle(ellipse_polygon(pts[0][0], pts[0][1], r, r), h, w)
    if kind == "mask":
        pts = points_array(shape.get("points"), path, entry, 2)
        x0, y0 = np.floor(pts.min(0)).astype(int)
        crop = open_photo(_decode_b64(shape.get("mask"), path, entry, "mask"), path, entry + " mask")
        crop = np.asarray(crop.convert("L")) > 0
        full = np.zeros((h, w), bool)
        ch, cw = crop.shape
        ys, xs = slice(max(y0, 0), min(y0 + ch, h)), slice(max(x0, 0), min(x0 + cw, w))
        full[ys, xs] = crop[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        return mask_rle(full)
    if kind in ("point", "points", "line", "linestrip"):
        raise ConvertError(path, entry, f"a {kind} has no area (polygon, rectangle, circle or mask shapes only)")
    raise ConvertError(path, entry, f"unknown shape_type {kind!r}")


def _photo(data: dict, path: Path):
    """(photo path or encoded bytes, output file name) of a labelme file."""
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise ConvertError(path, "imagePath", "missing")
    photo = path.parent / image_path.replace("\\", "/")
    name = Path(image_path.replace("\\", "/")).name
    if photo.is_file():
        return photo, name
    if (path.parent / name).is_file():  # e.g. a path from another machine: the photo next to the json
        return path.parent / name, name
    if data.get("imageData"):
        return _decode_b64(data["imageData"], path, "imageData", "imageData"), name
    raise ConvertError(path, "imagePath", f"photo not found: {photo} (and no imageData)")


def convert_labelme(src: str | Path, out: str | Path, classes: str | Path | None = None, overwrite: bool = False,
                    link: bool = False) -> dict:
    """Convert the labelme ``*.json`` files of folder ``src`` (sorted by name; not its subfolders) and their photos
    to a COCO dataset at ``out``. ``classes``: a file with one label per line that fixes the category order (ids 1,
    2, ...; labelme's ``__ignore__`` / ``_background_`` lines are skipped); a label not in it is an error. Without
    it every label found is a category, sorted by name. Returns a summary; raises :class:`ConvertError` naming the
    file and shape, and then leaves nothing at ``out``."""
    src = Path(src)
    if not src.is_dir():
        raise ConvertError(src, None, "not a folder of labelme json files")
    files = sorted(src.glob("*.json"))
    if not files:
        raise ConvertError(src, None, "no *.json files")
    fixed = None
    if classes is not None:
        fixed = [n for n in read_classes(Path(classes)) if n not in ("__ignore__", "_background_")]
    names: set[str] = set()
    with CocoWriter(out, overwrite, link, sources=(src,)) as writer:
        for path in files:
            data = read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
                raise ConvertError(path, None, "not a labelme file (no shapes list)")
            photo, name = _photo(data, path)
            where = "imageData" if isinstance(photo, bytes) else "imagePath"
            image = writer.add_image(photo, name, path, where, frame="oriented")
            h, w = image["height"], image["width"]
            declared = (data.get("imageHeight"), data.get("imageWidth"))
            if declared != (None, None) and declared != (h, w):
                raise ConvertError(path, "imageHeight/imageWidth",
                                   f"{declared[1]}x{declared[0]} but the photo is {w}x{h}")
            instances: dict[tuple, tuple[list[dict], str]] = {}
            for i, shape in enumerate(data["shapes"]):
                entry = f"shape {i}"
                if not isinstance(shape, dict):
                    raise ConvertError(path, entry, "not an object")
                label = shape.get("label")
                if not isinstance(label, str) or not label.strip():
                    raise ConvertError(path, entry, f"label is missing or empty ({label!r})")
                label = " ".join(label.split())
                entry = f"shape {i} ({label!r})"
                if fixed is not None and label not in fixed:
                    raise ConvertError(path, entry, f"label not in the class list {classes}")
                group = shape.get("group_id")
                if group is not None and (isinstance(group, bool) or not isinstance(group, (int, str))):
                    raise ConvertError(path, entry, f"group_id is not a number or a string: {group!r}")
                key = (label, group) if group is not None else (label, "shape", i)
                instances.setdefault(key, ([], entry))[0].append(shape_rle(shape, h, w, path, entry))
            for (label, *_), (rles, entry) in instances.items():
                writer.add_annotation(image, label, rles, path, entry)
                names.add(label)
        cats = fixed if fixed is not None else sorted(names)
        return writer.finish(cats, isthing=True, info={"description": f"sam-lite convert labelme {src}"})
