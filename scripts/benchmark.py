#!/usr/bin/env python
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
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEFAULT_MD = ROOT / "docs" / "benchmarks.md"
EXAMPLE_IMAGE = ROOT / "examples" / "street_cars_bus.jpg"
PROMPT = "red car"


def onnx_child(argv: list[str]) -> None:
    """``--onnx-child DIR TOKENIZER_JSON THREADS RUNS``: image -> mask logits with onnxruntime, numpy, PIL and
    tokenizers only (no torch import), to see the memory and latency of a PyTorch-free deployment."""
    import json as _json
    import statistics as _st

    import numpy as _np
    import onnxruntime as ort
    from PIL import Image
    from tokenizers import Tokenizer

    onnx_dir, tok_path, threads, runs = Path(argv[0]), argv[1], int(argv[2]), int(argv[3])

    def status():
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024
        return out

    res = {"status_after_imports": status()}
    cfg = _json.loads((onnx_dir / "config.json").read_text())
    s = cfg["image_size"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    # three sessions run one after the other: spinning idle threads of one would steal the cores of the next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    enc, dec, txt = (ort.InferenceSession(str(onnx_dir / f), opts, providers=["CPUExecutionProvider"])
                     for f in ("image_encoder.onnx", "prompt_decoder.onnx", "text_encoder.onnx"))
    tok = Tokenizer.from_file(tok_path)
    tok.enable_truncation(max_length=cfg["max_text_tokens"])
    res["status_after_load"] = status()
    if EXAMPLE_IMAGE.is_file():
        image = Image.open(EXAMPLE_IMAGE).convert("RGB")
    else:
        image = Image.fromarray((_np.random.default_rng(0).random((480, 640, 3)) * 255).astype(_np.uint8))
    enc_names = [o.name for o in enc.get_outputs()]
    dec_inputs = [i.name for i in dec.get_inputs()]

    def run():
        w, h = image.size
        k = s / max(w, h)
        x = _np.asarray(image.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR), _np.float32)
        pv = _np.zeros((1, 3, s, s), _np.float32)
        pv[0, :, : x.shape[0], : x.shape[1]] = ((x - 127.0) / 128.0).transpose(2, 0, 1)
        feeds = dict(zip(enc_names, enc.run(None, {"pixel_values": pv})))
        e = tok.encode(PROMPT)
        ids = _np.array([e.ids], _np.int64)
        mask = _np.array([e.attention_mask], _np.int64)
        feats, sentence = txt.run(None, {"input_ids": ids, "attention_mask": mask})
        feeds.update(text_features=feats, text_padding_mask=mask == 0, sentence=sentence)
        return dec.run(None, {n: feeds[n] for n in dec_inputs})

    for _ in range(2):
        run()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    res.update(end_to_end={"median_ms": _st.median(times), "min_ms": min(times), "max_ms": max(times), "runs": runs,
                           "warmup": 2}, threads=threads, peak_rss_mb=status()["VmHWM"], status_at_end=status(),
               rss_after_imports_mb=res["status_after_imports"]["VmRSS"],
               rss_after_build_mb=res["status_after_load"]["VmRSS"])
    print("BENCH_CHILD " + _json.dumps(res), flush=True)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--onnx-child":
    onnx_child(sys.argv[2:])
    raise SystemExit(0)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
TRAIN_PROMPTS = ["red car", "dog", "person", "a white cup", "bus", "sky", "green tree", "cat on a sofa"]
GOALS = {"prompt_ms": 10.0, "e2e_ms": 30.0, "vs_clipseg": 5.0, "vs_sam": 100.0, "inference_rss_mb": 1024.0}


# --- small utilities ---------------------------------------------------------------------------------------------
_T0 = time.perf_counter()


def log(*a) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s]", *a, file=sys.stderr, flush=True)


def timeit(fn, runs: int, warmup: int, before=None) -> dict:
    """Median / min / max wall time of ``fn()`` in ms; ``before()`` runs untimed before each call."""
    for _ in range(warmup):
        if before:
            before()
        fn()
    times = []
    for _ in range(runs):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": runs,
            "warmup": warmup}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set of this process: VmHWM (per address space, reset by exec). ``ru_maxrss`` is not used for
    the children because Linux carries it over from the forking parent, so a child would report the parent's peak."""
    status = proc_status()
    if "VmHWM" in status:
        return status["VmHWM"]
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def proc_status() -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process in MB (empty off Linux)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile") and val.strip().endswith("kB"):
                out[key] = int(val.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sam_lite"], capture_output=True, text=True,
                               cwd=ROOT, timeout=10).stdout.strip()
        return rev + (" (sam_lite/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_flags() -> list[str]:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni") if f in flags]


class OtherLoad:
    """CPU seconds used by processes other than this one and its children, from /proc (to say if cores were busy)."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start_wall, self.start = time.time(), self._sample()
        self.excluded: set[int] = {os.getpid()}

    def _sample(self) -> dict[int, float]:
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                    out[int(d.name)] = (int(f[11]) + int(f[12])) / self.tick  # utime + stime
                except (OSError, IndexError, ValueError):
                    pass
        return out

    def cores_used(self) -> float:
        now, wall = self._sample(), time.time() - self.start_wall
        used = sum(v - self.start.get(pid, 0.0) for pid, v in now.items() if pid not in self.excluded)
        return max(0.0, used / max(wall, 1e-9))


def synthetic_or_example_image():
    from PIL import Image

    if EXAMPLE_IMAGE.is_file():
        return Image.open(EXAMPLE_IMAGE).convert("RGB"), EXAMPLE_IMAGE.relative_to(ROOT).as_posix()
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((480, 640, 3)) * 255).astype(np.uint8)), "random 640x480"


def build_model(checkpoint: str | None, image_size: int | None = None):
    from sam_lite import SamLiteConfig, SamLiteModel

    if checkpoint:
        model = SamLiteModel.from_pretrained(checkpoint)
    else:
        torch.manual_seed(0)
        model = SamLiteModel(SamLiteConfig(**({"image_size": image_size} if image_size else {})))
    return model.float().eval()


def clear_text_cache(model) -> None:
    cache = getattr(model.text_encoder, "_cache", None)
    if cache is not None:
        cache.clear()


# --- training step -----------------------------------------------------------------------------------------------
def make_train_step(model, batch: int, bf16: bool):
    """One optimisation step on random data: forward + a DETR-like loss on every output (incl. aux) + backward +
    AdamW. Targets are random; the point is the cost, not the numbers."""
    cfg = model.config
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    s, k = cfg.image_size, cfg.num_queries
    pixel_values = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    prompts = [TRAIN_PROMPTS[i % len(TRAIN_PROMPTS)] for i in range(batch)]
    tgt_masks = (torch.rand(batch, k, s // 4, s // 4, generator=g) > 0.7).float()
    tgt_match = (torch.rand(batch, k, generator=g) > 0.8).float()
    tgt_boxes = torch.rand(batch, k, 4, generator=g) * 0.5 + 0.25
    tgt_presence = (torch.rand(batch, generator=g) > 0.3).float()

    def loss_of(o):
        return (F.binary_cross_entropy_with_logits(o["pred_masks"].float(), tgt_masks)
                + F.binary_cross_entropy_with_logits(o["pred_logits"].float(), tgt_match)
                + F.l1_loss(o["pred_boxes"].float(), tgt_boxes)
                + F.binary_cross_entropy_with_logits(o["presence_logits"].float(), tgt_presence))

    def step():
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            out = model(pixel_values, prompts)
            loss = loss_of(out) + sum(loss_of(a) for a in out.get("aux_outputs", []))
        loss.backward()
        opt.step()
        return float(loss)

    return step, len(params), sum(p.numel() for p in params)


# --- child processes (peak memory) ---------------------------------------------------------------------------------
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

        cmd = [sys.executable, str(Path(__file__).resolve()), "--onnx-child", str(args.onnx_dir),
               str(Path(minilm_path()) / "tokenizer.json"), str(torch.get_num_threads()), str(max(5, args.runs // 2))]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--batch", str(args.batch),
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


# --- per-module profile ----------------------------------------------------------------------------------------------
class ModuleTimer:
    """Wall time spent inside groups of modules (forward pre/post hooks). Groups must not nest."""

    def __init__(self, groups: dict[str, list]) -> None:
        self.total = {name: 0.0 for name in groups}
        self.handles = []
        for name, mods in groups.items():
            for m in mods:
                self.handles.append(m.register_forward_pre_hook(self._pre))
                self.handles.append(m.register_forward_hook(self._post(name)))
        self._start: dict[int, float] = {}

    def _pre(self, module, args):
        self._start[id(module)] = time.perf_counter()

    def _post(self, name):
        def hook(module, args, out):
            self.total[name] += time.perf_counter() - self._start.pop(id(module))
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def profile_modules(model, predictor, image, runs: int) -> dict:
    """Per-module wall time of set_image and of predict (new prompt each time), ms per call."""
    from sam_lite.processing import load_image

    enc, bb = model.image_encoder, model.image_encoder.backbone
    stage = bb.stage_of_block
    img_groups = {
        "backbone stages 0-4 (Lite0 features)": [bb._conv_stem, bb._bn0] + [b for b, s in zip(bb._blocks, stage)
                                                                             if s < 5],
        "backbone stages 5-6 + conv head (prior classifier only)": [b for b, s in zip(bb._blocks, stage) if s >= 5]
        + [bb._conv_head, bb._bn1],
        "patch projection": [enc.patch_proj],
        "encoder self-attention layers": list(enc.layers) + [enc.norm],
        "FPN (lateral, smooth, pixel_proj)": [enc.lateral8, enc.lateral4, enc.smooth8, enc.smooth4, enc.pixel_proj],
    }
    timer = ModuleTimer(img_groups)
    t_load = t_pre = t_enc = 0.0
    with torch.inference_mode():
        for _ in range(runs):
            t0 = time.perf_counter()
            pil = load_image(image)
            t1 = time.perf_counter()
            pv, _ = predictor.processor.preprocess(pil)
            t2 = time.perf_counter()
            model.encode_image(pv)
            t3 = time.perf_counter()
            t_load, t_pre, t_enc = t_load + t1 - t0, t_pre + t2 - t1, t_enc + t3 - t2
    timer.remove()
    set_image = {"load_image (PIL -> RGB)": t_load, "preprocess (resize, normalise, pad)": t_pre}
    set_image.update(timer.total)
    set_image["other in encode_image (classifier einsum, interpolation, pos. encoding)"] = t_enc - sum(
        timer.total.values())
    set_image = {k: v / runs * 1e3 for k, v in set_image.items()}

    te = model.text_encoder
    groups = {"text encoder: MiniLM transformer": [te.bert], "text projection": [model.text_proj],
              "fusion (image tokens x text)": list(model.fusion), "query decoder": [model.decoder],
              "heads (all decoder layers, incl. aux)": [model.heads]}
    if model.config.use_imagenet_prior:
        groups["ImageNet prior (class similarity, maps)"] = [model.prior]
        groups["prior projections"] = [model.prior_token_proj, model.prior_pixel_proj, model.prior_presence_proj]
    timer = ModuleTimer(groups)
    outer = ModuleTimer({"text encoder total": [te]})
    decode_time = [0.0]
    orig_decode = model.decode

    def timed_decode(*a, **k):
        t = time.perf_counter()
        try:
            return orig_decode(*a, **k)
        finally:
            decode_time[0] += time.perf_counter() - t

    model.decode = timed_decode
    total = 0.0
    try:
        for _ in range(runs):
            clear_text_cache(model)
            t = time.perf_counter()
            predictor.predict(PROMPT, score_threshold=predictor_threshold(predictor))
            total += time.perf_counter() - t
    finally:
        del model.decode
        timer.remove()
        outer.remove()
    pred = dict(timer.total)
    pred["text encoder: tokenizer + pooling"] = outer.total["text encoder total"] - timer.total[
        "text encoder: MiniLM transformer"]
    inside_decode = sum(v for k, v in timer.total.items() if not k.startswith("text encoder"))
    pred["other in decode (indexing, prior interpolation)"] = decode_time[0] - inside_decode
    pred["postprocessing (threshold, NMS, upsample masks, boxes)"] = total - decode_time[0] - outer.total[
        "text encoder total"]
    pred = {k: v / runs * 1e3 for k, v in pred.items()}
    return {"set_image_ms": set_image, "predict_ms": pred}


def top_ops(fn, runs: int, rows: int = 10) -> str:
    from torch.profiler import ProfilerActivity, profile

    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                fn()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
    return "\n".join(ln for ln in table.splitlines() if ln.strip())


_THRESHOLD: dict[int, float] = {}


def predictor_threshold(predictor) -> float:
    return _THRESHOLD.get(id(predictor), 0.5)


def calibrate_threshold(predictor, trained: bool, n: int = 5) -> float:
    """A trained model uses its calibrated threshold (config.score_threshold, else 0.5). Random weights score
    everything ~0.25, so pick the threshold that lets the ``n`` best queries through: the post-processing then does
    the work it would do for an image with n objects."""
    if trained:
        thr = float(getattr(predictor.model.config, "score_threshold", 0.5))
    else:
        scores = predictor.predict(PROMPT, score_threshold=0.0, nms_iou=1.0).scores
        thr = float(scores[min(n, len(scores)) - 1]) - 1e-6 if len(scores) else 0.0
    _THRESHOLD[id(predictor)] = thr
    return thr


# --- sam-lite measurements -------------------------------------------------------------------------------------------
def bench_ours(model, image, args, trained: bool) -> dict:
    from sam_lite import SamLitePredictor, SamLiteProcessor

    res = {"config": model.config.to_dict(), "params": model.num_parameters(),
           "trainable_tensors": sum(1 for p in model.parameters() if p.requires_grad)}
    pred = SamLitePredictor(model)
    pred.set_image(image)
    res["score_threshold"] = calibrate_threshold(pred, trained)
    thr = res["score_threshold"]
    res["masks_returned"] = len(pred.predict(PROMPT, score_threshold=thr))
    r, w = args.runs, args.warmup
    log("[ours] set_image / predict / end-to-end ...")
    res["set_image"] = timeit(lambda: pred.set_image(image), r, w)
    res["predict_new_prompt"] = timeit(lambda: pred.predict(PROMPT, score_threshold=thr), r, w,
                                       before=lambda: clear_text_cache(model))
    res["predict_cached_prompt"] = timeit(lambda: pred.predict(PROMPT, score_threshold=thr), r, w)
    four = ["red car", "bus", "person", "traffic light"]
    res["predict_4_new_prompts_one_call"] = timeit(lambda: pred.predict(four, score_threshold=thr), r // 2 or 1, 1,
                                                   before=lambda: clear_text_cache(model))

    def e2e():
        pred.set_image(image)
        pred.predict(PROMPT, score_threshold=thr)
    res["end_to_end"] = timeit(e2e, r, w, before=lambda: clear_text_cache(model))

    log("[ours] profile ...")
    res["profile"] = profile_modules(model, pred, image, max(3, r // 2))
    res["top_ops_set_image"] = top_ops(lambda: pred.set_image(image), 5)

    def new_prompt():
        clear_text_cache(model)
        pred.predict(PROMPT, score_threshold=thr)
    res["top_ops_predict"] = top_ops(new_prompt, 10)

    n = torch.get_num_threads()
    alt = 1 if n != 1 else (os.cpu_count() or 1)
    if "alt-threads" not in args.skip and alt != n:
        log(f"[ours] {alt} thread(s) ...")
        torch.set_num_threads(alt)
        try:
            res["alt_threads"] = {"threads": alt,
                "set_image": timeit(lambda: pred.set_image(image), max(5, r // 2), 2),
                "predict_new_prompt": timeit(lambda: pred.predict(PROMPT, score_threshold=thr), max(5, r // 2), 2,
                                             before=lambda: clear_text_cache(model)),
                "end_to_end": timeit(e2e, max(5, r // 2), 2, before=lambda: clear_text_cache(model))}
        finally:
            torch.set_num_threads(n)
    if "onnx" not in args.skip:
        log("[ours] ONNX Runtime ...")
        try:
            res["onnxruntime"] = bench_onnxruntime(model, pred, image, args)
        except Exception as e:  # an export problem must not lose the rest of the benchmark
            res["onnxruntime"] = {"error": f"{type(e).__name__}: {e}"}

    sizes = []
    for s in args.image_sizes:
        log(f"[ours] image size {s} ...")
        p = SamLitePredictor(model, SamLiteProcessor(s))
        p.set_image(image)
        calibrate_threshold(p, trained)
        t = predictor_threshold(p)
        n = max(5, r // 2)

        def e2e_s(p=p, t=t):
            p.set_image(image)
            p.predict(PROMPT, score_threshold=t)
        sizes.append({"image_size": s, "set_image": timeit(lambda p=p: p.set_image(image), n, 2),
                      "predict_new_prompt": timeit(lambda p=p, t=t: p.predict(PROMPT, score_threshold=t), n, 2,
                                                   before=lambda: clear_text_cache(model)),
                      "end_to_end": timeit(e2e_s, n, 2, before=lambda: clear_text_cache(model))})
    res["image_sizes"] = sizes
    return res


def bench_onnxruntime(model, pred, image, args) -> dict:
    """sam_lite.export graphs in onnxruntime (same thread count): image encoder, prompt decoder, and image -> mask
    logits (PyTorch preprocessing and MiniLM, no NMS / upsampling). Exports to ``args.onnx_dir``."""
    import onnxruntime as ort

    from sam_lite.export import export_onnx

    t = time.perf_counter()
    paths = export_onnx(model, args.onnx_dir, check=False, text_encoder=True)
    export_s = time.perf_counter() - t
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # onnxruntime's idle threads spin by default and would steal the cores PyTorch needs for MiniLM in between
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    enc = ort.InferenceSession(str(paths["image_encoder"]), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(paths["prompt_decoder"]), opts, providers=["CPUExecutionProvider"])
    enc_names = [o.name for o in enc.get_outputs()]
    dec_inputs = [i.name for i in dec.get_inputs()]

    def encode_image():
        pv, _ = pred.processor.preprocess(image)
        return dict(zip(enc_names, enc.run(None, {"pixel_values": pv.numpy()})))

    def decode(img):
        text = model.encode_text([PROMPT])
        feeds = {**img, "text_features": text["features"].numpy(), "text_padding_mask": text["padding_mask"].numpy(),
                 "sentence": text["sentence"].numpy()}
        return dec.run(None, {k: feeds[k] for k in dec_inputs})

    img = encode_image()
    r = max(5, args.runs // 2)
    with torch.inference_mode():
        return {"export_s": export_s, "onnxruntime": ort.__version__,
                "set_image": timeit(encode_image, r, 2),
                "predict_new_prompt": timeit(lambda: decode(img), r, 2, before=lambda: clear_text_cache(model)),
                "end_to_end": timeit(lambda: decode(encode_image()), r, 2, before=lambda: clear_text_cache(model)),
                "note": "preprocessing and MiniLM in PyTorch; raw mask logits (no threshold/NMS/upsampling)"}


# --- baselines -----------------------------------------------------------------------------------------------------
def count_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


@torch.inference_mode()
def bench_sam(image, args) -> dict:
    """transformers SamModel(SamConfig()): ViT-B image encoder at 1024 + prompt encoder/mask decoder, one point."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    log("[SAM ViT-B] building (random weights) ...")
    torch.manual_seed(0)
    t = time.perf_counter()
    model = SamModel(SamConfig()).eval()
    build_s = time.perf_counter() - t
    proc = SamProcessor(image_processor=SamImageProcessor())
    w, h = image.size
    point = [[[w * 0.5, h * 0.6]]]
    phases: dict[str, list[float]] = {"preprocess": [], "image_encoder": [], "prompt_decoder": [], "postprocess": []}

    def once(record: bool):
        t0 = time.perf_counter()
        inputs = proc(image, input_points=point, return_tensors="pt")
        t1 = time.perf_counter()
        emb = model.get_image_embeddings(inputs["pixel_values"])
        t2 = time.perf_counter()
        out = model(image_embeddings=emb, input_points=inputs["input_points"].float(), multimask_output=True)
        t3 = time.perf_counter()
        masks = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
        t4 = time.perf_counter()
        if record:
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                v = v * 1e3
                phases[k].append(v)
        return emb, inputs, masks

    log(f"[SAM ViT-B] {args.sam_warmup} warm-up + {args.sam_runs} runs (~8 s each on 2 cores) ...")
    for _ in range(args.sam_warmup):
        once(False)
    for _ in range(args.sam_runs):
        emb, inputs, masks = once(True)
    e2e = [sum(v) for v in zip(*phases.values())]
    dec = timeit(lambda: model(image_embeddings=emb, input_points=inputs["input_points"].float(),
                               multimask_output=True),
                 max(5, args.runs // 2), 2)
    res = {"name": "SAM ViT-B (transformers SamModel(SamConfig()))", "input": "1024 x 1024 (longest side, padded)",
           "params": count_params(model), "params_image_encoder": count_params(model.vision_encoder),
           "build_s": build_s, "runs": args.sam_runs,
           "phases_median_ms": {k: statistics.median(v) for k, v in phases.items()},
           "set_image": {"median_ms": statistics.median([a + b for a, b in zip(phases["preprocess"],
                                                                                phases["image_encoder"])])},
           "predict_new_prompt": {"median_ms": dec["median_ms"] + statistics.median(phases["postprocess"]),
                                  "note": "point prompt: prompt encoder + mask decoder + postprocess"},
           "end_to_end": {"median_ms": statistics.median(e2e), "min_ms": min(e2e), "max_ms": max(e2e),
                          "runs": args.sam_runs, "warmup": args.sam_warmup},
           "masks_shape": list(masks[0].shape)}
    del model
    return res


@torch.inference_mode()
def bench_clipseg(image, args) -> dict:
    """CLIPSegForImageSegmentation, ViT-B/16 at 352 px (the released CIDAS/clipseg-rd64-refined layout)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    log("[CLIPSeg ViT-B/16] building (random weights) ...")
    torch.manual_seed(0)
    cfg = CLIPSegConfig(vision_config={"patch_size": 16}, use_complex_transposed_convolution=True)
    model = CLIPSegForImageSegmentation(cfg).eval()
    size = 352
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    # "a red car" as CLIP BPE ids: <|startoftext|> a red car <|endoftext|>
    input_ids = torch.tensor([[49406, 320, 736, 1615, 49407]])
    attention_mask = torch.ones_like(input_ids)
    w, h = image.size

    def preprocess():
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        return (x - mean) / std

    def e2e():
        pv = preprocess()
        logits = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pv).logits
        return F.interpolate(logits.reshape(1, 1, size, size), size=(h, w), mode="bilinear")[0] > 0

    pv = preprocess()
    log("[CLIPSeg ViT-B/16] runs ...")
    res = {"name": "CLIPSeg ViT-B/16 (transformers, rd64, refined decoder)", "input": f"{size} x {size}",
           "params": count_params(model), "params_image_encoder": count_params(model.clip.vision_model),
           "end_to_end": timeit(e2e, min(args.runs, 10), min(args.warmup, 2)),
           "model_forward": timeit(lambda: model(input_ids=input_ids, attention_mask=attention_mask,
                                                 pixel_values=pv), 5, 1)}
    res["set_image"] = {"median_ms": None, "note": "no image cache in the API: every prompt runs the ViT"}
    res["predict_new_prompt"] = {"median_ms": res["end_to_end"]["median_ms"],
                                 "note": "= end to end: the transformers API has no cached-image path"}
    del model
    return res


# --- report --------------------------------------------------------------------------------------------------------
def fmt_ms(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def fmt_n(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def ratio(a, b) -> str:
    return "n/a" if not a or not b else f"{b / a:,.1f}x"


def verdict(ok) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def summary_table(R: dict) -> str:
    ours = R["ours"]
    rows = [("sam-lite base (ours)", f"{ours['config']['image_size']} px", ours["params"]["total"],
             ours["set_image"]["median_ms"], ours["predict_new_prompt"]["median_ms"],
             ours["end_to_end"]["median_ms"])]
    threads = R["env"]["threads"]
    alt = ours.get("alt_threads", {}).get("threads")
    for key, label in (("alt_threads", f"sam-lite base, {alt} thread(s)"),
                       ("onnxruntime", f"sam-lite base, ONNX Runtime ({threads} thread(s))*")):
        o = ours.get(key)
        if o and "error" not in o:
            rows.append((label, f"{ours['config']['image_size']} px",
                         ours["params"]["total"], o["set_image"]["median_ms"], o["predict_new_prompt"]["median_ms"],
                         o["end_to_end"]["median_ms"]))
    for key in ("clipseg", "sam"):
        b = R.get(key)
        if b and "error" not in b:
            rows.append((b["name"], b["input"], b["params"], b["set_image"]["median_ms"],
                         b["predict_new_prompt"]["median_ms"], b["end_to_end"]["median_ms"]))
    rows[0] = (f"{rows[0][0]}, {threads} thread(s)", *rows[0][1:])
    lines = ["| model | input | params | set_image (encode image) | new prompt, cached image | image -> masks |",
             "|---|---|---:|---:|---:|---:|"]
    for name, inp, p, a, b, c in rows:
        lines.append(f"| {name} | {inp} | {fmt_n(p)} | {fmt_ms(a)} | {fmt_ms(b)} | {fmt_ms(c)} |")
    for key in ("clipseg", "sam"):
        b = R.get(key)
        if b and "error" not in b:
            short = "CLIPSeg" if key == "clipseg" else "SAM ViT-B"
            lines.append(f"| *ours is faster than {short} by* | | "
                         f"{ratio(ours['params']['total'], b['params'])} fewer | "
                         f"{ratio(ours['set_image']['median_ms'], b['set_image']['median_ms'])} | "
                         f"{ratio(ours['predict_new_prompt']['median_ms'], b['predict_new_prompt']['median_ms'])} | "
                         f"{ratio(ours['end_to_end']['median_ms'], b['end_to_end']['median_ms'])} |")
    return "\n".join(lines)


def goals(R: dict) -> list[tuple[str, str, str]]:
    ours = R["ours"]
    e2e = ours["end_to_end"]["median_ms"]
    out = [("new prompt on a cached image <= 10 ms", fmt_ms(ours["predict_new_prompt"]["median_ms"]) +
            f" (fastest run {fmt_ms(ours['predict_new_prompt']['min_ms'])}; repeated prompt, text cache hit: "
            f"{fmt_ms(ours['predict_cached_prompt']['median_ms'])})",
            verdict(ours["predict_new_prompt"]["median_ms"] <= GOALS["prompt_ms"])),
           (f"image -> masks <= 30 ms at {ours['config']['image_size']} px",
            f"{fmt_ms(e2e)} (fastest run {fmt_ms(ours['end_to_end']['min_ms'])})",
            verdict(e2e <= GOALS["e2e_ms"]))]
    for key, short, goal in (("clipseg", "CLIPSeg ViT-B/16", "vs_clipseg"), ("sam", "SAM ViT-B", "vs_sam")):
        b = R.get(key)
        if b and "error" not in b:
            x = b["end_to_end"]["median_ms"] / e2e
            out.append((f">= {GOALS[goal]:.0f}x faster than {short} end to end", f"{x:,.1f}x",
                        verdict(x >= GOALS[goal])))
        else:
            out.append((f">= {GOALS[goal]:.0f}x faster than {short} end to end", "not measured", "n/a"))
    inf = R.get("memory", {}).get("inference", {})
    ox = R.get("memory", {}).get("onnx-inference", {})
    extra = (f" (PyTorch imports alone: {inf['rss_after_imports_mb']:,.0f} MB; ONNX Runtime without PyTorch: "
             f"{ox['peak_rss_mb']:,.0f} MB)") if "peak_rss_mb" in ox and "peak_rss_mb" in inf else ""
    out.append(("inference peak memory <= 1 GB", f"{inf['peak_rss_mb']:,.0f} MB{extra}" if "peak_rss_mb" in inf else
                "not measured", verdict(inf["peak_rss_mb"] <= GOALS["inference_rss_mb"]) if "peak_rss_mb" in inf
                else "n/a"))
    return out


def render_md(R: dict, notes: str) -> str:
    env, ours = R["env"], R["ours"]
    L = ["# sam-lite benchmarks", "",
         f"Measured {env['date']} by `python {' '.join(env['argv'])}` (scripts/benchmark.py; "
         f"whole run {env['wall_s']:.0f} s).", "",
         f"* Machine: {env['cpu_model']}, {env['cpu_count']} cores ({', '.join(env['cpu_flags']) or 'no AVX'}), "
         f"{env['mem_gb']:.0f} GB RAM, Linux {env['kernel']}",
         f"* Code: git {env.get('git', 'unknown')}; PyTorch {env['torch']} (torch.get_num_threads() = "
         f"{env['threads']}), transformers "
         f"{env['transformers']}, Python {env['python']}",
         f"* Other processes used on average {env['other_cores_busy']:.2f} of the {env['cpu_count']} cores during the "
         f"run (load average {env['loadavg_start'][0]:.2f} at the start, {env['loadavg_end'][0]:.2f} at the end)"
         + (": **the machine was shared, so every latency here is pessimistic**." if env["other_cores_busy"] > 0.3
            else "."),
         f"* Weights: {env['weights']}. Latency does not depend on the weights, except post-processing, which "
         f"grows with the number of masks returned ({ours['masks_returned']} here, score threshold "
         f"{ours['score_threshold']:.3f}).",
         f"* Input: {env['image']} ({env['image_size'][0]}x{env['image_size'][1]}), prompt \"{PROMPT}\". "
         f"Medians of {ours['set_image']['runs']} runs after {ours['set_image']['warmup']} warm-up runs unless "
         f"stated. \"New prompt\" empties the text-encoder cache before each call, so MiniLM runs every time.",
         "", "## Goals", "", "| goal | measured | verdict |", "|---|---|---|"]
    L += [f"| {g} | {m} | {v} |" for g, m, v in goals(R)]
    L += ["", "## Latency: sam-lite vs the models users would compare with", "", summary_table(R), ""]
    sam, clip = R.get("sam"), R.get("clipseg")
    if ours.get("onnxruntime") and "error" not in ours["onnxruntime"]:
        L.append("\\* ONNX Runtime: `sam_lite.export` graphs (image encoder, prompt decoder) in onnxruntime "
                 f"{ours['onnxruntime']['onnxruntime']}; preprocessing and MiniLM stay in PyTorch and the numbers stop "
                 "at the raw mask logits (no thresholding, NMS or upsampling to the image size).")
    elif ours.get("onnxruntime"):
        L.append(f"ONNX Runtime row missing: {ours['onnxruntime']['error']}")
    if ours.get("alt_threads"):
        L.append(f"The {ours['alt_threads']['threads']}-thread row repeats the sam-lite measurement at the other "
                 "thread count (1 thread: what sam-lite gets when the second core is taken by something else).")
    L.append("")
    if sam and "error" not in sam:
        ph = sam["phases_median_ms"]
        L.append(f"SAM ViT-B: {sam['runs']} runs after {sam['end_to_end']['warmup']} warm-up (slow); phases "
                 + ", ".join(f"{k} {fmt_ms(v)}" for k, v in ph.items()) + ". Its prompt is one point "
                 "(multimask output, 3 masks), not text; set_image = preprocessing + ViT-B encoder.")
    if clip and "error" not in clip:
        L.append(f"CLIPSeg: model forward alone {fmt_ms(clip['model_forward']['median_ms'])}; end to end adds "
                 "resizing to 352x352, CLIP normalisation and upsampling the logits to the image size. The "
                 "transformers API re-runs the ViT for every prompt, so a new prompt costs a full forward. "
                 "`CLIPSegConfig()` defaults to ViT-B/32 at 224; the released CLIPSeg (rd64-refined) is ViT-B/16 "
                 "at 352 with the complex transposed-convolution decoder, which is what is built here "
                 "(`vision_config.patch_size=16`, `use_complex_transposed_convolution=True`).")
    L += ["", "All baselines use random weights built from their `transformers` configs (no downloads); "
          "ours includes PIL conversion, preprocessing, NMS and upsampling masks to the image size in every number.",
          "", "### More sam-lite latencies", "", "| what | median | min | max |", "|---|---:|---:|---:|"]
    for key, label in (("set_image", "set_image (load, preprocess, encode)"),
                       ("predict_new_prompt", "predict, new prompt (MiniLM runs)"),
                       ("predict_cached_prompt", "predict, repeated prompt (text cache hit)"),
                       ("predict_4_new_prompts_one_call", "predict, 4 new prompts in one call"),
                       ("end_to_end", "image -> masks (set_image + new prompt)")):
        t = ours[key]
        L.append(f"| {label} | {fmt_ms(t['median_ms'])} | {fmt_ms(t['min_ms'])} | {fmt_ms(t['max_ms'])} |")

    L += ["", "## Parameters per module (sam-lite base)", "", "| module | parameters |", "|---|---:|"]
    L += [f"| {k} | {v:,} |" for k, v in ours["params"].items()]

    tr = R.get("training", {})
    mem = R.get("memory", {})
    L += ["", "## Training throughput and peak memory", "",
          f"One optimisation step = forward of batch {R['env']['batch']} at {ours['config']['image_size']} px with "
          f"{min(R['env']['batch'], len(TRAIN_PROMPTS))} different prompts, a mask/match/box/presence loss on the "
          "final and auxiliary outputs, backward, AdamW "
          f"({tr.get('trainable_tensors', '?')} trainable tensors, {tr.get('trainable_params', 0):,} parameters; "
          "the Lite0 backbone and MiniLM are frozen in the default config; bf16 warms up with a batch of 2, float32 "
          "with the full batch). Each row runs in its own fresh process; peak memory is that process's peak "
          "resident set (`VmHWM`, the figure `ru_maxrss` reports, read from /proc because a child's `ru_maxrss` "
          "starts at its parent's). `import torch` alone (this CUDA build of torch) is ~700 MB of it.", "",
          "| run | time (median) | images/s | peak RSS | RSS after imports | RSS after model build |",
          "|---|---:|---:|---:|---:|---:|"]
    for key, label in (("train-bf16", "training, `torch.autocast('cpu', dtype=torch.bfloat16)`"),
                       ("train-fp32", "training, float32"), ("inference", "inference (5 x set_image + predict)"),
                       ("onnx-inference", "inference, ONNX Runtime without PyTorch (image -> mask logits)")):
        r = mem.get(key, {})
        if "error" in r:
            L.append(f"| {label} | {r['error']} | | | | |")
            continue
        if not r:
            continue
        step = (f"{r['median_step_s']:.2f} s / step ({len(r['step_s'])} step(s) after {R['env']['train_warmup']} "
                "warm-up)" if "median_step_s" in r else "")
        if "end_to_end" in r:
            step = f"{fmt_ms(r['end_to_end']['median_ms'])} image -> mask logits ({r['threads']} thread(s))"
        ips = f"{r['images_per_s']:.2f}" if "images_per_s" in r else ""
        L.append(f"| {label} | {step} | {ips} | {r['peak_rss_mb']:,.0f} MB | {r['rss_after_imports_mb']:,.0f} MB | "
                 f"{r['rss_after_build_mb']:,.0f} MB |")

    prof = ours["profile"]
    L += ["", "## Where the time goes", "",
          "Wall time per call inside each part (forward hooks; groups do not nest; \"other\" is the remainder).", "",
          "| set_image | ms | share |", "|---|---:|---:|"]
    tot = sum(prof["set_image_ms"].values())
    L += [f"| {k} | {v:.1f} | {v / tot:.0%} |" for k, v in prof["set_image_ms"].items()]
    L += [f"| **total** | **{tot:.1f}** | |", "", "| predict (new prompt) | ms | share |", "|---|---:|---:|"]
    tot = sum(prof["predict_ms"].values())
    L += [f"| {k} | {v:.1f} | {v / tot:.0%} |" for k, v in prof["predict_ms"].items()]
    L += [f"| **total** | **{tot:.1f}** | |", "", "<details><summary>torch.profiler: top operators</summary>", "",
          "set_image (5 calls):", "", "```", ours["top_ops_set_image"], "```", "",
          "predict, new prompt (10 calls):", "", "```", ours["top_ops_predict"], "```", "", "</details>"]

    L += ["", "## Input size: latency", "",
          "The same weights, with the processor resizing to each size (stride-16 token grid and stride-4 masks scale "
          "with it). Medians of " + str(ours["image_sizes"][0]["set_image"]["runs"] if ours["image_sizes"] else 0)
          + " runs. Validation quality at each size (and with a sharper ImageNet prior): docs/experiments.md, "
          "\"Quality vs latency\".", "", "| image size | set_image | new prompt | image -> masks |",
          "|---:|---:|---:|---:|"]
    for s in ours["image_sizes"]:
        L.append(f"| {s['image_size']} | {fmt_ms(s['set_image']['median_ms'])} | "
                 f"{fmt_ms(s['predict_new_prompt']['median_ms'])} | {fmt_ms(s['end_to_end']['median_ms'])} |")
    L += ["", "## Notes", "", "<!-- notes:begin -->", notes.strip() or "(none yet)", "<!-- notes:end -->", ""]
    return "\n".join(L)


def existing_notes(path: Path) -> str:
    if not path.is_file():
        return ""
    text = path.read_text()
    a, b = text.find("<!-- notes:begin -->"), text.find("<!-- notes:end -->")
    return text[a + len("<!-- notes:begin -->"):b].strip() if 0 <= a < b else ""


# --- main ----------------------------------------------------------------------------------------------------------
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
           "train_warmup": args.train_warmup}
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
