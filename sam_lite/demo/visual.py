"""Visual prompts on the Segment tab (checkpoints trained with ``geometric_prompts``), as in SAM's demo: clicks on
the prompt canvas add positive / negative points or box corners, a box can be typed instead, "find all like this"
turns the box into an exemplar, and "show 3 alternatives" is SAM's multimask answer to an ambiguous click.

Three pixel grids meet here: the canvas (what the browser shows and ``gr.SelectData.index`` counts in), the upload
(what the user types and reads, as in ``sam-lite predict --box``) and the photo the predictor sees (the upload
downsized to DISPLAY_MAX_SIDE). Clicks are kept in upload pixels; :func:`rescale` converts between the grids.
"""

import time
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from ..visual_prompts import check_visual_prompt
from .drawing import draw_prompt, instance_colour
from .service import Photo, SegmentationService, load_photo, parse_prompts, require_image
from .views import segment

POSITIVE, NEGATIVE, CORNER = "positive point", "negative point", "box corner"
CLICK_MODES = [POSITIVE, NEGATIVE, CORNER]


@dataclass(frozen=True)
class Clicks:
    """The clicks on the current photo (kept per visitor in gr.State), in pixels of the upload."""

    photo: Photo | None = None
    points: tuple[tuple[int, int], ...] = ()
    labels: tuple[int, ...] = ()  # 1 positive, 0 negative
    corner: tuple[int, int] | None = None  # the first corner of a box being clicked


def rescale(xy, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(x, y) pixels [..., 2] of an image of size ``src`` (W, H) -> pixels of the same image resized to ``dst``
    (pixel centres map onto pixel centres, as in :func:`sam_lite.visual_prompts.to_model_pixels`)."""
    scale = np.asarray(dst, np.float64) / np.asarray(src, np.float64)
    return (np.asarray(xy, np.float64) + 0.5) * scale - 0.5


def parse_box(text: str | None) -> list[float] | None:
    """'x0, y0, x1, y1' (commas and / or spaces) -> [x0, y0, x1, y1]; blank -> None; ValueError when malformed."""
    if text is None or not text.strip():
        return None
    parts = text.replace(",", " ").split()
    try:
        box = [float(v) for v in parts]
    except ValueError:
        box = []
    if len(box) != 4 or not np.isfinite(box).all():
        raise ValueError(f"The box must be four numbers x0,y0,x1,y1 (pixels of the photo), got {text.strip()!r}.")
    return box


def drawable_box(text: str | None) -> list[float] | None:
    """The box typed so far if it already is one (four numbers, x1 > x0 and y1 > y0), else None; never raises.

    While a box is typed it passes through forms that are not boxes yet ('10,20', '10,20,30,4'): those are drawn
    as nothing and said nothing about; Segment checks the finished box and says what is wrong with it."""
    try:
        box = parse_box(text)
    except ValueError:
        return None
    if box is None or not (box[2] > box[0] and box[3] > box[1]):
        return None
    return box


def format_box(box) -> str:
    return ",".join(f"{v:g}" for v in box)


def new_photo(image) -> Clicks:
    """A new photo in the upload component -> no clicks (none of the old photo's may be reused)."""
    return Clicks() if image is None or (isinstance(image, str) and not image) else Clicks(load_photo(image))


def add_click(clicks: Clicks, box_text: str, mode: str, xy) -> tuple[Clicks, str]:
    """A click at pixel ``xy`` of the canvas -> (the new clicks, the new box text). Two box corners make the box
    (written into the box text); a further corner starts a new box."""
    if clicks.photo is None:
        raise ValueError("Please upload an image (or pick one of the examples) first, then click on it.")
    if mode not in CLICK_MODES:
        raise ValueError(f"Unknown click mode {mode!r}: choose one of {', '.join(CLICK_MODES)}.")
    x, y = (int(v) for v in np.rint(rescale(xy, clicks.photo.image.size, clicks.photo.upload_size)))
    if mode != CORNER:
        label = int(mode == POSITIVE)
        return replace(clicks, points=clicks.points + ((x, y),), labels=clicks.labels + (label,)), box_text
    if clicks.corner is None:
        return replace(clicks, corner=(x, y)), ""
    (x0, y0) = clicks.corner
    if x == x0 or y == y0:
        raise ValueError(f"The corners ({x0}, {y0}) and ({x}, {y}) make a box of zero area: click the corner "
                         f"diagonally opposite the first one.")
    return replace(clicks, corner=None), format_box([min(x0, x), min(y0, y), max(x0, x), max(y0, y)])


def visual_prompt(clicks: Clicks, box_text: str, find_all: bool, photo: Photo) -> dict:
    """The clicks and the box -> :meth:`SamLitePredictor.predict` keyword arguments in pixels of ``photo.image``
    ({} for none). Checked in upload pixels first, so that messages speak the user's coordinates."""
    box = parse_box(box_text)
    if clicks.points and (clicks.photo is None or clicks.photo.key != photo.key):
        raise ValueError("These clicks were made on another photo: press 'Clear clicks' and click on this one.")
    if find_all and box is None:
        raise ValueError("'Find all like this' needs a box around one example: click two box corners or type "
                         "x0,y0,x1,y1.")
    if not clicks.points and box is None:
        if clicks.corner is not None:
            raise ValueError("One box corner is clicked: click the opposite corner too (or type the box).")
        return {}
    w, h = photo.upload_size
    checked = check_visual_prompt(clicks.points or None, clicks.labels or None, None if find_all else box,
                                  [box] if find_all else None, (h, w))
    out = {}
    for name, value in checked.items():
        if name == "point_labels":
            out[name] = value.tolist()
        else:
            out[name] = rescale(value.numpy().reshape(-1, 2), photo.upload_size, photo.image.size).reshape(
                value.shape).tolist()
    return out


def prompt_canvas(clicks: Clicks, box_text: str, find_all: bool) -> Image.Image | None:
    """The photo with the clicks and the box drawn on it (None before there is a photo; a box that does not parse
    yet is left out: see :func:`drawable_box`)."""
    photo = clicks.photo
    if photo is None:
        return None
    box = drawable_box(box_text)
    to_canvas = lambda xy: rescale(xy, photo.upload_size, photo.image.size)  # noqa: E731
    return draw_prompt(photo.image, to_canvas(np.reshape(clicks.points, (-1, 2))).tolist(), clicks.labels,
                       None if box is None else to_canvas(np.reshape(box, (2, 2))).reshape(4).tolist(),
                       None if clicks.corner is None else to_canvas(clicks.corner).tolist(), exemplar=find_all)


def describe_clicks(clicks: Clicks, box_text: str) -> str:
    """One line telling what the next Segment will send, in upload pixels."""
    parts = [f"{'+' if label else '−'} ({x}, {y})" for (x, y), label in zip(clicks.points, clicks.labels)]
    text = f"{len(parts)} point{'s' if len(parts) != 1 else ''}: {', '.join(parts)}" if parts else "no points"
    if box_text and box_text.strip():
        text += f"; box {box_text.strip()}"
        if drawable_box(box_text) is None:
            text += " (not a box yet: x0,y0,x1,y1 with x1 > x0 and y1 > y0)"
    if clicks.corner is not None:
        text += f"; first box corner at {clicks.corner}: click the opposite one"
    return f"Visual prompt (pixels of the photo): {text}."


def segment_any(service: SegmentationService, image, text: str, threshold: float, clicks: Clicks | None = None,
                box_text: str = "", find_all: bool = False, multimask: bool = False):
    """The Segment button: text only -> :func:`views.segment`; with points or a box, the visual prompt (and the
    text, if any, as one prompt). -> (AnnotatedImage value, colour map, summary markdown, prompts)."""
    clicks = clicks or Clicks()
    if not (clicks.points or clicks.corner or (box_text or "").strip()):
        return segment(service, image, text, threshold)
    require_image(image)
    photo = load_photo(image)
    visual = visual_prompt(clicks, box_text, find_all, photo)
    prompts = parse_prompts(text) if text and text.strip() else []
    if len(prompts) > 1:
        raise ValueError(f"Points and a box go with one text prompt or none, got {len(prompts)}: "
                         f"{', '.join(prompts)}.")
    t0 = time.perf_counter()
    r, cached = service.predict_visual(photo.image, photo.key, prompts[0] if prompts else None, threshold,
                                       multimask=multimask, **visual)
    dt = time.perf_counter() - t0
    one_object = "exemplars" not in visual
    name = "object" if one_object else " ".join(prompts + ["like this"])
    layers, colours = [], {}
    for j, (mask, score, iou) in enumerate(zip(r.masks, r.scores.tolist(), r.iou_predictions.tolist())):
        label = f"{name} #{j + 1} ({f'IoU {iou:.2f}' if one_object else f'{score:.2f}'})"
        layers.append((mask.numpy().astype(np.float32), label))
        colours[label] = instance_colour(0, j)
    text_part = f" and the text '{prompts[0]}'" if prompts else ""
    if not one_object:
        what = (f"**every instance like the box{text_part}**: {len(r) or 'none'} above the threshold, presence "
                f"{r.presence:.2f}")
        rule = f"'Find all like this' keeps instances scoring at least {float(threshold):.2f}."
    else:
        if len(r) == 0:
            found = "no mask found"
        elif len(r) == 1:
            found = f"best mask, predicted IoU {float(r.iou_predictions[0]):.2f}"
        else:
            found = f"{len(r)} alternatives, best first (SAM's answer to an ambiguous click)"
        what = f"**object under the clicks{text_part}**: {found}"
        rule = "Points and a box pick one object: its best mask, no threshold."
    how = "image embedding reused from cache" if cached else "image encoded"
    summary = f"- {what}\n\n<sub>{describe_clicks(clicks, box_text)} {rule} {how}; {dt:.2f} s.</sub>"
    box = visual["box"] if "box" in visual else visual.get("exemplars", [None])[0]
    marks = draw_prompt(photo.image, visual.get("points", []), visual.get("point_labels", []), box,
                        exemplar=not one_object)
    return (marks, layers), colours, summary, prompts
