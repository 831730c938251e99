"""Copy a trained checkpoint into checkpoints/ as fp16 safetensors, optionally with a calibrated score threshold.

    python scripts/ship_checkpoint.py runs/base30/final checkpoints/sam-lite-base --score-threshold 0.15 \
        --presence-threshold 0.65
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sam_lite import SamLiteModel  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint directory written by training")
    p.add_argument("dst", help="where to write it (e.g. checkpoints/sam-lite-base)")
    p.add_argument("--score-threshold", type=float, default=None, help="threshold chosen on validation data")
    p.add_argument("--presence-threshold", type=float, default=None, help="presence threshold chosen on validation")
    p.add_argument("--mask-rescoring", choices=["on", "off"], default=None,
                   help="score x mean mask probability (Mask2Former); calibrate the thresholds with the same setting")
    p.add_argument("--instance-inference", choices=["queries", "semantic"], default=None,
                   help="how instances are formed (see SamLiteConfig.instance_inference); calibrate with the same")
    p.add_argument("--concept-rescoring", choices=["on", "off"], default=None,
                   help="score x mean concept-map probability inside the mask; calibrate with the same setting")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    args = p.parse_args(argv)
    model = SamLiteModel.from_pretrained(args.src)
    if args.score_threshold is not None:
        model.config.score_threshold = args.score_threshold
    if args.presence_threshold is not None:
        model.config.presence_threshold = args.presence_threshold
    if args.mask_rescoring is not None:
        model.config.mask_rescoring = args.mask_rescoring == "on"
    if args.instance_inference is not None:
        model.config.instance_inference = args.instance_inference
    if args.concept_rescoring is not None:
        model.config.concept_rescoring = args.concept_rescoring == "on"
    model.config.validate()
    out = model.save_pretrained(args.dst, dtype=None if args.fp32 else torch.float16)
    size = sum(f.stat().st_size for f in Path(out).iterdir()) / 2 ** 20
    print(f"wrote {out} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
