"""A tiny COCO-format dataset written by the tests themselves (no files from ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 210), "green": (40, 170, 50), "yellow": (240, 220, 40)}


def write_tiny_coco(root: Path, n_images: int = 6, size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    """Images of coloured rectangles ("car") and discs ("ball") on gray, with a "sky" stuff band on even images.

    Every annotation is an exact mask of what was drawn, so tests can check alignment pixel for pixel.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    h, w = size
    images, anns = [], []
    cats = [{"id": 1, "name": "car", "isthing": 1}, {"id": 2, "name": "sports ball", "isthing": 1},
            {"id": 3, "name": "sky-other-merged", "isthing": 0}]
    yy, xx = np.mgrid[:h, :w]
    for i in range(1, n_images + 1):
        img = np.full((h, w, 3), 128, np.uint8)
        stuff = i % 2 == 0
        objects = []
        if stuff:
            objects.append((3, yy < h // 5, (120, 180, 250)))
        for _ in range(int(rng.integers(1, 3))):
            y0, x0 = int(rng.integers(h // 4, h - 30)), int(rng.integers(0, w - 40))
            colour = list(COLOURS.values())[int(rng.integers(0, 4))]
            objects.append((1, (yy >= y0) & (yy < y0 + 20) & (xx >= x0) & (xx < x0 + 36), colour))
        cy, cx = int(rng.integers(30, h - 15)), int(rng.integers(15, w - 15))
        objects.append((2, (yy - cy) ** 2 + (xx - cx) ** 2 < 100, COLOURS["yellow"]))
        visible = np.zeros((h, w), bool)
        drawn = []
        for cid, m, colour in reversed(objects):  # later objects occlude earlier ones
            m = m & ~visible
            visible |= m
            drawn.append((cid, m, colour))
        for cid, m, colour in drawn:
            img[m] = colour
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cid, "iscrowd": 0,
                         "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                         "area": int(m.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
        name = f"{i:06d}.png"
        Image.fromarray(img).save(root / "images" / name)
        images.append({"id": i, "file_name": name, "height": h, "width": w, "license": 4, "stuff_labelled": stuff})
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats,
                                                        "licenses": [{"id": 4, "name": "Attribution License"}]}))
    return root
