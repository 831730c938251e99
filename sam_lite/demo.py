"""The Gradio demo: segment anything you can name, then look inside the attention that found it.

``python app.py`` or ``sam-lite demo`` start it on http://127.0.0.1:7860. Two tabs:

* **Segment**: an image, a text prompt ("red car"; several separated by commas), a score threshold -> one coloured
  layer per instance and the presence probability of each concept.
* **Attention**: the Q/K/V story made visible. First the prompt's **concept map**: P(prompt | pixel) from the image
  encoder's per-pixel concept embedding, a heat map on the photo on an absolute 0..1 scale (the first place where
  the model says which patches are relevant to the words; hidden for checkpoints without a concept map). Then, for
  the best object queries of the prompt, each decoder layer's cross-attention over the image (heat maps on the
  photo) and over the prompt's words (bar chart); and the image encoder's self-attention from any patch you click
  on.

One :class:`SamLitePredictor` is shared by every visitor, guarded by a lock; the image embedding is kept and reused
while the same image (by content hash) keeps coming back, so a new prompt on the same photo costs only the decoder.
"""

import argparse
import colorsys
import functools
import hashlib
import io
import logging
import os
import socket
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from .predictor import DEFAULT_CHECKPOINT, PredictionResult, SamLitePredictor  # noqa: E402
from .processing import ImageMeta, load_image  # noqa: E402

log = logging.getLogger("sam_lite.demo")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
EXAMPLES = [
    ("girls_goats_meadow.jpg", "person, sky, grass"),  # a validation photo: never trained on
    ("street_cars_bus.jpg", "car, bus, tree"),
    ("man_with_dog.jpg", "person, dog, couch"),
    ("dinner_table.jpg", "person, dining table"),
    ("two_dogs.jpg", "dog, toilet"),
]
DISPLAY_MAX_SIDE = 1024  # uploads are downsized to this before anything else (the model itself sees 320 px)
TILE_MAX_SIDE = 384  # heat-map tiles in the attention galleries
MAX_PROMPTS = 8
MAX_PROMPT_CHARS = 200
MAX_INSTANCES = 20  # per prompt
MAX_UPLOAD = "25mb"
PROMPT_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


# --------------------------------------------------------------------------------------------------------------
# input handling
def parse_prompts(text: str | None) -> list[str]:
    """'red car, person' -> ['red car', 'person'] (blank entries and repeats dropped). ValueError when empty."""
    if text is None or not str(text).strip():
        raise ValueError("Please type what to segment, e.g. 'red car' (several things: 'car, person').")
    text = str(text)
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"The prompt is too long ({len(text)} characters); keep it under {MAX_PROMPT_CHARS}.")
    prompts, seen = [], set()
    for p in text.split(","):
        p = " ".join(p.split())
        if p and p.lower() not in seen:
            seen.add(p.lower())
            prompts.append(p)
    if not prompts:
        raise ValueError("Please type what to segment, e.g. 'red car' (several things: 'car, person').")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"At most {MAX_PROMPTS} comma-separated prompts at once, got {len(prompts)}.")
    return prompts


def require_image(image) -> None:
    if image is None or (isinstance(image, str) and not image):
        raise ValueError("Please upload an image (or pick one of the examples) first.")


def prepare_image(image) -> tuple[Image.Image, str]:
    """Anything :func:`load_image` takes -> (RGB image with longest side <= 1024 px, content hash)."""
    require_image(image)
    pil = load_image(image)
    if max(pil.size) > DISPLAY_MAX_SIDE:
        s = DISPLAY_MAX_SIDE / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * s)), max(1, round(pil.height * s))), Image.BILINEAR)
    arr = np.asarray(pil)
    key = hashlib.blake2b(arr.tobytes(), digest_size=16)
    key.update(repr(arr.shape).encode())
    return pil, key.hexdigest()


class SegmentationService:
    """The shared predictor behind a lock; the last image's embedding is reused while its hash is unchanged."""

    def __init__(self, predictor: SamLitePredictor) -> None:
        self.predictor = predictor
        self._lock = threading.Lock()
        self._key: str | None = None
        self.image_encodings = 0  # how many times an image embedding was computed (tests read it)

    def predict(self, image: Image.Image, key: str, prompts: list[str], threshold: float,
                return_attention: bool = False, return_concept_map: bool = False
                ) -> tuple[list[PredictionResult], bool]:
        """-> (one result per prompt, whether the cached embedding was reused)."""
        with self._lock:
            cached = self._key == key and self.predictor.is_image_set
            if not cached:
                self._key = None
                self.predictor.set_image(image)
                self._key = key
                self.image_encodings += 1
            results = self.predictor.predict(prompts, score_threshold=float(threshold),
                                             return_attention=return_attention, max_instances=MAX_INSTANCES,
                                             return_concept_map=return_concept_map)
        return results, cached

    def warm_up(self) -> None:
        """The first prompt of a process pays for one-off set-up (class-name embeddings); pay it at start-up."""
        blank = Image.new("RGB", (64, 48), (127, 127, 127))
        self.predict(blank, "warm-up", ["warm up"], 1.0)


def user_errors(fn):
    """Bad input -> gr.Error with the message; anything unexpected -> a short gr.Error (details in the log)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # pragma: no cover - defensive: never show a traceback to a visitor
            log.exception("demo handler %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(e).__name__}); details are in its log.") from None
    return wrapper


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Make upload decoding failures of ``component`` a readable gr.Error instead of a bare 'Error'.

    (Done on the instance: a gr.Image subclass would make Gradio write a ``.pyi`` stub next to this file.)
    """
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception as e:
            name = getattr(payload, "orig_name", None) or "the uploaded file"
            if isinstance(e, (OSError, SyntaxError, ValueError, Image.DecompressionBombError)):
                raise gr.Error(f"Could not read {name!r} as an image: it is not a supported, intact image file "
                               f"(JPEG, PNG, WebP, ...).") from None
            log.exception("decoding an upload failed")
            raise gr.Error(f"Could not read {name!r} as an image ({type(e).__name__}).") from None

    component.preprocess = preprocess
    return component


# --------------------------------------------------------------------------------------------------------------
# drawing
def _hex_to_rgb(h: str) -> tuple[float, float, float]:
    h = h.lstrip("#")
    return tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))


def instance_colour(prompt_index: int, instance_index: int) -> str:
    """One hue per prompt; its instances alternate lighter and darker shades of it."""
    r, g, b = _hex_to_rgb(PROMPT_COLOURS[prompt_index % len(PROMPT_COLOURS)])
    h, l, s = colorsys.rgb_to_hls(r, g, b)
    shift = [0.0, 0.15, -0.12, 0.25, -0.2][instance_index % 5]
    r, g, b = colorsys.hls_to_rgb(h, min(0.85, max(0.2, l + shift)), s)
    return "#{:02x}{:02x}{:02x}".format(round(r * 255), round(g * 255), round(b * 255))


def heat_overlay(photo: Image.Image, grid_map: np.ndarray, meta: ImageMeta, alpha: float = 0.75,
                 point: tuple[float, float] | None = None) -> Image.Image:
    """A token-grid map [h, w] (over the padded square input) drawn over ``photo`` as a heat map.

    The map is blown up to the S x S model input (each cell one 16 px patch), cropped to the part covering the image
    and resized to the photo. Colours are scaled per map (its largest weight is brightest); the more weight a
    patch has, the more of the heat colour covers it (up to ``alpha``), so ignored patches stay visible but dim.
    """
    m = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))[None, None]
    s = meta.input_size
    rh, rw = meta.resized_size
    m = F.interpolate(m, size=(s, s), mode="nearest")[..., :rh, :rw]
    m = F.interpolate(m, size=(photo.height, photo.width), mode="nearest")[0, 0].numpy()
    out = _blend_heat(photo, m / max(float(m.max()), 1e-12), alpha)
    return mark_point(out, point) if point is not None else out


def _blend_heat(photo: Image.Image, m: np.ndarray, alpha: float) -> Image.Image:
    """``m`` [H, W] in 0..1 (photo size) drawn over ``photo`` in the inferno colours; heat covers up to ``alpha``."""
    import matplotlib

    m = np.clip(np.asarray(m, dtype=np.float32), 0.0, 1.0)
    heat = matplotlib.colormaps["inferno"](m)[..., :3]
    base = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0
    a = (0.3 + (alpha - 0.3) * m)[..., None] if alpha > 0.3 else alpha
    return Image.fromarray((np.clip((1 - a) * base + a * heat, 0, 1) * 255).astype(np.uint8))


def probability_overlay(photo: Image.Image, prob_map, alpha: float = 0.75) -> Image.Image:
    """A probability map [H', W'] over the whole photo (any size: resized to ``photo``) drawn as a heat map.

    Unlike :func:`heat_overlay` the colour scale is absolute, 0 (dark, photo dimmed) to 1 (bright yellow), not
    normalised per map: where the probability is low everywhere the overlay stays empty instead of showing
    amplified noise.
    """
    m = torch.as_tensor(np.asarray(prob_map, dtype=np.float32))
    if tuple(m.shape) != (photo.height, photo.width):
        m = F.interpolate(m[None, None], size=(photo.height, photo.width), mode="bilinear",
                          align_corners=False)[0, 0]
    return _blend_heat(photo, m.numpy(), alpha)


def mark_point(photo: Image.Image, point: tuple[float, float]) -> Image.Image:
    """A copy of ``photo`` with a cyan ring at ``point`` (x, y)."""
    out = photo.copy()
    d = ImageDraw.Draw(out)
    x, y = point
    r = max(4, round(max(out.size) / 60))
    d.ellipse([x - r, y - r, x + r, y + r], outline=(0, 255, 255), width=max(2, r // 3))
    d.line([x - 2 * r, y, x - r, y], fill=(0, 255, 255), width=2)
    d.line([x + r, y, x + 2 * r, y], fill=(0, 255, 255), width=2)
    return out


def _thumbnail(photo: Image.Image, max_side: int = TILE_MAX_SIDE) -> Image.Image:
    if max(photo.size) <= max_side:
        return photo
    s = max_side / max(photo.size)
    return photo.resize((max(1, round(photo.width * s)), max(1, round(photo.height * s))), Image.BILINEAR)


def bar_chart(tokens: list[str], series: dict[str, list[np.ndarray]], panel_titles: list[str], title: str,
              ylabel: str = "attention weight") -> Image.Image:
    """Grouped bars: one panel per layer, one bar group per word piece, one bar per series (query)."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe from several threads

    n_panels = max(1, len(panel_titles))
    names = list(series)
    width = min(16.0, max(5.0, 1.0 + n_panels * (0.9 + 0.55 * len(tokens))))
    fig = Figure(figsize=(width, 3.4 + 0.2 * ((len(names) + 2) // 3)), dpi=100, layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False, sharey=True)[0]
    bw = 0.8 / max(1, len(names))
    x = np.arange(len(tokens))
    for p, ax in enumerate(axes):
        for j, name in enumerate(names):
            vals = series[name][p] if p < len(series[name]) else np.zeros(len(tokens))
            ax.bar(x - 0.4 + bw * (j + 0.5), vals, bw, label=name, color=f"C{j}")
        ax.set_xticks(x, tokens, rotation=30 if len(tokens) > 5 else 0, ha="right" if len(tokens) > 5 else "center")
        ax.set_title(panel_titles[p] if p < len(panel_titles) else "", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    if len(names) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(3, len(names)),
                   fontsize=8, frameon=False)
    fig.suptitle(textwrap.fill(title, width=int(width * 11)), fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


# --------------------------------------------------------------------------------------------------------------
# what the tabs compute
@dataclass
class AttentionView:
    """What the click-on-a-patch view needs from the last attention run (kept per visitor in gr.State)."""

    photo: Image.Image
    meta: ImageMeta
    grid: tuple[int, int]
    tokens: list[str]
    encoder: list[np.ndarray]  # per encoder layer [N, N], heads averaged
    fusion: list[np.ndarray]  # per fusion layer [N, T], heads averaged
    prompt: str


@dataclass
class ConceptView:
    """The prompt's concept map as the Attention tab shows it (``image`` None: the checkpoint has none)."""

    image: Image.Image | None
    caption: str


def concept_view(photo: Image.Image, concept_map, prompt: str) -> ConceptView:
    """P(prompt | pixel) [H, W] (or None) -> the heat map on ``photo`` (absolute 0..1 colours) and its caption."""
    if concept_map is None:
        return ConceptView(None, "<sub>This checkpoint has no concept map (it was trained without one), so there is "
                                 "no per-pixel P(prompt | pixel) to show; the attention maps below still are.</sub>")
    m = torch.as_tensor(concept_map).float().clamp(0, 1)
    peak, share = float(m.max()), float((m > 0.5).float().mean())
    caption = (f"**concept map: where '{prompt}' is, by the image encoder's concept map (P(prompt | pixel))**. "
               f"Max probability {peak:.2f}; {share:.0%} of the photo above 0.5. Colours on an absolute scale, "
               f"dark = 0 to bright yellow = 1, so a concept that is nowhere leaves the photo evenly dimmed.")
    return ConceptView(probability_overlay(photo, m), caption)


def _layers(attention: dict, prefix: str, suffix: str) -> list[torch.Tensor]:
    found = {}
    for k, v in attention.items():
        if k.startswith(prefix) and k.endswith(suffix):
            found[int(k[len(prefix):-len(suffix)])] = v
    return [found[i] for i in sorted(found)]


def segment(service: SegmentationService, image, text: str, threshold: float):
    """-> (AnnotatedImage value, colour map, summary markdown, prompts)."""
    require_image(image)
    prompts = parse_prompts(text)
    photo, key = prepare_image(image)
    t0 = time.perf_counter()
    results, cached = service.predict(photo, key, prompts, threshold)
    dt = time.perf_counter() - t0
    layers, colours, lines = [], {}, []
    for i, r in enumerate(results):
        if len(r) == 0:
            lines.append(f"- no {r.prompt} found, presence {r.presence:.2f}")
            continue
        n = len(r)
        lines.append(f"- **{r.prompt}**: {n} instance{'s' if n > 1 else ''} found, presence {r.presence:.2f}")
        for j, (mask, score) in enumerate(zip(r.masks, r.scores)):
            label = f"{r.prompt} #{j + 1} ({float(score):.2f})"
            layers.append((mask.numpy().astype(np.float32), label))
            colours[label] = instance_colour(i, j)
    how = "image embedding reused from cache" if cached else "image encoded"
    lines.append(f"\n<sub>{how}; {dt:.2f} s for {len(prompts)} prompt{'s' if len(prompts) > 1 else ''} at score "
                 f"threshold {float(threshold):.2f}. Presence = probability that the concept is in the image at all; "
                 f"each score = match x presence.</sub>")
    return (photo, layers), colours, "\n".join(lines), prompts


def explain(service: SegmentationService, image, prompt: str, threshold: float, n_queries: int):
    """The concept map and the attention of the best object queries for one prompt (one forward pass).

    -> (image gallery [(tile, caption)], word bar chart, AttentionView, caption markdown, ConceptView: the
    prompt's concept map on the photo, image None for a checkpoint without one).
    """
    require_image(image)
    prompts = parse_prompts(prompt)
    prompt = prompts[0]
    photo, key = prepare_image(image)
    (r,), _ = service.predict(photo, key, [prompt], threshold, return_attention=True, return_concept_map=True)
    att = r.attention
    meta, grid, tokens = att["meta"], tuple(att["grid"]), list(att["tokens"])
    h, w = grid
    scores = att["query_scores"]
    order = list(att["query_order"])
    ranked = [q + 1 for q in np.argsort(-np.asarray(scores), kind="stable").tolist()]
    queries = (order + [q for q in ranked if q not in order])[:max(1, int(n_queries))]

    img_layers = [a.float().mean(0).numpy() for a in _layers(att, "decoder.layer", ".image_cross_attn")]
    txt_layers = [a.float().mean(0).numpy() for a in _layers(att, "decoder.layer", ".text_cross_attn")]
    tile = _thumbnail(photo)
    rows = [(0, "presence token")] + [
        (q, f"query {q} ({'instance #%d, ' % (order.index(q) + 1) if q in order else ''}score {scores[q - 1]:.2f})")
        for q in queries]
    gallery = []
    for q, name in rows:
        for li, a in enumerate(img_layers):
            gallery.append((heat_overlay(tile, a[q].reshape(h, w), meta), f"{name} · decoder layer {li + 1}"))

    t = len(tokens)
    series = {name: [a[q, :t] for a in txt_layers] for q, name in rows}
    chart = bar_chart(tokens, series, [f"decoder layer {i + 1}" for i in range(len(txt_layers))],
                      f"Which words of '{prompt}' each query listens to (text cross-attention, heads averaged)")

    view = AttentionView(
        photo=photo, meta=meta, grid=grid, tokens=tokens, prompt=prompt,
        encoder=[a.float().mean(0).numpy() for a in _layers(att, "encoder.layer", ".self_attn")],
        fusion=[a.float().mean(0).numpy()[:, :t] for a in _layers(att, "fusion.layer", ".text_cross_attn")])
    found = (f"{len(r)} instance{'s' if len(r) != 1 else ''} above the threshold" if len(r) else "nothing above the threshold")
    caption = (f"**{prompt}**: presence {r.presence:.2f}, {found}. Rows: the presence token, then the "
               f"{len(queries)} best object queries; columns: decoder layers 1 to {len(img_layers)}. "
               f"Token grid {h}x{w} (one cell = one 16 px patch of the {meta.input_size} px model input).")
    return gallery, chart, view, caption, concept_view(photo, r.concept_map, prompt)


def patch_attention(view: AttentionView, x: float, y: float):
    """Encoder self-attention (and fusion attention to the words) from the patch under pixel (x, y) of view.photo.

    -> (photo with a marker, gallery [(heat map, caption)], word bar chart or None, caption markdown).
    """
    h, w = view.grid
    rh, rw = view.meta.resized_size
    s = view.meta.input_size
    px = min(max(float(x), 0.0), view.photo.width - 1) * rw / view.photo.width
    py = min(max(float(y), 0.0), view.photo.height - 1) * rh / view.photo.height
    col, row = min(w - 1, int(px * w / s)), min(h - 1, int(py * h / s))
    n = row * w + col
    tile = _thumbnail(view.photo)
    k = tile.width / view.photo.width
    point = (x * k, y * k)
    marked = mark_point(view.photo, (x, y))
    gallery = [(heat_overlay(tile, a[n].reshape(h, w), view.meta, point=point),
                f"encoder layer {i + 1}: patch (row {row}, col {col}) attends to…") for i, a in enumerate(view.encoder)]
    chart = None
    if view.fusion:
        chart = bar_chart(view.tokens, {f"patch ({row}, {col})": [a[n] for a in view.fusion]},
                          [f"fusion layer {i + 1}" for i in range(len(view.fusion))],
                          f"Which words of '{view.prompt}' this patch listens to (fusion cross-attention)")
    caption = f"Patch row {row}, column {col} of the {h}x{w} token grid (pixel x={x:.0f}, y={y:.0f})."
    if not view.encoder:
        caption += " This model has no encoder self-attention layers."
    return marked, gallery, chart, caption


# --------------------------------------------------------------------------------------------------------------
# the Blocks
INTRO = """# sam-lite: segment anything you can name
Upload a photo (or pick an example), type what to find (**red car**; several things: **car, person**) and press
**Segment**. Every instance gets its own layer; the presence probability says whether the concept is in the photo at
all. The **Attention** tab shows how the model found it."""

CONCEPT_TEXT = """**Concept map: which patches are relevant to the words.** Once per image, the image encoder paints
every 8 px cell with an embedding in the same sentence space as the text encoder's prompt embedding; comparing the
prompt with the concepts the map knows gives P(prompt | pixel). The decoder reads this map as a prior before any
query looks at the image."""

QKV_IMAGE = """**Object queries look at the image** (decoder image cross-attention). **Q**: the object query, a learned
slot that asks "is my object here?"; **K**: every image patch, compared with the query to decide how relevant it is;
**V**: what each patch passes on to the query. Bright = the patches this query listened to. The presence token is a
special query that only decides *whether* the concept is in the image."""

QKV_TEXT = """**Which word the query listens to** (decoder text cross-attention). **Q**: the object query; **K**: each
word piece of the prompt (`[CLS]` and `[SEP]` are the tokenizer's start and end markers); **V**: the word's meaning
vector, which the query mixes into itself in these proportions."""

QKV_SELF = """**Patches look at each other** (image encoder self-attention). Click a point on the photo. **Q**: the
patch you clicked; **K**: every patch of the image, including itself, scored for how related it is; **V**: the
features those patches pass back, so the clicked patch's new feature is a weighted mix of them. The bar chart is the
fusion layer: the same patch as Q, with the prompt's words as K and V."""


def build_demo(predictor: SamLitePredictor | SegmentationService) -> gr.Blocks:
    """The two-tab Blocks app around a predictor (not launched; call ``.queue().launch()`` or :func:`serve`)."""
    service = predictor if isinstance(predictor, SegmentationService) else SegmentationService(predictor)
    config = service.predictor.model.config

    @user_errors
    def on_segment(image, text, threshold):
        value, colours, summary, prompts = segment(service, image, text, threshold)
        return (gr.AnnotatedImage(value=value, color_map=colours), summary,
                gr.Dropdown(choices=prompts, value=prompts[0]))

    @user_errors
    def on_explain(image, prompt, threshold, n_queries):
        gallery, chart, view, caption, concept = explain(service, image, prompt, threshold, n_queries)
        marked, self_gallery, words, self_caption = patch_attention(view, view.photo.width / 2,
                                                                    view.photo.height / 2)
        concept_image = gr.Image(value=concept.image, visible=concept.image is not None)
        return (concept_image, concept.caption, gallery, chart, caption, view, marked, self_gallery, words,
                self_caption)

    def on_tab(image, prompt, threshold, n_queries):
        if image is None or not (prompt or "").strip():
            return [gr.skip()] * len(explain_outputs)
        try:
            return on_explain(image, prompt, threshold, n_queries)
        except gr.Error:
            return [gr.skip()] * len(explain_outputs)

    @user_errors
    def on_click(view, evt: gr.SelectData):
        if view is None:
            raise gr.Error("Press 'Show attention' first.")
        x, y = evt.index[0], evt.index[1]
        return patch_attention(view, x, y)

    with gr.Blocks(title="sam-lite") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Segment"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = readable_upload_errors(gr.Image(
                        label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=420))
                    prompt = gr.Textbox(label="What to segment", placeholder="red car   (several: car, person)",
                                        max_length=MAX_PROMPT_CHARS, max_lines=1)
                    threshold = gr.Slider(0.0, 1.0, value=float(getattr(config, "score_threshold", 0.5)), step=0.01, label="Score threshold", elem_id="threshold",
                                          info="keep instances whose score (match x presence) is at least this")
                    run = gr.Button("Segment", variant="primary")
                with gr.Column(scale=1):
                    result = gr.AnnotatedImage(label="Instances", height=420, format="jpeg", elem_id="result")
                    summary = gr.Markdown(elem_id="summary")
            examples = [[str(EXAMPLES_DIR / f), p] for f, p in EXAMPLES if (EXAMPLES_DIR / f).is_file()]
            if examples:
                gr.Examples(examples, inputs=[image, prompt], label="Examples (COCO photos, CC BY / CC BY-SA: "
                            "see examples/CREDITS.md)")
        with gr.Tab("Attention") as attn_tab:
            with gr.Row():
                attn_prompt = gr.Dropdown(label="Prompt", choices=[], value=None, allow_custom_value=True,
                                          info="the last prompts from the Segment tab, or type one")
                n_queries = gr.Slider(1, 4, value=2, step=1, label="Object queries to show")
                explain_btn = gr.Button("Show attention", variant="primary")
            attn_caption = gr.Markdown(elem_id="attn-caption")
            gr.Markdown(CONCEPT_TEXT)
            concept_image = gr.Image(label="Concept map: P(prompt | pixel) on the photo", type="pil",
                                     interactive=False, elem_id="concept-map", height=420,
                                     visible=bool(getattr(config, "concept_map", False)))
            concept_caption = gr.Markdown(elem_id="concept-caption")
            gr.Markdown(QKV_IMAGE)
            attn_gallery = gr.Gallery(label="Cross-attention over the image (rows: presence token, then queries; "
                                      "columns: decoder layers)", elem_id="attn-gallery",
                                      columns=min(4, max(1, config.decoder_layers)), height=820,
                                      object_fit="contain")
            gr.Markdown(QKV_TEXT)
            word_chart = gr.Image(label="Cross-attention over the prompt's words", type="pil", interactive=False)
            gr.Markdown(QKV_SELF)
            view_state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    click_photo = gr.Image(label="Click a point", type="pil", interactive=False, elem_id="click-photo")
                    self_caption = gr.Markdown(elem_id="self-caption")
                with gr.Column(scale=2):
                    self_gallery = gr.Gallery(label="Encoder self-attention from the clicked patch", elem_id="self-gallery",
                                              columns=min(3, max(1, config.encoder_layers)),
                                              height="auto", object_fit="contain")
            patch_words = gr.Image(label="Fusion: which words the clicked patch listens to", type="pil",
                                   interactive=False)

        seg_inputs = [image, prompt, threshold]
        run.click(on_segment, seg_inputs, [result, summary, attn_prompt], api_name="segment")
        prompt.submit(on_segment, seg_inputs, [result, summary, attn_prompt], api_name=False)
        explain_outputs = [concept_image, concept_caption, attn_gallery, word_chart, attn_caption, view_state,
                           click_photo, self_gallery, patch_words, self_caption]
        explain_inputs = [image, attn_prompt, threshold, n_queries]
        explain_btn.click(on_explain, explain_inputs, explain_outputs, api_name="attention")
        attn_tab.select(on_tab, explain_inputs, explain_outputs, api_name=False)
        click_photo.select(on_click, [view_state], [click_photo, self_gallery, patch_words, self_caption],
                           api_name=False)
    return demo


def serve(predictor: SamLitePredictor, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
          concurrency: int = 2, warm_up: bool = True) -> gr.Blocks:
    """Build, queue and launch. ``block=False`` returns at once with the server running (call ``.close()``)."""
    service = SegmentationService(predictor)
    if warm_up:
        service.warm_up()
    demo = build_demo(service)
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=False,
                max_file_size=MAX_UPLOAD, allowed_paths=[str(EXAMPLES_DIR)], inbrowser=False, ssr_mode=False)
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None, prog: str = "sam-lite demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Start the sam-lite Gradio demo.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help=f"checkpoint directory (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--concurrency", type=int, default=2, help="requests worked on at once (default 2)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        print(f"error: checkpoint directory not found: {ckpt}\n"
              f"Train one (sam-lite train ...) or point --checkpoint at a directory with config.json and "
              f"model.safetensors.", file=sys.stderr)
        return 2
    try:
        predictor = SamLitePredictor.from_pretrained(ckpt)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: cannot load checkpoint {ckpt}: {e}", file=sys.stderr)
        return 2
    port = args.port or free_port(args.host)
    print(f"sam-lite demo on http://{args.host}:{port}  (checkpoint {ckpt}; Ctrl+C stops it)", flush=True)
    try:
        serve(predictor, args.host, port, block=True, concurrency=args.concurrency)
    except OSError as e:
        print(f"error: cannot start the server on {args.host}:{port}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
