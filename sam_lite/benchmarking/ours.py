"""sam-lite measurements: the model, latency of set_image / predict / end to end, a per-module profile, a training
step on random data, and the ``sam_lite.export`` graphs in ONNX Runtime."""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from .common import EXAMPLE_IMAGE, PROMPT, ROOT, TRAIN_PROMPTS, empty_visual_prompt_feeds, log
from .public_api import bench_public_api_threads
from .timing import timeit


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
        # the base preset (with the concept map), random heads
        model = SamLiteModel(SamLiteConfig.from_preset("base", **({"image_size": image_size} if image_size else {})))
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

    enc = model.image_encoder
    if hasattr(enc, "folded_backbone"):  # inference runs the BN-folded copy of the backbone
        with torch.inference_mode():
            bb = enc.folded_backbone()
        stem, blocks, head = [bb.stem], list(bb.blocks), [bb.head]
    else:
        bb = enc.backbone
        stem, blocks, head = [bb._conv_stem, bb._bn0], list(bb._blocks), [bb._conv_head, bb._bn1]
    stage = bb.stage_of_block
    img_groups = {
        "backbone stages 0-4 (Lite0 features)": stem + [b for b, s in zip(blocks, stage) if s < 5],
        "backbone stages 5-6 + conv head (prior classifier only)": [b for b, s in zip(blocks, stage) if s >= 5]
        + head,
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
    groups = {"text encoder: MiniLM transformer (PyTorch)": [te.bert], "text projection": [model.text_proj],
              "fusion (image tokens x text)": list(model.fusion), "query decoder": [model.decoder],
              "heads (all decoder layers, incl. aux)": [model.heads]}
    priors = getattr(model, "priors", None)
    if priors is not None and len(priors):
        groups[f"priors ({', '.join(priors.keys())})"] = list(priors.values())
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
    pred["text encoder: tokenizer, pooling (and MiniLM when in ONNX Runtime)"] = outer.total[
        "text encoder total"] - timer.total["text encoder: MiniLM transformer (PyTorch)"]
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
    pred = SamLitePredictor(model, device=getattr(args, "device", None))  # --device: the model moves there
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
    if model.config.geometric_prompts:  # a click in the middle of the photo: the one object under it
        click = [[image.width / 2, image.height / 2]]
        res["predict_click"] = timeit(lambda: pred.predict(points=click), r, w)

    def e2e():
        pred.set_image(image)
        pred.predict(PROMPT, score_threshold=thr)
    res["end_to_end"] = timeit(e2e, r, w, before=lambda: clear_text_cache(model))

    res["public_api"] = bench_public_api_threads(pred, args, thr)

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
        feeds.update(empty_visual_prompt_feeds(dec.get_inputs(), feeds))  # a geometric export: no visual prompt
        return dec.run(None, {k: feeds[k] for k in dec_inputs})

    img = encode_image()
    r = max(5, args.runs // 2)
    with torch.inference_mode():
        return {"export_s": export_s, "onnxruntime": ort.__version__,
                "set_image": timeit(encode_image, r, 2),
                "predict_new_prompt": timeit(lambda: decode(img), r, 2, before=lambda: clear_text_cache(model)),
                "end_to_end": timeit(lambda: decode(encode_image()), r, 2, before=lambda: clear_text_cache(model)),
                "note": "preprocessing and MiniLM in PyTorch; raw mask logits (no threshold/NMS/upsampling)"}
