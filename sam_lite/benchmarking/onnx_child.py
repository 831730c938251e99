"""The ONNX Runtime child: image -> mask logits without PyTorch, to see the memory and latency of a PyTorch-free
deployment. ``children.run_child`` runs this file by path (``python sam_lite/benchmarking/onnx_child.py DIR
TOKENIZER_JSON THREADS RUNS``), not as ``sam_lite.benchmarking.onnx_child``: importing the ``sam_lite`` package
would import torch. ``scripts/benchmark.py --onnx-child ...`` runs it too. Standard library at the top only."""

from __future__ import annotations

import sys
import time
from pathlib import Path

try:
    from .common import EXAMPLE_IMAGE, PROMPT, empty_visual_prompt_feeds
except ImportError:  # run by path, outside the package: load common.py (standard library only) from its file
    import importlib.util

    _spec = importlib.util.spec_from_file_location("_sam_lite_benchmark_common", Path(__file__).with_name("common.py"))
    _common = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_common)
    EXAMPLE_IMAGE, PROMPT = _common.EXAMPLE_IMAGE, _common.PROMPT
    empty_visual_prompt_feeds = _common.empty_visual_prompt_feeds


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
        feeds.update(empty_visual_prompt_feeds(dec.get_inputs(), feeds))  # a geometric export: no visual prompt
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


if __name__ == "__main__":
    # run by path, this folder is sys.path[0]: take it off so that its module names cannot shadow anything the
    # imports in onnx_child (numpy, onnxruntime, PIL, tokenizers) look for
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    onnx_child(sys.argv[1:])
