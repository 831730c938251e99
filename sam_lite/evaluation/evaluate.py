"""Evaluate a sam-lite (or CLIPSeg-style baseline) checkpoint on a COCO-format split.

    python scripts/evaluate.py --data ../shared/data/coco_mini --checkpoint checkpoints/sam-lite-base \
        --split val --threshold 0.5 --calibrate --out results.json

One ``set_image`` per image and one batched ``predict`` for all prompts of that image. Predictions are made once at
a low score floor; metrics at ``--threshold`` (and, with ``--calibrate``, at every grid threshold 0.05..0.95) are
read from the same pass, and mask AP uses every prediction down to the floor (as COCO AP should).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch

from .metrics import DEFAULT_THRESHOLDS, PROMPT_TYPES, SegmentationMetrics
from ..device import add_device_argument
from .opening import open_dataset_and_predictor, validation_half

TABLE_COLUMNS = [("n", "n"), ("gIoU", "gIoU"), ("cIoU", "cIoU"), ("presence_acc", "pres.acc"), ("IL_MCC", "IL-MCC"),
                 ("AP", "AP"), ("AP50", "AP50"), ("F1_50", "F1@.5")]


def group_by_image(samples: Sequence) -> "OrderedDict[int, list]":
    """Samples -> image id -> its samples, in first-seen order."""
    groups: OrderedDict[int, list] = OrderedDict()
    for s in samples:
        groups.setdefault(int(s.image_id), []).append(s)
    return groups


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan")}
    v = sorted(values)
    return {"mean": statistics.fmean(v), "median": statistics.median(v), "p90": v[min(len(v) - 1, int(0.9 * len(v)))]}


def evaluate(predictor, coco, samples: Sequence, score_threshold: float = 0.5, calibrate: bool = False,
             presence_threshold: float | None = None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
             ap_min_score: float = 0.05, compute_ap: bool = True, progress: bool = True,
             warmup: bool = True) -> dict[str, Any]:
    """Run ``predictor`` on every sample and return the metrics.

    predictor: ``set_image(path)`` and ``predict(list_of_prompts, score_threshold=t)`` -> list of
    ``PredictionResult``; coco: has ``instance_masks(sample)`` (bool [N, H, W] at the original size); samples:
    ``EvalSample`` s (image_id, file_path, prompt, prompt_type, ann_ids).

    ``presence_threshold`` (default: ``score_threshold``) is where presence accuracy splits "present" from
    "absent". Returns ``{"threshold", "presence_threshold", "metrics": {prompt type -> metrics},
    "latency_ms": {...}, "n_images", "n_samples"}`` and,
    with ``calibrate``, ``"calibration"``: the grid threshold maximising gIoU and the one maximising presence
    accuracy, their curves, and the metrics at the best-gIoU threshold. ``warmup`` runs the first image once
    before timing (so one-off initialisation does not count as latency).
    """
    from tqdm import tqdm

    grid = list(thresholds) if calibrate else []
    metrics = SegmentationMetrics(threshold=score_threshold, thresholds=grid, ap_min_score=ap_min_score,
                                  compute_ap=compute_ap, best_instance_presence=getattr(
                                      getattr(predictor, "inference_config", None), "best_instance_presence", None))
    predict_threshold = metrics.min_score
    groups = group_by_image(samples)
    set_image_ms: list[float] = []
    predict_ms: list[float] = []  # per image (all its prompts in one call)
    per_prompt_ms: list[float] = []
    if warmup and groups:  # lazy initialisation (caches, first-call allocations) is not part of the latency
        first = next(iter(groups.values()))
        predictor.set_image(first[0].file_path)
        predictor.predict([s.prompt for s in first], score_threshold=predict_threshold)
    bar = tqdm(groups.items(), total=len(groups), desc="evaluate", unit="img", disable=not progress, leave=False)
    for image_id, group in bar:
        t0 = time.perf_counter()
        predictor.set_image(group[0].file_path)
        t1 = time.perf_counter()
        results = predictor.predict([s.prompt for s in group], score_threshold=predict_threshold)
        t2 = time.perf_counter()
        if len(results) != len(group):
            raise RuntimeError(f"predictor returned {len(results)} results for {len(group)} prompts")
        set_image_ms.append(1000 * (t1 - t0))
        predict_ms.append(1000 * (t2 - t1))
        per_prompt_ms.append(1000 * (t2 - t1) / len(group))
        for s, r in zip(group, results):
            gt = coco.instance_masks(s)
            metrics.update(s.prompt_type, r.masks, r.scores, r.presence, gt, image_id, s.prompt)
        if progress:
            bar.set_postfix(ms_per_img=f"{statistics.fmean(a + b for a, b in zip(set_image_ms, predict_ms)):.0f}")
    bar.close()

    out: dict[str, Any] = {
        "threshold": float(score_threshold),
        "presence_threshold": float(score_threshold if presence_threshold is None else presence_threshold),
        "ap_min_score": float(ap_min_score) if compute_ap else None,
        "n_images": len(groups),
        "n_samples": len(metrics),
        "metrics": metrics.compute(score_threshold, presence_threshold),
        "latency_ms": {
            "set_image": _summary(set_image_ms),
            "predict_per_image": _summary(predict_ms),
            "predict_per_prompt": _summary(per_prompt_ms),
            "total_per_image": _summary([a + b for a, b in zip(set_image_ms, predict_ms)]),
            "prompts_per_image": len(metrics) / max(1, len(groups)),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
        },
    }
    if calibrate and len(metrics):
        g = metrics.calibrate("gIoU")
        p = metrics.calibrate("presence_acc")
        at_best = metrics.compute(g["threshold"], presence_threshold, with_ap=False)
        for k, v in at_best.items():  # AP does not depend on the threshold
            v.update({m: out["metrics"][k].get(m) for m in ("AP", "AP50", "AP75") if m in out["metrics"][k]})
        out["calibration"] = {"grid": [float(t) for t in thresholds], "best_gIoU": g, "best_presence_acc": p,
                              "metrics_at_best_gIoU_threshold": at_best,
                              "note": "thresholds chosen on this split: report test numbers at a threshold "
                                      "calibrated on validation"}
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"


def format_table(metrics: dict[str, dict]) -> str:
    """Rows: prompt types ("all" first); columns: n, gIoU, cIoU, presence acc, IL-MCC, AP, AP50, F1@.5."""
    header = ["prompt type"] + [name for _, name in TABLE_COLUMNS]
    rows = [[group] + [_fmt(m.get(key)) for key, _ in TABLE_COLUMNS] for group, m in metrics.items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))  # noqa
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path("..") / "shared" / "data" / "coco_mini"),
                    help="COCO-format dataset: DIR/annotations.json + DIR/images/ (default: %(default)s)")
    ap.add_argument("--checkpoint", default=str(Path("checkpoints") / "sam-lite-base"),
                    help="checkpoint directory (default: %(default)s)")
    ap.add_argument("--split", default="val", choices=["val", "train", "all"])
    ap.add_argument("--threshold", type=float, default=None,
                    help="score threshold of reported metrics (default: the checkpoint's calibrated threshold)")
    ap.add_argument("--presence-threshold", type=float, default=None,
                    help="presence probability counted as 'present' in presence accuracy (default: the "
                         "checkpoint's calibrated presence_threshold)")
    ap.add_argument("--calibrate", action="store_true",
                    help="also find the threshold maximising gIoU / presence accuracy over 0.05..0.95")
    ap.add_argument("--out", default="results.json", help="write the metrics here as JSON")
    ap.add_argument("--subset", choices=["full", "all"], default="full",
                    help="full: only the split's fully labelled photos (every thing category labelled, as in COCO; "
                         "comparable with earlier results); all: also the partially labelled ones, whose prompts "
                         "cover only their labelled categories (default: %(default)s)")
    ap.add_argument("--max-images", type=int, default=None, help="only the first N images of the split")
    ap.add_argument("--half", choices=["first", "second"], default=None,
                    help="only the first or second half of the split's images: alternate photos in id order "
                         "(calibrate on one, report the other)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the evaluation prompts (negatives)")
    ap.add_argument("--no-ap", action="store_true", help="skip COCO mask AP (faster)")
    ap.add_argument("--ap-min-score", type=float, default=0.05,
                    help="predictions scoring below this are not kept for AP (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_device_argument(ap)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("threshold", "presence_threshold"):
        v = getattr(args, name)
        if v is not None and not 0.0 <= v <= 1.0:
            print(f"error: --{name.replace('_', '-')} must be in [0, 1], got {v}", file=sys.stderr)
            return 2
    if args.max_images is not None and args.max_images < 1:
        print(f"error: --max-images must be >= 1, got {args.max_images}", file=sys.stderr)
        return 2
    opened = open_dataset_and_predictor(args.data, args.checkpoint, args.threads, args.device)
    if opened is None:
        return 1
    coco, predictor = opened  # the checkpoint's model type says which predictor
    policy = getattr(predictor, "inference_config", None)  # thresholds stored beside the weights
    if args.threshold is None:
        args.threshold = float(getattr(policy, "score_threshold", 0.5))
    if args.presence_threshold is None:
        args.presence_threshold = float(getattr(policy, "presence_threshold", 0.5))
    image_ids = coco.split(args.split)
    if args.subset == "full":
        image_ids = [i for i in image_ids if coco.is_fully_labelled(i)]
    image_ids = validation_half(image_ids, args.half)
    if args.max_images is not None:
        image_ids = image_ids[: args.max_images]
    samples = coco.eval_samples(image_ids, seed=args.seed)
    if not samples:
        print(f"error: no evaluation samples in split {args.split!r} of {args.data}", file=sys.stderr)
        return 1
    counts = {t: sum(s.prompt_type == t for s in samples) for t in PROMPT_TYPES}
    print(f"{args.checkpoint}: {len(image_ids)} images, {len(samples)} samples "
          f"({', '.join(f'{k} {v}' for k, v in counts.items() if v)}) from {args.data} [{args.split}, "
          f"{args.subset}{', half ' + args.half if args.half else ''}]")
    t0 = time.perf_counter()
    result = evaluate(predictor, coco, samples, score_threshold=args.threshold, calibrate=args.calibrate,
                      presence_threshold=args.presence_threshold,
                      ap_min_score=args.ap_min_score, compute_ap=not args.no_ap, progress=not args.quiet)
    result.update({"checkpoint": str(args.checkpoint), "model_type": predictor.model.model_type,
                   "data": str(args.data), "split": args.split, "subset": args.subset, "max_images": args.max_images,
                   "half": args.half, "seed": args.seed, "device": str(predictor.device),
                   "wall_s": time.perf_counter() - t0})
    print(f"\nmetrics at score threshold {args.threshold:g} (presence threshold {args.presence_threshold:g}):")
    print(format_table(result["metrics"]))
    lat = result["latency_ms"]
    print(f"\nlatency: {lat['total_per_image']['mean']:.0f} ms/image (set_image {lat['set_image']['mean']:.0f} ms, "
          f"{lat['predict_per_prompt']['mean']:.1f} ms/prompt, {lat['prompts_per_image']:.1f} prompts/image)")
    if "calibration" in result:
        c = result["calibration"]
        print(f"\ncalibration on this split: best gIoU {c['best_gIoU']['value']:.3f} at threshold "
              f"{c['best_gIoU']['threshold']:.2f}; best presence acc {c['best_presence_acc']['value']:.3f} at "
              f"{c['best_presence_acc']['threshold']:.2f}")
        print(format_table(c["metrics_at_best_gIoU_threshold"]))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_json_safe(result), indent=2) + "\n")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
