"""VGG Image Annotator (VIA 1.x / 2.x) json -> COCO instances (the balloon layout).

A VIA json maps a key (``"<filename><size>"``) to ``{filename, regions, ...}``; ``regions`` is a dict ("0", "1",
...: VIA 1) or a list (VIA 2), each ``{"shape_attributes": {...}, "region_attributes": {...}}``. A VIA 2 project file
(``_via_img_metadata``) works too. Shapes: polygon (``all_points_x`` / ``all_points_y``), rect (``x, y, width,
height``), circle (``cx, cy, r``), ellipse (``cx, cy, rx, ry``, optional ``theta`` in radians); point and polyline
have no area and are errors. VIA coordinates name pixels of the photo as stored (column, row), so 0.5 is added to
move them to the pixel centre in COCO's continuous coordinates, as detectron2's balloon tutorial does.
"""

from __future__ import annotations

from pathlib import Path

from .common import ConvertError, CocoWriter, ellipse_polygon, polygon_rle, read_json

__all__ = ["convert_via"]


def _find_json(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise ConvertError(src, None, "no such file or folder")
    if (src / "via_region_data.json").is_file():
        return src / "via_region_data.json"
    found = sorted(src.glob("*.json"))
    if len(found) != 1:
        raise ConvertError(src, None, f"expected via_region_data.json or one *.json file, found {len(found)}")
    return found[0]


def _entries(data, path: Path) -> dict:
    if isinstance(data, dict) and "_via_img_metadata" in data:  # a VIA 2 project file
        data = data["_via_img_metadata"]
    elif isinstance(data, dict) and {"project", "file", "metadata"} <= set(data):
        raise ConvertError(path, None, "a VIA 3 project: export it from VIA as COCO json (or use VIA 2)")
    if not isinstance(data, dict):
        raise ConvertError(path, None, "not a VIA json (expected an object of photo entries)")
    return data


def _number(shape: dict, key: str, path, entry: str, positive: bool = False) -> float:
    return _check_number(shape.get(key), key, path, entry, positive)


def _check_number(v, key: str, path, entry: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ConvertError(path, entry, f"{key} is missing or not a number ({v!r})")
    if positive and v <= 0:
        raise ConvertError(path, entry, f"{key} must be > 0, got {v}")
    return float(v)


def shape_polygon(shape, path, entry: str) -> list[float]:
    """A VIA ``shape_attributes`` dict -> a flat polygon in COCO continuous coordinates (+0.5)."""
    if not isinstance(shape, dict):
        raise ConvertError(path, entry, "shape_attributes is not an object")
    name = shape.get("name")
    if name == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not isinstance(xs, list) or not isinstance(ys, list):
            raise ConvertError(path, entry, "polygon without all_points_x / all_points_y lists")
        if len(xs) != len(ys):
            raise ConvertError(path, entry, f"polygon has {len(xs)} x but {len(ys)} y coordinates")
        if len(xs) < 3:
            raise ConvertError(path, entry, f"polygon with {len(xs)} point(s), at least 3 needed")
        return [_check_number(v, axis, path, entry) + 0.5 for xy in zip(xs, ys) for v, axis in zip(xy, "xy")]
    if name == "rect":
        x, y = _number(shape, "x", path, entry), _number(shape, "y", path, entry)
        w, h = _number(shape, "width", path, entry, True), _number(shape, "height", path, entry, True)
        x, y = x + 0.5, y + 0.5
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    if name == "circle":
        r = _number(shape, "r", path, entry, True)
        return ellipse_polygon(_number(shape, "cx", path, entry) + 0.5, _number(shape, "cy", path, entry) + 0.5, r, r)
    if name == "ellipse":
        theta = _number(shape, "theta", path, entry) if "theta" in shape else 0.0
        return ellipse_polygon(_number(shape, "cx", path, entry) + 0.5, _number(shape, "cy", path, entry) + 0.5,
                               _number(shape, "rx", path, entry, True), _number(shape, "ry", path, entry, True), theta)
    if name in ("point", "polyline"):
        raise ConvertError(path, entry, f"a {name} has no area (only polygon, rect, circle and ellipse regions)")
    raise ConvertError(path, entry, f"unknown shape {name!r} (polygon, rect, circle or ellipse)")


def _category(attrs, attribute: str | None, default: str | None, path, entry: str) -> str:
    value = None
    if attribute is not None:
        if not isinstance(attrs, dict):
            raise ConvertError(path, entry, "region_attributes is not an object")
        value = attrs.get(attribute)
        if isinstance(value, dict):  # a VIA 2 checkbox attribute: {"option": true, ...}
            ticked = [k for k, v in value.items() if v]
            if len(ticked) > 1:
                raise ConvertError(path, entry, f"{attribute!r} has several options ticked: {ticked}")
            value = ticked[0] if ticked else None
        if value is not None and not isinstance(value, str):
            raise ConvertError(path, entry, f"{attribute!r} is not a name: {value!r}")
        value = " ".join(value.split()) if value else None
    if value:
        return value
    if default:
        return default
    raise ConvertError(path, entry, f"region attribute {attribute!r} is missing or empty (or pass --category NAME)")


def convert_via(src: str | Path, out: str | Path, category: str | None = None,
                category_attribute: str | None = None, images: str | Path | None = None,
                overwrite: bool = False, link: bool = False) -> dict:
    """Convert a VIA json (``src``: the json, or a folder holding ``via_region_data.json``) and its photos
    (``images``, default: the json's folder) to a COCO dataset at ``out``. Each region is one instance; its
    category is the region attribute ``category_attribute`` or, where absent, ``category``. Returns a summary
    (photos, annotations, categories). Raises :class:`ConvertError` (a ValueError) naming the file and entry;
    nothing is left at ``out`` then."""
    if not category and not category_attribute:
        raise ValueError("say which category: --category NAME (one class) or --category-attribute ATTR")
    path = _find_json(Path(src))
    photos = Path(images) if images is not None else path.parent
    entries = _entries(read_json(path), path)
    names: set[str] = set()
    with CocoWriter(out, overwrite, link, sources=(path.parent, photos)) as writer:
        for key, item in entries.items():
            entry = f"entry {key!r}"
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str) or not item["filename"]:
                raise ConvertError(path, entry, "not a VIA photo entry (no filename)")
            filename = item["filename"]
            if "://" in filename:
                raise ConvertError(path, entry, f"remote photo {filename}: download it into {photos} first")
            photo = photos / filename
            if not photo.is_file() and (photos / Path(filename).name).is_file():
                photo = photos / Path(filename).name
            if not photo.is_file():
                raise ConvertError(path, entry, f"photo not found: {photo}")
            regions = item.get("regions", [])
            if isinstance(regions, dict):
                regions = [regions[k] for k in sorted(regions, key=lambda k: (len(k), k))]
            if not isinstance(regions, list):
                raise ConvertError(path, entry, "regions is neither a list nor an object")
            image = writer.add_image(photo, Path(filename).name, path, entry, frame="stored")
            h, w = image["height"], image["width"]
            for i, region in enumerate(regions):
                where = f"{entry} region {i}"
                if not isinstance(region, dict):
                    raise ConvertError(path, where, "not an object")
                polygon = shape_polygon(region.get("shape_attributes"), path, where)
                name = _category(region.get("region_attributes", {}), category_attribute, category, path, where)
                writer.add_annotation(image, name, [polygon_rle(polygon, h, w)], path, where)
                names.add(name)
        cats = sorted(names) if category_attribute else sorted(names | {category})
        return writer.finish(cats, isthing=True, info={"description": f"sam-lite convert via {path}"})
