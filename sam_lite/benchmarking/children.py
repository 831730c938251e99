"""Measurements in a fresh interpreter (peak memory, training throughput): ``child_main`` runs in the child,
``run_child`` starts it and reads its one ``BENCH_CHILD {json}`` line."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import PROMPT, ROOT, log
from .ours import build_model, clear_text_cache, make_train_step, synthetic_or_example_image
from .timing import OtherLoad, peak_rss_mb, proc_status, rss_mb

# the children: "--child KIND" runs this package's cli as a module (cwd is the repo root); the ONNX Runtime child
# runs onnx_child.py by path, so that the sam_lite package (and torch with it) is never imported there
ONNX_CHILD = Path(__file__).resolve().with_name("onnx_child.py")


def child_main(args) -> None:
    """Runs in a fresh interpreter; prints one JSON line. ru_maxrss is the peak of this process only."""
    res = {"rss_after_imports_mb": None}
    import sam_lite  # noqa: F401  (torch, transformers, torchvision are imported with it)

    res["rss_after_imports_mb"] = rss_mb()
    model = build_model(args.checkpoint)
    res["rss_after_build_mb"] = rss_mb()
    if args.child == "inference":
        from sam_lite import SamLitePredictor

        image, _ = synthetic_or_example_image()
        pred = SamLitePredictor(model)
        for i in range(5):
            pred.set_image(image)
            clear_text_cache(model)
            pred.predict(PROMPT, score_threshold=0.0, max_instances=5)
    else:
        bf16 = args.child == "train-bf16"
        # bf16 steps are very slow on CPUs without native bf16; warm up (lazy init, class-name embeddings, kernel
        # selection) with a batch of 2 there, and with the full batch in float32
        warm, _, _ = make_train_step(model, 2 if bf16 else args.batch, bf16=bf16)
        for _ in range(args.train_warmup):
            warm()
        step, _, _ = make_train_step(model, args.batch, bf16=bf16)
        times = []
        for _ in range(args.train_runs):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        res["step_s"] = times
        res["median_step_s"] = statistics.median(times)
        res["images_per_s"] = args.batch / statistics.median(times)
    res["peak_rss_mb"] = peak_rss_mb()
    res["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["status_at_end"] = proc_status()
    res["threads"] = torch.get_num_threads()
    print("BENCH_CHILD " + json.dumps(res), flush=True)


def run_child(kind: str, args, other: OtherLoad, timeout: float = 900) -> dict:
    if kind == "onnx-inference":
        from sam_lite.modeling.text_encoder import minilm_path

        cmd = [sys.executable, str(ONNX_CHILD), str(args.onnx_dir),
               str(Path(minilm_path()) / "tokenizer.json"), str(torch.get_num_threads()), str(max(5, args.runs // 2))]
    else:
        cmd = [sys.executable, "-m", "sam_lite.benchmarking.cli", "--child", kind, "--batch", str(args.batch),
               "--train-runs", str(args.bf16_runs if kind == "train-bf16" else args.train_runs),
               "--train-warmup", str(args.train_warmup)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
    log(f"[child] {kind} ...")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    other.excluded.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"timed out after {timeout} s"}
    for line in out.splitlines():
        if line.startswith("BENCH_CHILD "):
            res = json.loads(line[len("BENCH_CHILD "):])
            res["wall_s"] = time.perf_counter() - t
            return res
    return {"error": f"child {kind} failed (rc {proc.returncode}): {err.strip().splitlines()[-3:]}"}
