"""Benchmark sam-lite on this CPU against SAM ViT-B and CLIPSeg ViT-B/16 (random weights, no downloads).

    python scripts/benchmark.py                              # random-weight base model, writes docs/benchmarks.md
    python scripts/benchmark.py --checkpoint checkpoints/sam-lite-base --image-sizes 256,320,384
    python scripts/benchmark.py --quick --no-write           # a fast smoke run (few repeats, no SAM)

Measures (medians after warm-up): parameters per module, set_image, a new prompt on a cached image, image -> masks,
training throughput (batch 8, forward + backward + AdamW step, bf16 autocast as asked and fp32 for contrast), peak RSS
for inference and for training (each in its own subprocess), a per-module profile of set_image and predict, and the
latency at several input sizes. Results go to docs/benchmarks.md and docs/benchmarks.json; the block between
``<!-- notes:begin -->`` and ``<!-- notes:end -->`` of an existing benchmarks.md is kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from ..device import add_device_argument, resolve_device
from .children import child_main, run_child
from .common import DEFAULT_MD, log
from .others import bench_clipseg, bench_sam
from .ours import bench_ours, build_model, synthetic_or_example_image
from .report import existing_notes, goals, public_api_table, render_md, summary_table
from .timing import OtherLoad, _git_revision, cpu_flags, cpu_model

# the docstring above is scripts/benchmark.py's usage too: parse_args shows it as --help


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a sam-lite checkpoint directory (default: random-weight base model)")
    ap.add_argument("--image-sizes", default="256,320,384", help="comma-separated input sizes for the trade-off table")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per sam-lite / CLIPSeg measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sam-runs", type=int, default=2, help="timed SAM ViT-B runs (each ~8 s on 2 cores)")
    ap.add_argument("--sam-warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="training batch size")
    ap.add_argument("--train-runs", type=int, default=4, help="timed float32 training steps")
    ap.add_argument("--bf16-runs", type=int, default=1, help="timed bf16-autocast training steps (slow on AVX2)")
    ap.add_argument("--train-warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--skip", default="",
                    help="comma list of: sam, clipseg, train, memory, bf16, alt-threads, onnx")
    ap.add_argument("--quick", action="store_true", help="few repeats, no SAM, no bf16 training: a smoke test")
    ap.add_argument("--out", default=str(DEFAULT_MD), help="markdown report (a .json is written next to it)")
    ap.add_argument("--no-write", action="store_true", help="print the report instead of writing it")
    ap.add_argument("--render-only", metavar="JSON", help="measure nothing: rewrite --out from a saved results JSON")
    add_device_argument(ap, default="cpu", help_extra=" (default cpu: the report compares CPUs; on another device "
                                                      "the CPU-only parts are skipped: onnx, memory, train, "
                                                      "alt-threads)")
    ap.add_argument("--child", choices=["inference", "train-bf16", "train-fp32"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.image_sizes = [int(s) for s in str(args.image_sizes).split(",") if s.strip()]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.quick:
        args.runs, args.warmup, args.train_runs = 5, 1, 1
        args.skip |= {"sam", "bf16"}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.device != "cpu":  # onnxruntime, RSS and the training children measure the CPU
        args.skip |= {"onnx", "memory", "train", "alt-threads"}
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.child:
        child_main(args)
        return 0
    if args.render_only:
        md_path = Path(args.out)
        R = json.loads(Path(args.render_only).read_text())
        md_path.write_text(render_md(R, existing_notes(md_path)))
        print(f"wrote {md_path} from {args.render_only}")
        return 0

    t_start = time.perf_counter()
    other = OtherLoad()
    import shutil
    import tempfile

    args.onnx_dir = Path(tempfile.mkdtemp(prefix="sam-lite-bench-onnx-"))
    try:
        return _main(args, argv, t_start, other)
    finally:
        shutil.rmtree(args.onnx_dir, ignore_errors=True)


def _main(args, argv, t_start, other) -> int:
    import transformers

    image, image_name = synthetic_or_example_image()
    env = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
           "argv": ["scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)],
           "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
           "mem_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, "kernel": platform.release(),
           "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg(),
           "weights": f"checkpoint {args.checkpoint}" if args.checkpoint else "random (no trained checkpoint yet)",
           "git": _git_revision(), "image": image_name, "image_size": list(image.size), "batch": args.batch,
           "train_warmup": args.train_warmup, "device": args.device}
    log(f"[env] {env['cpu_model']}, {env['cpu_count']} cores, {env['threads']} torch threads, "
        f"load {env['loadavg_start']}")
    R: dict = {"env": env}

    model = build_model(args.checkpoint)
    R["ours"] = bench_ours(model, image, args, trained=bool(args.checkpoint))
    del model
    if "clipseg" not in args.skip:
        R["clipseg"] = bench_clipseg(image, args)
    if "sam" not in args.skip:
        R["sam"] = bench_sam(image, args)

    R["memory"] = {}
    if "memory" not in args.skip:
        R["memory"]["inference"] = run_child("inference", args, other)
        if (args.onnx_dir / "text_encoder.onnx").is_file():
            R["memory"]["onnx-inference"] = run_child("onnx-inference", args, other)
    if "train" not in args.skip:
        R["memory"]["train-fp32"] = run_child("train-fp32", args, other)
        if "bf16" not in args.skip:
            R["memory"]["train-bf16"] = run_child("train-bf16", args, other)
        R["training"] = {"trainable_tensors": R["ours"]["trainable_tensors"],
                         "trainable_params": R["ours"]["params"]["trainable"]}

    env["loadavg_end"] = os.getloadavg()
    env["other_cores_busy"] = other.cores_used()
    env["wall_s"] = time.perf_counter() - t_start

    print(summary_table(R))
    if public_api_table(R):
        print(public_api_table(R))
    for g, m, v in goals(R):
        print(f"{g}: {m} -> {v.strip('*')}")
    for k, r in R["memory"].items():
        print(k, {kk: vv for kk, vv in r.items() if kk != "step_s"})
    print(f"other processes used {env['other_cores_busy']:.2f} cores on average; run took {env['wall_s']:.0f} s")

    md_path = Path(args.out)
    md = render_md(R, existing_notes(md_path))
    if args.no_write:
        print(md)
    else:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(md)
        md_path.with_suffix(".json").write_text(json.dumps(R, indent=2, default=str) + "\n")
        print(f"wrote {md_path} and {md_path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
