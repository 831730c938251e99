"""Copy a trained checkpoint into checkpoints/ as fp16 safetensors, with the thresholds chosen on validation data
written beside it (``inference_config.json``).

    python scripts/ship_checkpoint.py runs/base30/final checkpoints/sam-lite-base --score-threshold 0.15 \
        --presence-threshold 0.65
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sam_lite import InferenceConfig, SamLiteModel  # noqa: E402
from sam_lite.config import INFERENCE_CONFIG_NAME  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint directory written by training")
    p.add_argument("dst", help="where to write it (e.g. checkpoints/sam-lite-base)")
    p.add_argument("--score-threshold", type=float, default=None, help="threshold chosen on validation data")
    p.add_argument("--presence-threshold", type=float, default=None, help="presence threshold chosen on validation")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    args = p.parse_args(argv)
    model = SamLiteModel.from_pretrained(args.src)
    policy = InferenceConfig.load(args.src)
    overrides = {k: v for k, v in (("score_threshold", args.score_threshold),
                                   ("presence_threshold", args.presence_threshold)) if v is not None}
    try:
        policy = replace(policy, **overrides)
    except ValueError as e:
        p.error(str(e))
    out = model.save_pretrained(args.dst, dtype=None if args.fp32 else torch.float16)
    policy.save(Path(out) / INFERENCE_CONFIG_NAME)
    size = sum(f.stat().st_size for f in Path(out).iterdir()) / 2 ** 20
    print(f"wrote {out} ({size:.1f} MiB), {policy}")


if __name__ == "__main__":
    main()
