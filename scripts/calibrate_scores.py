"""Calibrate a checkpoint's instance scores (issue 17): Platt scaling fitted on validation half 1, the expected
calibration error (ECE) before and after reported on half 2, and the result written as ``score_calibration`` with
score threshold 0.5 into the checkpoint's ``inference_config.json`` (``--write``).

    python scripts/calibrate_scores.py --checkpoint runs/x/final --out docs/results/x/calibration.json [--write]

A prediction is right when it matches a ground-truth box at IoU 0.5 (the box protocol, every validation photo:
:mod:`sam_lite.evaluation.boxes`). Platt scaling is monotonic: rankings and AP do not change.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam_lite.config import INFERENCE_CONFIG_NAME  # noqa: E402
from sam_lite.evaluation.boxes import box_samples, evaluate_boxes  # noqa: E402
from sam_lite.evaluation.calibration import apply_platt, fit_platt, reliability  # noqa: E402
from sam_lite.evaluation.opening import open_dataset_and_predictor, validation_half  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="../shared/data/coco_mini")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=None, help="per half (a quick look)")
    ap.add_argument("--out", default=None, help="the reliability tables and the fit as JSON")
    ap.add_argument("--write", action="store_true", help="store the calibration and threshold 0.5 with the checkpoint")
    args = ap.parse_args(argv)
    opened = open_dataset_and_predictor(args.data, args.checkpoint, args.threads)
    if opened is None:
        return 1
    coco, predictor = opened
    if predictor.inference_config.score_calibration is not None:
        predictor.inference_config = replace(predictor.inference_config, score_calibration=None)  # fit raw scores
    ids = coco.split("val")
    halves = {h: validation_half(ids, h)[: args.max_images] for h in ("first", "second")}
    pt = predictor.inference_config.presence_threshold
    pairs = {h: evaluate_boxes(predictor, box_samples(coco, i), 0.5, pt, progress=False)["pairs"]
             for h, i in halves.items()}
    a, b = fit_platt(pairs["first"])
    scaled = [(apply_platt(s, a, b), r) for s, r in pairs["second"]]
    res = {"checkpoint": args.checkpoint, "platt": [a, b], "fitted_on": "validation half 1",
           "half2_raw": reliability(pairs["second"]), "half2_calibrated": reliability(scaled),
           "raw_score_at_calibrated_0.5": 1 / (1 + pow(2.718281828459045, b / a))}
    print(f"Platt a={a:.3f} b={b:.3f} (raw score {res['raw_score_at_calibrated_0.5']:.3f} -> 0.5); half 2 ECE "
          f"{res['half2_raw']['ece']:.3f} raw -> {res['half2_calibrated']['ece']:.3f} calibrated "
          f"({res['half2_raw']['n']} predictions)")
    for name in ("half2_raw", "half2_calibrated"):
        print(name + ": " + ", ".join(f"[{x['lo']:.1f},{x['hi']:.1f}) n={x['n']} score {x['mean_score']:.2f} "
                                      f"right {x['accuracy']:.2f}" for x in res[name]["bins"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    if args.write:
        policy = replace(predictor.inference_config, score_calibration=[a, b], score_threshold=0.5)
        policy.save(Path(args.checkpoint) / INFERENCE_CONFIG_NAME)
        print(f"wrote {Path(args.checkpoint) / INFERENCE_CONFIG_NAME}: {policy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
