"""Convert common annotation layouts into the COCO format the trainer reads (``annotations.json`` + ``images/``).

    sam-lite convert via SRC --out DIR (--category NAME | --category-attribute ATTR) [--images DIR]
    sam-lite convert labelme SRC_DIR --out DIR [--classes labels.txt]
    sam-lite convert index-png --images DIR --masks DIR --classes classes.txt --out DIR
                               [--instances components|class] [--background 0|none] [--ignore 255|none]
    common options: [--overwrite] [--link]

* ``via``: VGG Image Annotator 1.x/2.x json (the balloon layout); SRC is the json or its folder
  (``via_region_data.json``). Polygon, rect, circle and ellipse regions; one region = one instance.
* ``labelme``: a folder of labelme ``*.json`` files; shapes sharing ``label`` and ``group_id`` are one instance.
* ``index-png``: photos plus ``<photo stem>.png`` class-index masks; ``--instances components`` (default: each
  8-connected component is an instance, things) or ``class`` (one region per class per photo, stuff-like).

Python: :func:`convert_via`, :func:`convert_labelme`, :func:`convert_index_png` take the same options and return a
summary dict. The output has images (id, file_name, width, height), annotations (segmentation as RLE with string
counts, area, bbox xywh, iscrowd 0) and categories (ids 1, 2, ...). Photos are copied (``--link``: hard-linked)
byte for byte, never changed in place; one with an EXIF rotation is re-encoded upright in the annotations' frame.
The output is written to a temporary folder and renamed at the end: on any error nothing is left at ``--out``,
and an existing ``--out`` is only replaced with ``--overwrite``. Malformed input stops the conversion with one line
``sam-lite convert: error: <file>: <entry>: <what is wrong>`` and exit status 2 (the functions raise
:class:`ConvertError`, a ValueError, with that text).

Validation split: ``CocoConcepts`` holds out ~15 % of a dataset's photos by a hash of the image id, so a dataset
with its own split is converted one folder per split and each is used on its own, e.g. for balloon::

    sam-lite convert via ../shared/data/balloon/train --category balloon --out data/balloon-train
    sam-lite convert via ../shared/data/balloon/val --category balloon --out data/balloon-val
    sam-lite train --data data/balloon-train --split all ... # every one of the 61 train photos
    sam-lite eval --data data/balloon-val --split all ...   # the 13 balloon val photos, never trained on
"""

from __future__ import annotations

import argparse
import sys

from .common import ConvertError
from .index_png import convert_index_png
from .labelme import convert_labelme
from .via import convert_via

__all__ = ["ConvertError", "convert_via", "convert_labelme", "convert_index_png", "main"]


def _index_or_none(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an index or 'none': {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser(prog: str = "sam-lite convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (must not exist)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
        p.add_argument("--link", action="store_true", help="hard-link the photos instead of copying them")

    p = sub.add_parser("via", help="VGG Image Annotator json (the balloon layout)",
                       description="VIA 1.x/2.x json -> COCO: one instance per region.")
    p.add_argument("src", help="the VIA json, or a folder holding via_region_data.json")
    p.add_argument("--images", metavar="DIR", help="folder of the photos (default: the json's folder)")
    p.add_argument("--category", metavar="NAME", help="category of every region (or of regions without "
                                                      "--category-attribute)")
    p.add_argument("--category-attribute", metavar="ATTR", help="region attribute that names the category")
    common(p)

    p = sub.add_parser("labelme", help="a folder of labelme json files",
                       description="labelme json files -> COCO: shapes with the same label and group_id are one "
                                   "instance, every other shape is one.")
    p.add_argument("src", help="folder of labelme *.json files")
    p.add_argument("--classes", metavar="FILE", help="label list, one per line: fixes the category order; other "
                                                     "labels are errors")
    common(p)

    p = sub.add_parser("index-png", help="photos plus index-PNG semantic masks",
                       description="Photos + index-PNG masks (<photo stem>.png) -> COCO.")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the photos")
    p.add_argument("--masks", required=True, metavar="DIR", help="folder of the masks, <photo stem>.png")
    p.add_argument("--classes", required=True, metavar="FILE", help="class names, line i = index i")
    p.add_argument("--instances", choices=["components", "class"], default="components",
                   help="components: each 8-connected component is an instance (things, the default); class: one "
                        "region per class per photo (stuff-like)")
    p.add_argument("--background", type=_index_or_none, default=0, metavar="INDEX",
                   help="background index, or 'none' (default 0)")
    p.add_argument("--ignore", type=_index_or_none, default=255, metavar="INDEX",
                   help="index left out of every annotation, or 'none' (default 255)")
    p.add_argument("--min-area", type=int, default=0, metavar="PX", help="drop smaller components (default 0)")
    common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    common = {"overwrite": args.overwrite, "link": args.link}
    try:
        if args.format == "via":
            summary = convert_via(args.src, args.out, category=args.category,
                                  category_attribute=args.category_attribute, images=args.images, **common)
        elif args.format == "labelme":
            summary = convert_labelme(args.src, args.out, classes=args.classes, **common)
        else:
            summary = convert_index_png(args.images, args.masks, args.classes, args.out, instances=args.instances,
                                        background=args.background, ignore=args.ignore, min_area=args.min_area,
                                        **common)
    except (ValueError, OSError) as e:
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    per = ", ".join(f"{n} {k}" for n, k in list(summary["per_category"].items())[:8])
    per += ", ..." if summary["categories"] > 8 else ""
    note = f"; {summary['reencoded']} photo(s) re-encoded upright (EXIF rotation)" if summary["reencoded"] else ""
    counts = ", ".join(f"{summary[k]} {k if summary[k] != 1 else k[:-1]}" for k in ("photos", "annotations"))
    n = summary["categories"]
    print(f"wrote {summary['out']}: {counts}, {n} {'category' if n == 1 else 'categories'} ({per}){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
