"""The box protocol: what the data can show on EVERY validation photo (each one labelled for the 80 thing categories
at box level at least, ``box_labelled_category_ids``).

    python -m sam_lite.evaluation.boxes --checkpoint checkpoints/sam-lite-base --out boxes.json [--half first]

Prompts per photo: every present thing category (its ground truth: the boxes of all its non-crowd instances, mask
or box-only) and up to ``--negatives`` thing categories verified absent at box level. Reported:

* presence accuracy and AUROC (pooled over the (photo, category) pairs, and the mean of the per-category AUROCs);
  **found**: present categories with at least one instance above the score threshold;
  **rejected**: absent ones with none;
* **box F1 at IoU 0.5** (predicted boxes - the tight boxes of the masks - matched one-to-one to the GT boxes,
  Hungarian on box IoU, counts summed) and **box AP** (pycocotools, every prediction down to ``--ap-min-score``);
* **recall by object size** at the threshold (COCO small / medium / large, areas at the photo's original size);
* the per-category found rate, worst ten listed;
* the reliability table of the instance scores (a prediction is right when it matches a GT box at IoU 0.5) and its
  expected calibration error (ECE) (``scripts/calibrate_scores.py`` fits the calibration that lowers it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from ..device import add_device_argument
from ..postprocessing import keeps_best_instance
from .calibration import reliability, right_in_score_order
from .opening import open_dataset_and_predictor, validation_half
from .instance_matching import prf_from_counts
from .metrics import roc_auc

SIZES = {"small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, float("inf"))}


@dataclass
class BoxSample:
    image_id: int
    file_path: Path
    prompt: str
    category_id: int
    present: bool  # False: verified absent (no GT boxes)
    boxes: torch.Tensor  # [n, 4] xyxy photo pixels
    areas: list[float]  # [n] box areas at the original photo size


def box_samples(coco, image_ids: list[int], negatives: int = 3, seed: int = 0, stuff: bool = False
                ) -> list[BoxSample]:
    """Every present box-labelled thing category of each photo, and up to ``negatives`` verified-absent ones;
    ``stuff``: stuff categories too, on the photos labelled for stuff (a region's box: what score calibration fits
    on, so that "sky" and "grass" scores mean the same as a thing's)."""
    rng = random.Random(seed)
    out = []
    for iid in image_ids:
        info, path = coco.image_info(iid), coco.image_path(iid)
        scale = (info.get("original_width", info["width"]) / info["width"]) * \
            (info.get("original_height", info["height"]) / info["height"])
        labelled = {c for c in coco.box_labelled[iid] if stuff or coco.is_thing[c]}
        by_cat: dict[int, list] = {}
        for a in coco.image_annotations(iid):
            if a["category_id"] in labelled and not a.get("iscrowd", 0):
                by_cat.setdefault(a["category_id"], []).append(a["bbox"])
        for cid, bbs in sorted(by_cat.items()):
            xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in bbs], dtype=torch.float32)
            out.append(BoxSample(iid, path, coco.concepts[cid], cid, True, xyxy,
                                 [w * h * scale for _, _, w, h in bbs]))
        absent = sorted(c for c in coco.box_negatives[iid] if (stuff or coco.is_thing[c]) and c not in by_cat)
        for cid in rng.sample(absent, min(negatives, len(absent))):
            out.append(BoxSample(iid, path, coco.concepts[cid], cid, False, torch.zeros(0, 4), []))
    return out


def _match(pred: torch.Tensor, gt: torch.Tensor, iou_threshold: float = 0.5) -> tuple[list[int], list[int]]:
    """Hungarian matching on box IoU -> (matched prediction indices, matched GT indices) with IoU >= threshold."""
    from scipy.optimize import linear_sum_assignment

    if not len(pred) or not len(gt):
        return [], []
    iou = box_iou(pred, gt).numpy()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    ok = iou[rows, cols] >= iou_threshold
    return rows[ok].tolist(), cols[ok].tolist()


def _box_ap(samples: list[BoxSample], preds: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """COCO box AP / AP50 over the prompted (image, category) pairs (pycocotools)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets, cats = {}, [], [], set()
    for s, (boxes, scores) in zip(samples, preds):
        images[s.image_id] = {"id": s.image_id}
        cid = s.category_id
        cats.add(cid)
        for b, area in zip(s.boxes.tolist(), s.areas):
            anns.append({"id": len(anns) + 1, "image_id": s.image_id, "category_id": cid, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": area})
        for b, sc in zip(boxes.tolist(), scores.tolist()):
            dets.append({"image_id": s.image_id, "category_id": cid, "score": sc,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    if not anns or not dets:
        return {"AP": float("nan"), "AP50": float("nan")}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": list(images.values()), "annotations": anns, "categories": [{"id": c} for c in cats]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1])}


def _mean_auroc_per_category(samples: list[BoxSample], presence: np.ndarray) -> float:
    """The mean over categories (with present and absent photos) of the AUROC of presence on that category."""
    by_cat: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_cat.setdefault(s.prompt, []).append(i)
    aucs = [roc_auc(presence[idx], np.array([samples[i].present for i in idx])) for idx in by_cat.values()]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def evaluate_boxes(predictor, samples: list[BoxSample], score_threshold: float, presence_threshold: float,
                   ap_min_score: float = 0.05, progress: bool = True) -> dict:
    """Run ``predictor`` (``set_image``, ``predict(prompts, score_threshold=)``) on every sample -> the metrics of
    the module docstring; ``"pairs"``: the (score, right) pair of every prediction above ``ap_min_score`` (what
    the reliability table reads; left out of the JSON file)."""
    from tqdm import tqdm

    groups: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.image_id, []).append(i)
    preds: list = [None] * len(samples)
    presence = np.zeros(len(samples))
    for iid, idx in tqdm(groups.items(), desc="boxes", unit="img", disable=not progress, leave=False):
        predictor.set_image(samples[idx[0]].file_path)
        for i, r in zip(idx, predictor.predict([samples[i].prompt for i in idx], score_threshold=ap_min_score)):
            preds[i], presence[i] = (r.boxes, r.scores), r.presence
    tp = fp = fn = 0
    size_hit = {k: [0, 0] for k in SIZES}
    per_cat: dict[str, list[int]] = {}
    pairs = []  # (score, right) for every prediction above the AP floor
    found = rejected = n_present = n_absent = 0
    best_presence = getattr(getattr(predictor, "inference_config", None), "best_instance_presence", None)
    for si, (s, (boxes, scores)) in enumerate(zip(samples, preds)):
        keep = scores >= score_threshold
        if len(scores) and keeps_best_instance(presence[si], best_presence):
            keep[0] = True  # the inference rule best_instance_presence (scores are best first)
        rows, cols = _match(boxes[keep], s.boxes)
        pairs += list(zip(scores.tolist(), right_in_score_order(boxes, s.boxes)))
        tp, fp, fn = tp + len(rows), fp + int(keep.sum()) - len(rows), fn + len(s.boxes) - len(cols)
        for j, area in enumerate(s.areas):
            size = next(k for k, (lo, hi) in SIZES.items() if lo <= area < hi)
            size_hit[size][0] += j in set(cols)
            size_hit[size][1] += 1
        if not s.present:
            n_absent += 1
            rejected += int(not keep.any())
        else:
            n_present += 1
            found += int(keep.any())
            per_cat.setdefault(s.prompt, []).append(int(keep.any()))
    gt_present = np.array([s.present for s in samples])
    precision, recall, f1 = prf_from_counts(tp, fp, fn)
    found_rate = {c: float(np.mean(v)) for c, v in per_cat.items()}
    worst = sorted(((r, c) for c, r in found_rate.items() if len(per_cat[c]) >= 3))[:10]
    return {"n_images": len(groups), "n_samples": len(samples), "n_present": n_present, "n_absent": n_absent,
            "threshold": score_threshold, "presence_threshold": presence_threshold,
            "presence_acc": float(np.mean((presence >= presence_threshold) == gt_present)),
            "presence_auroc": roc_auc(presence, gt_present),
            "presence_auroc_per_category": _mean_auroc_per_category(samples, presence),
            "found": found / max(1, n_present), "rejected": rejected / max(1, n_absent),
            "box_precision_50": precision, "box_recall_50": recall, "box_F1_50": f1,
            **{f"box_{k}": v for k, v in _box_ap(samples, preds).items()},
            "recall_by_size": {k: (h / n if n else float("nan")) for k, (h, n) in size_hit.items()},
            "objects_by_size": {k: n for k, (_, n) in size_hit.items()},
            "found_by_category": found_rate, "worst_found": [{"category": c, "found": r, "n": len(per_cat[c])}
                                                            for r, c in worst],
            "reliability": reliability(pairs), "pairs": pairs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sam-lite eval-boxes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/sam-lite-base")
    ap.add_argument("--data", default=str(Path("..") / "shared" / "data" / "coco_mini"))
    ap.add_argument("--split", default="val", choices=["val", "train", "all"])
    ap.add_argument("--half", choices=["first", "second"], default=None, help="alternate photos in id order")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--presence-threshold", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--negatives", type=int, default=3, help="absent categories prompted per photo")
    ap.add_argument("--threads", type=int, default=None)
    add_device_argument(ap)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    for name in ("threshold", "presence_threshold"):
        v = getattr(args, name)
        if v is not None and not 0.0 <= v <= 1.0:
            print(f"error: --{name.replace('_', '-')} must be in [0, 1], got {v}", file=sys.stderr)
            return 2
    opened = open_dataset_and_predictor(args.data, args.checkpoint, args.threads, args.device)
    if opened is None:
        return 1
    coco, predictor = opened
    ids = validation_half(coco.split(args.split), args.half)[: args.max_images]
    policy = predictor.inference_config
    t = policy.score_threshold if args.threshold is None else args.threshold
    pt = policy.presence_threshold if args.presence_threshold is None else args.presence_threshold
    res = evaluate_boxes(predictor, box_samples(coco, ids, args.negatives), t, pt, progress=not args.quiet)
    res.pop("pairs")
    res.update(checkpoint=str(args.checkpoint), split=args.split, half=args.half)
    keys = ("presence_acc", "presence_auroc", "found", "rejected", "box_F1_50", "box_AP", "box_AP50")
    print(f"{args.checkpoint}: {res['n_images']} photos, {res['n_present']} present / {res['n_absent']} absent "
          f"(image, category) pairs, score threshold {t:g}, presence threshold {pt:g}")
    print("  ".join(f"{k} {res[k]:.3f}" for k in keys))
    print("recall by size: " + ", ".join(f"{k} {v:.3f} (n={res['objects_by_size'][k]})"
                                         for k, v in res["recall_by_size"].items()))
    print("worst found: " + ", ".join(f"{w['category']} {w['found']:.2f}" for w in res["worst_found"]))
    print(f"ECE {res['reliability']['ece']:.3f} over {res['reliability']['n']} predictions")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
