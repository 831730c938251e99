"""Calibrate a checkpoint's instance scores (issue 17): P(right) fitted on validation half 1 from the query's own
features (:mod:`sam_lite.evaluation.calibration`), the expected calibration error (ECE) and the AUROC of right vs
wrong reported on half 2 before and after, and the fit written as ``score_calibration`` with a score threshold into
the checkpoint's ``inference_config.json`` (``--write``).

    python scripts/calibrate_scores.py --checkpoint runs/x/final --out docs/results/x/calibration.json \
        [--features match,presence,mask_confidence,predicted_iou,mask_area] [--write --score-threshold 0.5]

A prediction is right when it matches a ground-truth box at IoU 0.5 (the box protocol, every validation photo:
:mod:`sam_lite.evaluation.boxes`; stuff regions too, on the photos labelled for stuff). ``--features score`` is
Platt scaling: monotonic, rankings and AP unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam_lite.config import INFERENCE_CONFIG_NAME, SCORE_FEATURES  # noqa: E402
from sam_lite.evaluation.boxes import box_samples  # noqa: E402
from sam_lite.evaluation.calibration import calibration_data, fit_logistic, reliability  # noqa: E402
from sam_lite.evaluation.metrics import roc_auc  # noqa: E402
from sam_lite.evaluation.opening import open_dataset_and_predictor, validation_half  # noqa: E402

DEFAULT_FEATURES = "match,presence,mask_confidence,predicted_iou,mask_area"


def features_of(text: str, has_iou_head: bool) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in names if f not in SCORE_FEATURES]
    if bad or not names:
        raise ValueError(f"unknown score feature(s) {bad}: choose from {', '.join(SCORE_FEATURES)}")
    if "predicted_iou" in names and not has_iou_head:
        if text != DEFAULT_FEATURES:
            raise ValueError("predicted_iou needs a model with an IoU head (geometric_prompts)")
        names.remove("predicted_iou")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="../shared/data/coco_mini")
    ap.add_argument("--features", default=DEFAULT_FEATURES, help=f"comma-separated, from {', '.join(SCORE_FEATURES)}")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=None, help="per half (a quick look)")
    ap.add_argument("--out", default=None, help="the reliability tables and the fit as JSON")
    ap.add_argument("--write", action="store_true", help="store the calibration and --score-threshold with the "
                                                          "checkpoint")
    ap.add_argument("--score-threshold", type=float, default=0.5, help="written with --write (default 0.5)")
    args = ap.parse_args(argv)
    opened = open_dataset_and_predictor(args.data, args.checkpoint, args.threads)
    if opened is None:
        return 1
    coco, predictor = opened
    try:
        features = features_of(args.features, bool(predictor.model.config.geometric_prompts))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    predictor.inference_config = replace(predictor.inference_config, score_calibration=None)  # fit raw scores
    ids = coco.split("val")
    data = {h: calibration_data(predictor, box_samples(coco, validation_half(ids, h)[: args.max_images], stuff=True),
                                features)
            for h in ("first", "second")}
    weights, bias = fit_logistic(data["first"][0], data["first"][2])
    x2, raw2, right2 = data["second"]
    cal2 = 1 / (1 + np.exp(-(x2 @ np.array(weights) + bias)))
    calibration = {"features": features, "weights": weights, "bias": bias}
    res = {"checkpoint": args.checkpoint, "score_calibration": calibration, "fitted_on": "validation half 1",
           "n_fit": int(len(data["first"][2])), "right_rate_fit": float(data["first"][2].mean()),
           "half2_auroc_raw": roc_auc(raw2, right2), "half2_auroc_calibrated": roc_auc(cal2, right2),
           "half2_raw": reliability(list(zip(raw2.tolist(), right2.tolist()))),
           "half2_calibrated": reliability(list(zip(cal2.tolist(), right2.tolist()))),
           "half2_precision_at": {f"{t:.2f}": (float(right2[cal2 >= t].mean()) if (cal2 >= t).any() else None)
                                  for t in (0.1, 0.2, 0.3, 0.4, 0.5)}}
    print(f"fit on half 1 ({res['n_fit']} predictions, {res['right_rate_fit']:.3f} right): "
          + ", ".join(f"{f} {w:+.3f}" for f, w in zip(features, weights)) + f", bias {bias:+.3f}")
    print(f"half 2 ({len(right2)} predictions): ECE {res['half2_raw']['ece']:.3f} raw -> "
          f"{res['half2_calibrated']['ece']:.3f} calibrated; AUROC right vs wrong {res['half2_auroc_raw']:.3f} -> "
          f"{res['half2_auroc_calibrated']:.3f}")
    for name in ("half2_raw", "half2_calibrated"):
        print(name + ": " + ", ".join(f"[{x['lo']:.1f},{x['hi']:.1f}) n={x['n']} score {x['mean_score']:.2f} "
                                      f"right {x['accuracy']:.2f}" for x in res[name]["bins"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    if args.write:
        policy = replace(predictor.inference_config, score_calibration=calibration,
                         score_threshold=args.score_threshold)
        policy.save(Path(args.checkpoint) / INFERENCE_CONFIG_NAME)
        print(f"wrote {Path(args.checkpoint) / INFERENCE_CONFIG_NAME}: {policy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
