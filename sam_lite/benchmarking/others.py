"""The baselines users would compare with, built with random weights from their ``transformers`` configs (no
downloads): SAM ViT-B and CLIPSeg ViT-B/16."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from .common import log
from .timing import timeit


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
