"""Where does a checkpoint lose gIoU? Raw outputs on the validation split, scored offline.

    python scripts/diagnose.py --checkpoint checkpoints/sam-lite-base --data ../shared/data/coco_mini

Runs the model once per validation image (all its evaluation prompts), keeps every query's mask, match probability,
the presence probability and the presence token's semantic mask at the original image size, then prints, per half of
the split: gIoU under several decision rules (score threshold; presence gate + top query / semantic mask), the
oracle best single query, and gIoU by the share of the image the ground truth covers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sam_lite import Prompt, SamLitePredictor  # noqa: E402
from sam_lite.data import CocoConcepts  # noqa: E402
from sam_lite.evaluation.evaluate import group_by_image  # noqa: E402

TYPES = ["category", "colour", "stuff", "synonym", "negative"]
AREA_BINS = [0.0, 0.01, 0.05, 0.15, 1.01]


def iou(pred: np.ndarray, gt: np.ndarray | None) -> float:
    if gt is None:
        return float(not pred.any())
    union = (pred | gt).sum()
    return float((pred & gt).sum() / union) if union else 1.0


def rules(score_t: float, presence_t: float) -> dict:
    """Decision rules: (masks [K,H,W], match [K], presence, semantic [H,W]) -> one union mask [H,W]."""
    def by_score(masks, match, presence, semantic):
        keep = match * presence >= score_t
        return masks[keep].any(0) if keep.any() else np.zeros_like(semantic)

    def top_query(masks, match, presence, semantic):
        return masks[match.argmax()] if presence >= presence_t else np.zeros_like(semantic)

    def semantic_mask(masks, match, presence, semantic):
        return semantic if presence >= presence_t else np.zeros_like(semantic)

    return {f"score >= {score_t:g}": by_score, f"presence >= {presence_t:g}, top query": top_query,
            f"presence >= {presence_t:g}, semantic mask": semantic_mask}


@torch.inference_mode()
def collect(predictor: SamLitePredictor, coco: CocoConcepts, image_ids: list[int], rule_fns: dict) -> list[dict]:
    """One record of scalars per (image, prompt): IoU under each rule, oracle IoU, semantic IoU, GT area share."""
    recs = []
    half_of = {iid: i % 2 for i, iid in enumerate(image_ids)}  # alternate photos, as evaluate --half
    for iid, group in group_by_image(coco.eval_samples(image_ids, seed=0)).items():
        predictor.set_image(group[0].file_path)
        out = predictor.predict_torch(Prompt([s.prompt for s in group]))
        meta = predictor.image_meta
        for i, s in enumerate(group):
            gt = coco.instance_masks(s)
            gt = gt.any(0).numpy() if gt.shape[0] else None
            masks = (predictor.processor.postprocess_masks(out["pred_masks"][i], meta) > 0).numpy()
            semantic = (predictor.processor.postprocess_masks(out["pred_semantic"][i][None], meta)[0]
                        > 0).numpy()
            match = out["pred_logits"][i].float().sigmoid().numpy()
            presence = float(out["presence_logits"][i].sigmoid())
            recs.append({"half": half_of[iid], "type": s.prompt_type,
                         "rules": {k: iou(f(masks, match, presence, semantic), gt) for k, f in rule_fns.items()},
                         "oracle": max(iou(q, gt) for q in masks) if gt is not None else None,
                         "semantic": iou(semantic, gt) if gt is not None else None,
                         "area": float(gt.mean()) if gt is not None else None})
    return recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    ap.add_argument("--data", default=str(Path("..") / "shared" / "data" / "coco_mini"))
    ap.add_argument("--score-threshold", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--presence-threshold", type=float, default=0.5)
    args = ap.parse_args()
    predictor = SamLitePredictor.from_pretrained(args.checkpoint)
    score_t = args.score_threshold if args.score_threshold is not None else predictor.inference_config.score_threshold
    coco = CocoConcepts(args.data)
    rule_fns = rules(score_t, args.presence_threshold)
    val = [i for i in coco.split("val") if coco.is_fully_labelled(i)]  # evaluate's default --subset full
    recs = collect(predictor, coco, val, rule_fns)
    first = next(iter(rule_fns))
    for half in (0, 1):
        sel = [r for r in recs if r["half"] == half]
        print(f"\n== validation half {half + 1}: {len(sel)} (image, prompt) pairs")
        print("rule".ljust(40) + "all    " + "  ".join(t[:8].rjust(8) for t in TYPES))
        for name in rule_fns:
            vals = {t: [r["rules"][name] for r in sel if r["type"] == t] for t in TYPES}
            every = [v for vs in vals.values() for v in vs]
            print(name.ljust(40) + f"{np.mean(every):.3f}  " + "  ".join(
                (f"{np.mean(v):.3f}" if v else "-").rjust(8) for v in vals.values()))
        pos = [r for r in sel if r["area"] is not None]
        print(f"oracle: best single query per positive prompt: mean IoU {np.mean([r['oracle'] for r in pos]):.3f}")
        print(f"positive non-stuff prompts by ground-truth area (share of the image), rule '{first}':")
        for lo, hi in zip(AREA_BINS[:-1], AREA_BINS[1:]):
            b = [r for r in pos if r["type"] != "stuff" and lo <= r["area"] < hi]
            if b:
                print(f"  {lo:.0%}-{min(hi, 1):.0%}: n={len(b):3d}  gIoU {np.mean([r['rules'][first] for r in b]):.3f}"
                      f"  semantic-mask IoU {np.mean([r['semantic'] for r in b]):.3f}")


if __name__ == "__main__":
    main()
