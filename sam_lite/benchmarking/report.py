"""The report: number formatting, the summary table, the goals, and docs/benchmarks.md (keeping its notes block)."""

from __future__ import annotations

from pathlib import Path

from .common import GOALS, PROMPT, TRAIN_PROMPTS


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


def public_api_table(R: dict) -> str:
    """One row per thread count: set_image(JPEG path), a never-seen prompt, photo -> masks, and the same-run ratio
    of CLIPSeg's end to end to ours (empty when the public API was not measured)."""
    rows = R["ours"].get("public_api") or []
    if not rows:
        return ""
    clip = R.get("clipseg")
    clip_ms = clip["end_to_end"]["median_ms"] if clip and "error" not in clip else None
    lines = ["| threads | set_image (JPEG path) | new prompt (never seen) | photo -> masks | "
             "CLIPSeg ViT-B/16 end to end / ours (same run) |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        e2e = r["end_to_end"]["median_ms"]
        lines.append(f"| {r['threads']} | {fmt_ms(r['set_image']['median_ms'])} | "
                     f"{fmt_ms(r['predict_new_prompt']['median_ms'])} | {fmt_ms(e2e)} | {ratio(e2e, clip_ms)} |")
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
    api = (ours.get("public_api") or [None])[0]
    if api:
        for key, goal, what in (("set_image", "api_set_image_ms", "set_image"),
                                ("predict_new_prompt", "api_prompt_ms", "a new prompt")):
            v = api[key]["median_ms"]
            out.append((f"public API (JPEG path in, masks at its size out): {what} <= {GOALS[goal]:.0f} ms",
                        f"{fmt_ms(v)} ({api['threads']} thread(s); fastest run {fmt_ms(api[key]['min_ms'])})",
                        verdict(v <= GOALS[goal])))
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
    api = public_api_table(R)
    if api:
        L += ["### Through the public API", "",
              "`SamLitePredictor`: `set_image(\"" + env["image"] + "\")` decodes the JPEG every time; every new "
              "prompt is a word list never asked before (MiniLM runs, nothing is emptied); masks come back at the "
              "photo's size. The other rows of this report start from a decoded photo and empty the text cache.",
              "", api, ""]
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
                       ("predict_click", "predict, one click (geometric_prompts checkpoints)"),
                       ("end_to_end", "image -> masks (set_image + new prompt)")):
        if key not in ours:
            continue
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
