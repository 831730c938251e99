"""The reporting protocol in one command: choose thresholds on validation half 1, report half 2 and the whole split.

    python scripts/eval_protocol.py --checkpoint runs/x/final --name x [--data DIR] [--threads 1]

Writes to ``docs/results/<name>/``: ``<name>-val-first-half-calibration.json`` (fully labelled photos, half 1, every
grid threshold), ``<name>-val-second-half.json`` (half 2 at the chosen score / presence thresholds, with AP and
instance F1), ``<name>-val.json`` (all fully labelled validation photos) and ``<name>-val-all.json`` (every validation
photo, partially labelled ones included, each prompted only for its labelled categories).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam_lite.evaluation.evaluate import main as evaluate  # noqa: E402


def run(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--data", default="../shared/data/coco_mini")
    ap.add_argument("--out-dir", default="docs/results")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-whole", action="store_true", help="only the two halves")
    args = ap.parse_args(argv)
    out = Path(args.out_dir) / args.name
    common = ["--checkpoint", args.checkpoint, "--data", args.data, "--quiet"]
    common += ["--threads", str(args.threads)] if args.threads else []
    calib = out / f"{args.name}-val-first-half-calibration.json"
    if evaluate(common + ["--half", "first", "--calibrate", "--no-ap", "--out", str(calib)]):
        raise SystemExit("calibration failed")
    c = json.loads(calib.read_text())["calibration"]
    t, pt = c["best_gIoU"]["threshold"], c["best_presence_acc"]["threshold"]
    at = ["--threshold", str(t), "--presence-threshold", str(pt)]
    paths = {"second_half": out / f"{args.name}-val-second-half.json"}
    evaluate(common + at + ["--half", "second", "--out", str(paths["second_half"])])
    if not args.skip_whole:
        paths["val"] = out / f"{args.name}-val.json"
        evaluate(common + at + ["--out", str(paths["val"])])
        paths["val_all"] = out / f"{args.name}-val-all.json"
        evaluate(common + at + ["--subset", "all", "--out", str(paths["val_all"])])
    summary = {"checkpoint": args.checkpoint, "score_threshold": t, "presence_threshold": pt,
               **{k: str(v) for k, v in paths.items()}}
    (out / "protocol.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run()
