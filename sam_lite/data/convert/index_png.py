"""A folder of photos plus index-PNG masks (semantic segmentation) -> COCO.

Photo ``images/NAME.EXT`` goes with mask ``masks/NAME.png``: one class index per pixel (a palette "P" or grey "L" /
16-bit PNG; an RGB colour mask is an error). Line i of the class list names index i; index 0 is background unless
said otherwise (its line is a placeholder), 255 is "ignore" (left out of every annotation). Instances:

* ``components``: each 8-connected component of a class is one instance; categories are things (``isthing`` 1).
* ``class``: one region per class per photo, all of that class's pixels; categories are stuff-like
  (``isthing`` 0) and every photo is marked ``stuff_labelled``, so a class absent from a photo is a verified
  negative there, as for COCO's panoptic stuff.

Masks align with the photo's stored pixels (or, for a photo with an EXIF rotation, with the turned photo when only
that size fits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .common import ConvertError, CocoWriter, list_photos, mask_rle, open_photo, ORIENTATION, read_classes

__all__ = ["convert_index_png"]

INDEX_MODES = {"P", "L", "1", "I", "I;16", "I;16B", "I;16L"}


def read_index_mask(path: Path) -> np.ndarray:
    """An index PNG -> int array [H, W] of class indices."""
    im = open_photo(path, path)
    if im.mode not in INDEX_MODES:
        raise ConvertError(path, None, f"mode {im.mode} is not an index mask (one class index per pixel: a palette "
                                       f"or greyscale PNG)")
    return np.asarray(im).astype(np.int64)


def _frame(photo: Path, shape: tuple[int, int], mask_path: Path) -> str:
    """Which frame of the photo the mask matches: "stored", or "oriented" (EXIF-turned); else an error."""
    with Image.open(photo) as im:
        w, h = im.size
        orientation = im.getexif().get(ORIENTATION, 1)
    if shape == (h, w):
        return "stored"
    if orientation in (5, 6, 7, 8) and shape == (w, h):
        return "oriented"
    raise ConvertError(mask_path, None, f"size {shape[1]}x{shape[0]} differs from the photo {photo.name} ({w}x{h})")


def convert_index_png(images: str | Path, masks: str | Path, classes: str | Path, out: str | Path,
                      instances: str = "components", background: int | None = 0, ignore: int | None = 255,
                      min_area: int = 0, overwrite: bool = False, link: bool = False) -> dict:
    """Convert photos (folder ``images``) and their index masks (folder ``masks``, ``<photo stem>.png``) to a COCO
    dataset at ``out``. ``classes``: the class list (line i names index i). ``instances``: "components" or "class"
    (see the module docstring). ``background`` / ``ignore``: indices that are no class (None: none). ``min_area``:
    drop components smaller than this many pixels. Returns a summary; raises :class:`ConvertError` naming the file
    (and pixel), and then leaves nothing at ``out``."""
    if instances not in ("components", "class"):
        raise ValueError(f"instances must be 'components' or 'class', got {instances!r}")
    if background is not None and background == ignore:
        raise ValueError(f"the background index and the ignore index are both {background}")
    images, masks, classes = Path(images), Path(masks), Path(classes)
    for folder in (images, masks):
        if not folder.is_dir():
            raise ConvertError(folder, None, "no such folder")
    names = read_classes(classes)
    labels = {i: n for i, n in enumerate(names) if i != background and i != ignore}
    if not labels:
        raise ConvertError(classes, None, "no class besides the background")
    photos = list_photos(images)
    if not photos:
        raise ConvertError(images, None, "no photos (jpg, png, ...)")
    things = instances == "components"
    eight = np.ones((3, 3), bool)
    with CocoWriter(out, overwrite, link, sources=(images, masks, classes.parent)) as writer:
        for photo in photos:
            mask_path = masks / f"{photo.stem}.png"
            if not mask_path.is_file():
                raise ConvertError(photo, None, f"no mask {mask_path}")
            index = read_index_mask(mask_path)
            frame = _frame(photo, index.shape, mask_path)
            unknown = ~np.isin(index, list(labels) + [v for v in (background, ignore) if v is not None])
            if unknown.any():
                y, x = np.argwhere(unknown)[0]
                raise ConvertError(mask_path, f"pixel ({x}, {y})",
                                   f"class index {index[y, x]} is not in {classes.name} (indices 0-{len(names) - 1}"
                                   f"{'' if ignore is None else f', {ignore} = ignore'})")
            fields = {} if things else {"stuff_labelled": True}
            image = writer.add_image(photo, photo.name, photo, None, frame=frame, **fields)
            for value in np.unique(index):
                if value not in labels:
                    continue
                region = index == value
                entry = f"class index {value} ({labels[value]!r})"
                if not things:
                    writer.add_annotation(image, labels[value], [mask_rle(region)], mask_path, entry)
                    continue
                components, _ = ndimage.label(region, structure=eight)
                for k, box in enumerate(ndimage.find_objects(components), start=1):
                    part = np.zeros(region.shape, bool)
                    part[box] = components[box] == k
                    if part[box].sum() >= min_area:
                        writer.add_annotation(image, labels[value], [mask_rle(part)], mask_path, entry)
        info = {"description": f"sam-lite convert index-png {images} {masks} (instances: {instances})"}
        return writer.finish(list(labels.values()), isthing=things, info=info)
