"""Pictures the demo shows: instance colours, heat maps over the photo and bar charts of attention weights."""

import colorsys
import io
import textwrap

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..processing import ImageMeta

TILE_MAX_SIDE = 384  # heat-map tiles in the attention galleries
PROMPT_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


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


def thumbnail(photo: Image.Image, max_side: int = TILE_MAX_SIDE) -> Image.Image:
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


def draw_prompt(photo: Image.Image, points=(), labels=(), box=None, corner=None, exemplar: bool = False
                ) -> Image.Image:
    """A copy of ``photo`` with a visual prompt on it (pixels of ``photo``): positive points green, negative ones
    red, the box yellow (cyan when it is an exemplar), a pending first box corner as a yellow cross."""
    out = photo.convert("RGB")
    d = ImageDraw.Draw(out)
    r = max(4, round(max(out.size) / 90))
    width = max(2, round(max(out.size) / 300))
    if box is not None:
        d.rectangle([float(v) for v in box], outline=(0, 229, 255) if exemplar else (255, 212, 0), width=width)
    if corner is not None:
        x, y = corner
        d.line([x - r, y - r, x + r, y + r], fill=(255, 212, 0), width=width)
        d.line([x - r, y + r, x + r, y - r], fill=(255, 212, 0), width=width)
    for (x, y), label in zip(points, labels):
        d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 200, 60) if label == 1 else (230, 30, 30),
                  outline=(255, 255, 255), width=max(1, width // 2))
    return out
