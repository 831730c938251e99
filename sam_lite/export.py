"""Export sam-lite to ONNX: an image encoder and a prompt decoder (the text encoder stays in PyTorch by default).

The split mirrors :class:`sam_lite.SamLitePredictor`: the image encoder runs once per image, the prompt decoder once per
prompt (or batch of prompts). Usage::

    sam-lite export --checkpoint checkpoints/sam-lite-base --out exported/
    python -m sam_lite.export --checkpoint checkpoints/sam-lite-base --out exported/ [--text-encoder]
    sam-lite export ... --device cuda   # trace on a GPU (default: the CPU); the onnxruntime check runs on the CPU

Files written to ``--out``:

* ``image_encoder.onnx``: ``pixel_values [B,3,S,S]`` (preprocessed as by :class:`sam_lite.SamLiteProcessor`) ->
  ``image_tokens [B,N,D]`` (N = (S/16)^2), ``pixel_features [B,mask_dim,S/4,S/4]`` and, when the config uses the
  ImageNet prior, ``class_logits [B,1000,S/32,S/32]``, with the concept map ``concept_embedding [B,384,S/8,S/8]``,
  with ``image_presence`` ``image_concept [B,384]``.
* ``prompt_decoder.onnx``: ``image_tokens``, ``pixel_features``, [``class_logits``], [``concept_embedding``],
  [``image_concept``],
  ``text_features [B,T,384]``
  (MiniLM last hidden states), ``text_padding_mask [B,T]`` (bool, True = padding), ``sentence [B,384]``
  (normalised mean pool, used by the prior) -> ``pred_logits [B,K]``, ``pred_masks [B,K,S/4,S/4]``,
  ``pred_boxes [B,K,4]`` (normalised cxcywh of the padded input), ``presence_logits [B]``, ``scores [B,K]``
  (= sigmoid(pred_logits) * sigmoid(presence_logits)). Row i of every decoder input belongs to pair i: repeat the
  image outputs when several prompts share one image.
* with ``geometric_prompts`` in the config, the prompt decoder also takes a visual prompt per row, in pixels of the
  model input (after the processor's resize): ``point_coords [B,N,2]`` (x, y) float, ``point_labels [B,N]`` int64
  (1 positive, 0 negative, -1 padding), ``boxes [B,4]`` xyxy float with ``box_valid [B]`` bool, ``exemplars [B,E,4]``
  xyxy float with ``exemplar_valid [B,E]`` bool and ``text_valid [B]`` bool (False: the row has no text; give any
  text features, e.g. one zero token with padding True, and a zero sentence), and also returns ``pred_iou [B,K]``.
  N (``--max-points``, default 8) and E (``--max-exemplars``, default 4) are fixed in the graph: pad with label -1
  and valid False.
* optionally ``text_encoder.onnx``: ``input_ids [B,T]``, ``attention_mask [B,T]`` (int64, from the MiniLM tokenizer
  with ``max_length = max_text_tokens``) -> ``text_features``, ``sentence``.
* ``config.json`` (the model config) and ``onnx_export.json`` (names, shapes, opset, dynamic axes).

Batch is dynamic in every graph, the number of text tokens T is dynamic in the decoder (and the text encoder). The
image size S is fixed by the config.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SamLiteConfig
from .device import add_device_argument, module_device, resolve_device, to_device
from .modeling import SamLiteModel
from .modeling.attention import sine_position_encoding_2d
from .postprocessing import instance_scores
from .structures import GEOMETRY_FIELDS, ImageEmbedding, Prompt, TextEmbedding

DEFAULT_OPSET = 17
IMAGE_ENCODER_FILE = "image_encoder.onnx"
PROMPT_DECODER_FILE = "prompt_decoder.onnx"
TEXT_ENCODER_FILE = "text_encoder.onnx"
MANIFEST_FILE = "onnx_export.json"
OPTIONAL_DECODER_OUTPUTS = ("pred_semantic",)
GEOMETRY_INPUTS = ("point_coords", "point_labels", "boxes", "box_valid", "exemplars", "exemplar_valid", "text_valid")
GEOMETRY_KEYS = (*GEOMETRY_FIELDS, "text_valid")  # the Prompt fields behind GEOMETRY_INPUTS, in order
DEFAULT_MAX_POINTS, DEFAULT_MAX_EXEMPLARS = 8, 4
VERIFY_ATOL = 1e-3  # max abs difference main() accepts between onnxruntime and PyTorch (float32: ~1e-5 is typical)


def image_outputs(config: SamLiteConfig) -> list[str]:
    """Embedding keys the image encoder graph returns beyond tokens and pixel features, in order."""
    return (["class_logits"] if config.use_imagenet_prior else []) + \
        (["concept_embedding"] if config.concept_map else []) + (["image_concept"] if config.image_presence else [])


class ImageEncoderAdapter(nn.Module):
    """pixel_values -> (image_tokens, pixel_features[, class_logits][, concept_embedding]) as a tuple of tensors."""

    def __init__(self, model: SamLiteModel) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.extra = image_outputs(model.config)
        # the BN-folded inference backbone is built from the weights now, so the trace holds its kernels as constants
        model.image_encoder.folded_backbone()

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        emb = self.image_encoder(pixel_values)
        return (emb.tokens, emb.pixel_features, *(getattr(emb, k) for k in self.extra))


class PromptDecoderAdapter(nn.Module):
    """Image outputs + encoded text for B image-prompt pairs -> the final-layer predictions and the scores.

    Calls :meth:`SamLiteModel.decode` itself, so the graph follows whatever the model does; the auxiliary heads of the
    earlier decoder layers are not outputs and are pruned from the graph.
    """

    def __init__(self, model: SamLiteModel) -> None:
        super().__init__()
        self.model = model
        self.use_prior = model.config.use_imagenet_prior
        self.extra = image_outputs(model.config)
        self.geometric = model.config.geometric_prompts
        g = model.config.image_size // 16
        self.grid = (g, g)
        self.register_buffer("pos", sine_position_encoding_2d(g, g, model.config.d_model).to(module_device(model)),
                             persistent=False)
        if self.use_prior:  # materialise the MiniLM embeddings of the 1,000 class names so they become a constant
            model.priors["imagenet"].class_embedding_table(self.pos)

    def forward(self, image_tokens: Tensor, pixel_features: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        n = len(self.extra)
        extra, (text_features, text_padding_mask, sentence) = dict(zip(self.extra, rest[:n])), rest[n:n + 3]
        emb = embedding_from_outputs(self.model, image_tokens, pixel_features, extra, self.pos, self.grid)
        text = TextEmbedding(text_features, text_padding_mask, sentence)
        prompt = (Prompt(None, **dict(zip(GEOMETRY_KEYS, rest[n + 3:]))) if self.geometric
                  else Prompt(None, text_valid=torch.ones(text_features.shape[0], dtype=torch.bool,
                                                           device=text_features.device)))
        # pair i with image i (explicit index: no data-dependent branch in the traced graph)
        index = torch.arange(image_tokens.shape[0], device=image_tokens.device)
        out = self.model.decode(emb, prompt, text, image_index=index)
        scores = instance_scores(out)[0]  # the raw score (a calibration is applied after: postprocessing.calibrate)
        res = (out["pred_logits"], out["pred_masks"], out["pred_boxes"], out["presence_logits"], scores)
        if self.geometric:
            res = res + (out["pred_iou"],)
        # optional outputs of newer heads (e.g. the presence token's semantic union mask)
        return res + tuple(out[k] for k in OPTIONAL_DECODER_OUTPUTS if k in out)


def embedding_from_outputs(model: SamLiteModel, image_tokens: Tensor, pixel_features: Tensor,
                           extra: dict[str, Tensor], pos: Tensor, grid: tuple[int, int]) -> ImageEmbedding:
    """The image encoder graph's outputs -> the :class:`ImageEmbedding` decode reads (the concept map's
    probabilities are recomputed from its embedding, so the graph's interface stays the embedding)."""
    concept = extra.get("concept_embedding")
    probs = None
    if concept is not None:
        probs = model.image_encoder.concept_map.logits(concept.float()).softmax(1)[:, :-1]
    return ImageEmbedding(tokens=image_tokens, pos=pos.to(image_tokens.dtype), grid=grid,
                          pixel_features=pixel_features, class_logits=extra.get("class_logits"),
                          concept_embedding=concept, concept_probs=probs, image_concept=extra.get("image_concept"))


class TextEncoderAdapter(nn.Module):
    """input_ids, attention_mask -> (text_features zeroed at padding, normalised mean-pooled sentence)."""

    def __init__(self, model: SamLiteModel) -> None:
        super().__init__()
        self.bert = model.text_encoder.bert

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        m = attention_mask.to(hidden.dtype)[..., None]
        sentence = F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)
        return hidden * m, sentence


def image_encoder_io(config: SamLiteConfig) -> tuple[list[str], list[str], dict]:
    outputs = ["image_tokens", "pixel_features"] + image_outputs(config)
    dyn = {name: {0: "batch"} for name in ["pixel_values", *outputs]}
    return ["pixel_values"], outputs, dyn


def prompt_decoder_io(config: SamLiteConfig, optional: tuple[str, ...] = ()) -> tuple[list[str], list[str], dict]:
    geometric = config.geometric_prompts
    inputs = ["image_tokens", "pixel_features"] + image_outputs(config) + [
        "text_features", "text_padding_mask", "sentence"] + (list(GEOMETRY_INPUTS) if geometric else [])
    outputs = ["pred_logits", "pred_masks", "pred_boxes", "presence_logits", "scores",
               *(["pred_iou"] if geometric else []), *optional]
    dyn = {name: {0: "batch"} for name in inputs + outputs}
    dyn["text_features"] = {0: "batch", 1: "text_tokens"}
    dyn["text_padding_mask"] = {0: "batch", 1: "text_tokens"}
    return inputs, outputs, dyn


def example_inputs(model: SamLiteModel, batch: int = 2, prompts: list[str] | None = None,
                   max_points: int = DEFAULT_MAX_POINTS, max_exemplars: int = DEFAULT_MAX_EXEMPLARS
                   ) -> dict[str, Tensor]:
    """Random pixel values and real encoded prompts, for tracing and for checking an export; with geometric prompts
    also visual prompts (row 0: points and a box, with text; row 1: an exemplar, without text; then alternating)."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    prompts = list(prompts or (["a red car", "dog"] * batch)[:batch])
    if not cfg.geometric_prompts:
        with torch.no_grad():
            text = model.encode_prompt(prompts)
        return {"pixel_values": pixel_values, "text_features": text.features.float(),
                "text_padding_mask": text.padding_mask, "sentence": text.sentence.float()}
    s = cfg.image_size
    rows = []
    for i in range(batch):
        if i % 2 == 0:
            rows.append({"points": torch.rand(2, 2, generator=g) * s, "point_labels": torch.tensor([1, 0]),
                         "box": torch.tensor([0.1, 0.2, 0.6, 0.7]) * s})
        else:
            rows.append({"exemplars": torch.tensor([[0.2, 0.2, 0.5, 0.6]]) * s})
            prompts[i] = ""
    prompt = Prompt.from_rows(prompts, rows, max_points, max_exemplars)
    with torch.no_grad():
        text = model.encode_prompt(prompt)
    return {"pixel_values": pixel_values, "text_features": text.features.float(),
            "text_padding_mask": text.padding_mask, "sentence": text.sentence.float(),
            **{name: getattr(prompt, key) for name, key in zip(GEOMETRY_INPUTS, GEOMETRY_KEYS)}}


def prompt_from_inputs(ex: dict[str, Tensor]) -> Prompt:
    """The :class:`Prompt` of :meth:`SamLiteModel.decode` from export inputs (text-only without visual inputs)."""
    if GEOMETRY_INPUTS[0] not in ex:
        return Prompt(None, text_valid=torch.ones(ex["text_features"].shape[0], dtype=torch.bool,
                                                  device=ex["text_features"].device))
    return Prompt(None, **{key: ex[name] for name, key in zip(GEOMETRY_INPUTS, GEOMETRY_KEYS)})


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dyn: dict,
            opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python scalars from shapes (the fixed image grid)
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dyn,
                          opset_version=opset, do_constant_folding=True, dynamo=False)


@torch.no_grad()
def export_onnx(model: SamLiteModel, out_dir: str | Path, opset: int = DEFAULT_OPSET, text_encoder: bool = False,
                check: bool = True, max_points: int = DEFAULT_MAX_POINTS,
                max_exemplars: int = DEFAULT_MAX_EXEMPLARS) -> dict[str, Path]:
    """Export ``model`` (float32, eval mode) to ``out_dir``; return {"image_encoder": path, "prompt_decoder": path,
    ["text_encoder": path,] "config": path, "manifest": path}. With ``check``, ``onnx.checker`` validates each file.
    ``max_points`` / ``max_exemplars``: the fixed N and E of the visual-prompt inputs (geometric_prompts only).
    """
    if max_points < 1 or max_exemplars < 1:
        raise ValueError(f"max_points and max_exemplars must be >= 1, got {max_points}, {max_exemplars}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    dtype = next(model.parameters()).dtype
    model.float().eval()
    cfg = model.config
    try:
        # traced on the model's device (sam-lite export --device); the inputs are made on the CPU, then moved
        ex = to_device(example_inputs(model, batch=2, max_points=max_points, max_exemplars=max_exemplars),
                       module_device(model))
        paths: dict[str, Path] = {}

        enc = ImageEncoderAdapter(model).eval()
        names_in, names_out, dyn = image_encoder_io(cfg)
        paths["image_encoder"] = out / IMAGE_ENCODER_FILE
        _export(enc, (ex["pixel_values"],), paths["image_encoder"], names_in, names_out, dyn, opset)

        image_out = enc(ex["pixel_values"])
        dec = PromptDecoderAdapter(model).eval()
        dec_args = (*image_out, ex["text_features"], ex["text_padding_mask"], ex["sentence"],
                    *(ex[k] for k in GEOMETRY_INPUTS if k in ex))
        optional = _optional_outputs(model, ex)
        names_in, names_out, dyn = prompt_decoder_io(cfg, optional)
        paths["prompt_decoder"] = out / PROMPT_DECODER_FILE
        _export(dec, dec_args, paths["prompt_decoder"], names_in, names_out, dyn, opset)

        if text_encoder:
            tok = model.text_encoder.tokenizer(["a red car", "dog"], padding=True, truncation=True,
                                               max_length=cfg.max_text_tokens, return_tensors="pt")
            paths["text_encoder"] = out / TEXT_ENCODER_FILE
            tok = to_device(dict(tok), module_device(model))
            _export(TextEncoderAdapter(model).eval(), (tok["input_ids"], tok["attention_mask"]),
                    paths["text_encoder"], ["input_ids", "attention_mask"], ["text_features", "sentence"],
                    {n: {0: "batch", 1: "text_tokens"} for n in ["input_ids", "attention_mask", "text_features"]}
                    | {"sentence": {0: "batch"}}, opset)

        if check:
            import onnx

            for key in ("image_encoder", "prompt_decoder", "text_encoder"):
                if key in paths:
                    onnx.checker.check_model(str(paths[key]))

        paths["config"] = out / "config.json"
        cfg.save(paths["config"])
        s = cfg.image_size
        manifest = {
            "format": "sam-lite onnx export", "opset": opset, "image_size": s,
            "preprocessing": "resize longest side to image_size (bilinear, antialias), (x - 127) / 128, pad "
                             "bottom/right with 0 to image_size x image_size (sam_lite.SamLiteProcessor)",
            "image_encoder": {"file": IMAGE_ENCODER_FILE, "inputs": {"pixel_values": ["batch", 3, s, s]},
                              "outputs": dict(zip(image_encoder_io(cfg)[1], [
                                  ["batch", (s // 16) ** 2, cfg.d_model], ["batch", cfg.mask_dim, s // 4, s // 4],
                                  ["batch", 1000, s // 32, s // 32]]))},
            "prompt_decoder": {"file": PROMPT_DECODER_FILE, "inputs": prompt_decoder_io(cfg)[0],
                               "outputs": {"pred_logits": ["batch", cfg.num_queries],
                                           "pred_masks": ["batch", cfg.num_queries, s // 4, s // 4],
                                           "pred_boxes": ["batch", cfg.num_queries, 4], "presence_logits": ["batch"],
                                           "scores": ["batch", cfg.num_queries],
                                           **({"pred_iou": ["batch", cfg.num_queries]} if cfg.geometric_prompts
                                              else {}),
                                           **{k: ["batch", s // 4, s // 4] for k in optional}},
                               "text_features": ["batch", "text_tokens (<= max_text_tokens)", cfg.text_dim],
                               "text_padding_mask": "bool, True = padding",
                               **({"visual_prompt": geometry_manifest(max_points, max_exemplars)}
                                  if cfg.geometric_prompts else {})},
            "text_encoder": ({"file": TEXT_ENCODER_FILE, "tokenizer": "sentence-transformers/all-MiniLM-L6-v2",
                              "max_length": cfg.max_text_tokens} if text_encoder else None),
        }
        paths["manifest"] = out / MANIFEST_FILE
        paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n")
        return paths
    finally:
        model.to(dtype).train(was_training)


def geometry_manifest(max_points: int, max_exemplars: int) -> dict:
    """What the visual-prompt inputs of the prompt decoder mean (for onnx_export.json)."""
    n, e = max_points, max_exemplars
    return {"coordinates": "pixels of the model input: the photo resized by the processor (longest side to "
                           "image_size), before the bottom/right padding; pixel indices (x, y), as in SAM; from photo "
                           "pixels X: (X + 0.5) * resized / original - 0.5",
            "point_coords": ["batch", n, 2], "point_labels": {"shape": ["batch", n], "dtype": "int64",
                                                              "values": "1 positive, 0 negative, -1 padding"},
            "boxes": ["batch", 4], "box_valid": {"shape": ["batch"], "dtype": "bool"},
            "exemplars": ["batch", e, 4], "exemplar_valid": {"shape": ["batch", e], "dtype": "bool"},
            "text_valid": {"shape": ["batch"], "dtype": "bool",
                           "meaning": "False: no text (text inputs ignored, e.g. one zero token with padding True "
                                      "and a zero sentence)"},
            "max_points": n, "max_exemplars": e,
            "pred_iou": "predicted IoU of each query's mask with the prompted object (ranks alternatives)"}


def _optional_outputs(model: SamLiteModel, ex: dict[str, Tensor]) -> tuple[str, ...]:
    """Which of OPTIONAL_DECODER_OUTPUTS this model's decode() returns (checked on the example inputs)."""
    out = run_pytorch(model, ex)
    return tuple(k for k in OPTIONAL_DECODER_OUTPUTS if k in out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sam-lite export", description="Export a sam-lite checkpoint to ONNX "
                                 "(image encoder + prompt decoder; optionally the MiniLM text encoder).")
    ap.add_argument("--checkpoint", required=True, help="directory written by SamLiteModel.save_pretrained")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--text-encoder", action="store_true", help="also export the MiniLM text encoder")
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch comparison")
    ap.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS,
                    help="visual prompts (geometric_prompts checkpoints): points per prompt, fixed in the graph")
    ap.add_argument("--max-exemplars", type=int, default=DEFAULT_MAX_EXEMPLARS,
                    help="visual prompts: exemplar boxes per prompt, fixed in the graph")
    add_device_argument(ap, default="cpu", help_extra=" (the device the graphs are traced on; the check against "
                                                      "onnxruntime runs on the CPU)")
    args = ap.parse_args(argv)
    if args.max_points < 1 or args.max_exemplars < 1:
        print("error: --max-points and --max-exemplars must be >= 1", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        model = SamLiteModel.from_pretrained(args.checkpoint).to(device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = export_onnx(model, args.out, opset=args.opset, text_encoder=args.text_encoder,
                        max_points=args.max_points, max_exemplars=args.max_exemplars)
    for key, p in paths.items():
        print(f"{key}: {p}")
    if not args.no_verify:
        model.to("cpu")  # onnxruntime runs on the CPU; compare with PyTorch there
        err = verify_onnx(model, paths, max_points=args.max_points, max_exemplars=args.max_exemplars)
        print("max abs difference onnxruntime vs PyTorch: " + ", ".join(f"{k} {v:.2e}" for k, v in err.items()))
        bad = sorted(k for k, v in err.items() if not v <= VERIFY_ATOL)
        if bad:
            print(f"error: onnxruntime differs from PyTorch by more than {VERIFY_ATOL} in {bad}", file=sys.stderr)
            return 1
    return 0


@torch.no_grad()
def run_pytorch(model: SamLiteModel, ex: dict[str, Tensor]) -> dict[str, Tensor]:
    """The PyTorch reference for the exported graphs on the inputs of :func:`example_inputs`."""
    model.float().eval()
    ex = to_device(ex, module_device(model))  # on the model's device; the answers come back on the CPU
    emb = model.encode_image(ex["pixel_values"])
    text = TextEmbedding(ex["text_features"], ex["text_padding_mask"], ex["sentence"])
    out = model.decode(emb, prompt_from_inputs(ex), text,
                       image_index=torch.arange(ex["pixel_values"].shape[0], device=ex["pixel_values"].device))
    res = {"image_tokens": emb.tokens, "pixel_features": emb.pixel_features}
    res.update({k: getattr(emb, k) for k in image_outputs(model.config)})
    res.update({k: out[k] for k in ("pred_logits", "pred_masks", "pred_boxes", "presence_logits")})
    res["scores"] = instance_scores(out)[0]
    if "pred_iou" in out:
        res["pred_iou"] = out["pred_iou"]
    res.update({k: out[k] for k in OPTIONAL_DECODER_OUTPUTS if k in out})
    return to_device(res, "cpu")


def run_onnx(paths: dict[str, Path], ex: dict[str, Tensor]) -> dict[str, "object"]:
    """Run the exported image encoder and prompt decoder with onnxruntime (CPU) -> numpy arrays by output name."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(str(paths["image_encoder"]), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(paths["prompt_decoder"]), opts, providers=["CPUExecutionProvider"])
    img = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"pixel_values": ex["pixel_values"].numpy()})))
    feeds = {**img, "text_features": ex["text_features"].numpy(), "text_padding_mask": ex["text_padding_mask"].numpy(),
             "sentence": ex["sentence"].numpy(), **{k: ex[k].numpy() for k in GEOMETRY_INPUTS if k in ex}}
    feeds = {i.name: feeds[i.name] for i in dec.get_inputs()}
    res = dict(img)
    res.update(zip([o.name for o in dec.get_outputs()], dec.run(None, feeds)))
    return res


def verify_onnx(model: SamLiteModel, paths: dict[str, Path], batch: int = 2, max_points: int = DEFAULT_MAX_POINTS,
                max_exemplars: int = DEFAULT_MAX_EXEMPLARS) -> dict[str, float]:
    """Max absolute difference between onnxruntime and PyTorch per output, on random pixels and two prompts."""
    ex = example_inputs(model, batch=batch, max_points=max_points, max_exemplars=max_exemplars)
    ref = run_pytorch(model, ex)
    got = run_onnx(paths, ex)
    return {k: float((torch.from_numpy(got[k]).float() - v.float()).abs().max()) for k, v in ref.items()}


if __name__ == "__main__":
    raise SystemExit(main())
