"""What the tabs compute: the Segment tab's instances, the Attention tab's concept map, cross-attention and
self-attention views."""

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..processing import ImageMeta
from .drawing import bar_chart, heat_overlay, instance_colour, mark_point, probability_overlay, thumbnail
from .service import SegmentationService, parse_prompts, prepare_image, require_image


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
                 f"each score = the chance that the instance is right (calibrated checkpoints; otherwise "
                 f"match x presence).</sub>")
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
    meta, grid, tokens = r.image_meta, tuple(att.grid), list(att.tokens)
    h, w = grid
    scores = r.query_scores.tolist()
    order = (r.query_indices + 1).tolist()  # rows of the decoder attention: 0 is the presence token
    ranked = [q + 1 for q in np.argsort(-np.asarray(scores), kind="stable").tolist()]
    queries = (order + [q for q in ranked if q not in order])[:max(1, int(n_queries))]

    img_layers = [layer.image_cross_attn.float().mean(0).numpy() for layer in att.decoder]
    txt_layers = [layer.text_cross_attn.float().mean(0).numpy() for layer in att.decoder]
    tile = thumbnail(photo)
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
        encoder=[layer.self_attn.float().mean(0).numpy() for layer in att.encoder],
        fusion=[layer.text_cross_attn.float().mean(0).numpy()[:, :t] for layer in att.fusion])
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
    tile = thumbnail(view.photo)
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
