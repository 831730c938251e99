"""Evaluate visual prompts next to text prompts, on the same ground-truth objects.

    python scripts/evaluate_geometric.py --checkpoint runs/geo/final --data ../shared/data/coco_mini --out geo.json

On the fully labelled validation photos (every labelled, exhaustively annotated, non-crowd instance; stuff included
where it is labelled):

* **single-click mIoU**: one positive click per instance at the centre of its largest inscribed region (the maximum
  of the distance transform, as in the SAM papers; the photo border counts as the object's border), IoU of the
  returned mask with the instance, mean over instances. Also with ``multimask_output``: the alternative with the
  highest predicted IoU (SAM's choice when a click is ambiguous; the predictor's own first answer ranks by score x
  mask confidence instead) and the best of the alternatives (oracle).
* **box mIoU**: the instance's tight box as the prompt.
* **exemplar gIoU**: per (photo, concept) the box of the concept's largest instance as the exemplar, target: every
  instance of the concept; IoU of the union of the returned masks with the union of the instances (as gIoU), mean
  over (photo, concept); also with the concept's name as text (text + exemplar).
* **text prompts on the same objects**: the concept name's gIoU on the same (photo, concept) samples, and the text
  instance mIoU: for each instance, the IoU of the best-matching mask returned for its concept name.

Point / box answers take no threshold (a click always gets its best mask); exemplar and text answers use the score
threshold (default: the checkpoint's calibrated one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from .instance_matching import mask_iou_matrix
from ..device import add_device_argument
from .opening import open_dataset_and_predictor


def click_point(mask) -> tuple[float, float]:
    """The centre of the largest inscribed region of a non-empty bool mask [H, W]: the pixel farthest from the
    mask's border (the photo's edge counts as a border; ties: the first in row-major order) -> (x, y)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or not m.any():
        raise ValueError(f"click_point needs a non-empty 2-D mask, got shape {m.shape} with {int(m.sum())} pixels")
    dist = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


def mask_box(mask) -> list[float]:
    """Tight xyxy box of a non-empty bool mask [H, W] in pixel indices (as predictor boxes and SAM prompts)."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def mask_iou(a: Tensor, b: Tensor) -> float:
    """IoU of two bool masks [H, W] (1.0 when both are empty)."""
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def union_iou(pred_masks: Tensor, gt_masks: Tensor) -> float:
    """IoU of the union of predicted masks [N, H, W] with the union of GT masks [M, H, W] (a gIoU sample)."""
    h, w = gt_masks.shape[-2:]
    p = pred_masks.any(0) if len(pred_masks) else torch.zeros(h, w, dtype=torch.bool)
    g = gt_masks.any(0) if len(gt_masks) else torch.zeros(h, w, dtype=torch.bool)
    return mask_iou(p, g)


def best_match_iou(pred_masks: Tensor, gt_masks: Tensor) -> list[float]:
    """For each GT instance [M, H, W], the best IoU any predicted mask [N, H, W] reaches with it (0 without any)."""
    if len(gt_masks) == 0:
        return []
    if len(pred_masks) == 0:
        return [0.0] * len(gt_masks)
    return mask_iou_matrix(pred_masks.bool(), gt_masks.bool()).max(0).tolist()


def _first(masks: Tensor, shape: tuple[int, int]) -> Tensor:
    return masks[0] if len(masks) else torch.zeros(shape, dtype=torch.bool)


def _mean(v: Sequence[float]) -> float:
    return float(statistics.fmean(v)) if len(v) else float("nan")


class GeometricMetrics:
    """Per-instance and per-(photo, concept) IoUs by prompt kind; :meth:`compute` gives the means, for all
    objects and split into things and stuff."""

    INSTANCE = ("click", "click_multimask_top_iou", "click_multimask_oracle", "box", "text_instance")
    CONCEPT = ("exemplar", "exemplar_text", "text")

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[str, float]]] = {k: [] for k in self.INSTANCE + self.CONCEPT}

    def add(self, kind: str, group: str, iou: float) -> None:
        self.values[kind].append((group, float(iou)))

    def compute(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for group in ("all", "thing", "stuff"):
            row: dict[str, float] = {}
            for k, vals in self.values.items():
                v = [x for g, x in vals if group == "all" or g == group]
                if not v:
                    continue
                name = f"{k}_mIoU" if k in self.INSTANCE else f"{k}_gIoU"
                row[name] = _mean(v)
                row[f"n_{k}"] = len(v)
            out[group] = row
        return out


@torch.inference_mode()
def evaluate_geometric(predictor, coco, image_ids: Sequence[int], score_threshold: float,
                       progress: bool = True) -> dict:
    """Run every prompt kind of the module docstring on ``image_ids``. ``predictor``: ``set_image(path)`` and
    ``predict(prompt, points=, box=, exemplars=, multimask_output=, score_threshold=)`` (SamLitePredictor);
    ``visual=False`` predictors (text-only checkpoints) get the text metrics only. Returns {"metrics", "n_images",
    "latency_ms_per_image"}."""
    from tqdm import tqdm

    config = getattr(getattr(predictor, "model", None), "config", None)
    visual = config is None or bool(config.geometric_prompts)
    metrics = GeometricMetrics()
    seconds = []
    for iid in tqdm(image_ids, desc="evaluate geometric", unit="img", disable=not progress, leave=False):
        present, _ = coco.concepts_in_image(iid)
        if not present:
            continue
        t0 = time.perf_counter()
        predictor.set_image(coco.image_path(iid))
        names = sorted(present)
        texts = predictor.predict(names, score_threshold=score_threshold)
        for name, text in zip(names, texts):
            group = "stuff" if name in coco.stuff_concepts and name not in coco.thing_concepts else "thing"
            gt = torch.from_numpy(np.stack([coco.ann_mask(coco.coco.anns[a]) for a in present[name]]))
            shape = tuple(gt.shape[-2:])
            metrics.add("text", group, union_iou(text.masks, gt))
            for iou in best_match_iou(text.masks, gt):
                metrics.add("text_instance", group, iou)
            if not visual:
                continue
            for m in gt:
                click = list(click_point(m.numpy()))
                one = predictor.predict(points=[click])
                metrics.add("click", group, mask_iou(_first(one.masks, shape), m))
                alts = predictor.predict(points=[click], multimask_output=True)
                top = int(alts.iou_predictions.argmax()) if len(alts.masks) else 0  # SAM's pick: best predicted IoU
                metrics.add("click_multimask_top_iou", group, mask_iou(_first(alts.masks[top:], shape), m))
                metrics.add("click_multimask_oracle", group,
                            max([mask_iou(a, m) for a in alts.masks], default=0.0))
                metrics.add("box", group, mask_iou(_first(predictor.predict(box=mask_box(m)).masks, shape), m))
            largest = gt[int(gt.flatten(1).sum(1).argmax())]
            exemplar = [mask_box(largest.numpy())]
            r = predictor.predict(exemplars=exemplar, score_threshold=score_threshold)
            metrics.add("exemplar", group, union_iou(r.masks, gt))
            r = predictor.predict(name, exemplars=exemplar, score_threshold=score_threshold)
            metrics.add("exemplar_text", group, union_iou(r.masks, gt))
        seconds.append(time.perf_counter() - t0)
    return {"metrics": metrics.compute(), "n_images": len(seconds), "visual_prompts": visual,
            "latency_ms_per_image": 1000 * _mean(seconds)}


TABLE = [("click_mIoU", "1-click"), ("click_multimask_top_iou_mIoU", "1-click top-IoU"),
         ("click_multimask_oracle_mIoU", "1-click oracle"), ("box_mIoU", "box"), ("text_instance_mIoU", "text inst."),
         ("exemplar_gIoU", "exemplar gIoU"), ("exemplar_text_gIoU", "exemplar+text"), ("text_gIoU", "text gIoU")]


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    header = ["objects", "n inst.", "n concepts"] + [name for _, name in TABLE]
    rows = []
    for group, m in metrics.items():
        if not m:
            continue
        rows.append([group, str(m.get("n_text_instance", 0)), str(m.get("n_text", 0))]
                    + [f"{m[k]:.3f}" if k in m else "-" for k, _ in TABLE])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))  # noqa
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="evaluate_geometric", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path("..") / "shared" / "data" / "coco_mini"))
    ap.add_argument("--checkpoint", default=str(Path("checkpoints") / "sam-lite-base"))
    ap.add_argument("--split", default="val", choices=["val", "train", "all"])
    ap.add_argument("--subset", choices=["full", "all"], default="full",
                    help="full: only fully labelled photos (default); all: every photo of the split")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=None,
                    help="score threshold of exemplar and text answers (default: the checkpoint's)")
    ap.add_argument("--out", default=None, help="write the metrics here as JSON")
    ap.add_argument("--threads", type=int, default=None)
    add_device_argument(ap)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"error: --threshold must be in [0, 1], got {args.threshold}", file=sys.stderr)
        return 2
    opened = open_dataset_and_predictor(args.data, args.checkpoint, args.threads, args.device)
    if opened is None:
        return 1
    coco, predictor = opened
    image_ids = coco.split(args.split)
    if args.subset == "full":
        image_ids = [i for i in image_ids if coco.is_fully_labelled(i)]
    image_ids = image_ids[: args.max_images]
    threshold = predictor.inference_config.score_threshold if args.threshold is None else args.threshold
    if not predictor.model.config.geometric_prompts:
        print(f"{args.checkpoint} has no geometric prompts: text prompts only")
    result = evaluate_geometric(predictor, coco, image_ids, threshold, progress=not args.quiet)
    result.update(checkpoint=str(args.checkpoint), data=str(args.data), split=args.split, subset=args.subset,
                  score_threshold=threshold)
    print(f"{args.checkpoint}: {result['n_images']} photos [{args.split}, {args.subset}], score threshold "
          f"{threshold:g}, {result['latency_ms_per_image']:.0f} ms/photo\n")
    print(format_table(result["metrics"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=float) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
