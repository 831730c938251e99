"""SamLitePredictor: set an image once (its embedding is cached), then ask for any number of prompts.

As ``SamPredictor``: :meth:`~SamLitePredictor.set_image` / :meth:`~SamLitePredictor.predict` in the photo's pixels,
over :meth:`~SamLitePredictor.set_torch_image` / :meth:`~SamLitePredictor.predict_torch` in the model's; the inference
policy (thresholds, duplicate suppression, the one-object rule) is :class:`~sam_lite.postprocessing.PostProcess`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from .config import InferenceConfig
from .device import module_device, resolve_device, to_device
from .modeling import SamLiteModel
from .postprocessing import PostProcess, calibrate, instance_scores
from .processing import ORIGINAL_SIZE_KEY, ImageMeta, SamLiteProcessor, load_image
from .structures import Attentions, ImageEmbedding, Prompt
from .visual_prompts import check_visual_prompt, describe, to_model_pixels, token_labels

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "sam-lite-base"


@dataclass
class PredictionResult:
    prompt: str
    masks: Tensor  # bool [N, H, W] at the original image size, best first
    scores: Tensor  # float [N], descending: sigmoid(match) x presence, or P(right) if the checkpoint is calibrated
    boxes: Tensor  # float [N, 4] xyxy pixels
    presence: float  # probability that the concept is in the image
    # predict(return_attention=True): the weights of every layer for this prompt (heads kept, prompt tokens named)
    attention: Attentions | None = field(default=None, repr=False)
    # P(prompt | pixel) [H, W] from the concept map, at the original image size (predict(return_concept_map=True))
    concept_map: Tensor | None = field(default=None, repr=False)
    # visual prompts: the predicted IoU of each mask [N] (float), and the points / box / exemplars in photo pixels
    iou_predictions: Tensor | None = None
    visual_prompt: dict | None = None
    # the object query behind each instance [N] (0-based) and the scores of all K queries [K]
    query_indices: Tensor | None = field(default=None, repr=False)
    query_scores: Tensor | None = field(default=None, repr=False)
    image_meta: ImageMeta | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.scores.numel())

    def to_json(self) -> dict:
        out = {"prompt": self.prompt, "presence": round(self.presence, 4),
               "instances": [{"score": round(float(s), 4), "box_xyxy": [round(float(v), 1) for v in b],
                              "area": int(m.sum())} for s, b, m in zip(self.scores, self.boxes, self.masks)]}
        if self.visual_prompt is not None:
            out["visual_prompt"] = self.visual_prompt
        if self.iou_predictions is not None:
            for inst, iou in zip(out["instances"], self.iou_predictions.tolist()):
                inst["predicted_iou"] = round(iou, 4)
        return out


class SamLitePredictor:
    """Thin wrapper in the style of ``SamPredictor``::

        predictor = SamLitePredictor.from_pretrained()
        predictor.set_image("photo.jpg")
        result = predictor.predict("red car")
    """

    model_class = SamLiteModel

    def __init__(self, model, processor: SamLiteProcessor | None = None,
                 inference_config: InferenceConfig | None = None, device: str | torch.device | None = None) -> None:
        self.model = model.eval()
        self.processor = processor or SamLiteProcessor.from_config(model.config)
        self.inference_config = inference_config or InferenceConfig()
        calibration = self.inference_config.score_calibration
        if calibration and "predicted_iou" in calibration["features"] and not model.config.geometric_prompts:
            raise ValueError("the inference config's score_calibration uses predicted_iou, but this model has no IoU "
                             "head (geometric_prompts false): fit the calibration on this model "
                             "(scripts/calibrate_scores.py)")
        self.reset_image()
        if device is not None:
            self.to(device)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None,
                        device: str | torch.device | None = None) -> "SamLitePredictor":
        """No argument: the checkpoint shipped in ``checkpoints/``. Thresholds from its ``inference_config.json``.
        ``device``: ``auto``, ``cpu``, ``cuda``, ``mps`` (:func:`sam_lite.device.resolve_device`; ValueError when this
        machine lacks it); default: the CPU."""
        if device is not None:
            device = resolve_device(device)  # before the weights are read: a missing GPU fails fast
        directory = Path(directory or DEFAULT_CHECKPOINT)
        model = cls.model_class.from_pretrained(directory)
        return cls(model, inference_config=InferenceConfig.load(directory), device=device)

    @property
    def device(self) -> torch.device:
        """Where the model and the cached embedding live; results come back on the CPU whatever it is."""
        return module_device(self.model)

    def to(self, device: str | torch.device) -> "SamLitePredictor":
        """Move the model (and the cached image embedding) to ``device`` (``auto`` resolves as
        :func:`~sam_lite.device.resolve_device`). Returns self."""
        device = resolve_device(device)
        self.model.to(device)
        if self._embedding is not None:
            self._embedding = to_device(self._embedding, device)
            self._pixel_values = self._pixel_values.to(device)
        return self

    def reset_image(self) -> None:
        self._embedding: ImageEmbedding | None = None
        self._pixel_values: Tensor | None = None
        self._meta: ImageMeta | None = None
        self._image = None

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def image(self):
        """The RGB PIL image last set (after EXIF rotation and conversion)."""
        return self._image

    @property
    def image_meta(self) -> ImageMeta | None:
        """Sizes of the photo last set: as given, resized inside the model input, the input side."""
        return self._meta

    def get_image_embedding(self) -> ImageEmbedding:
        """The cached :class:`ImageEmbedding` of the photo last set."""
        if not self.is_image_set:
            raise ValueError("no image set: call set_image(image) first")
        return self._embedding

    @torch.inference_mode()
    def set_image(self, image) -> None:
        """image: PIL image, HxWx3 uint8 array or a file path (decoded once). Computes and caches the embedding."""
        pil = load_image(image)
        resized, meta = self.processor.preprocess(pil)
        # a huge photo was downscaled for the model; masks and boxes still come back at the size the user gave
        self.set_torch_image(resized, pil.info.get(ORIGINAL_SIZE_KEY, meta.original_size))
        self._image = pil

    @torch.inference_mode()
    def set_torch_image(self, resized: Tensor, original_size: tuple[int, int]) -> None:
        """resized [1, 3, h, w] float 0..255, longest side ``image_size`` (the processor's output); original_size
        (H, W) of the photo that masks and boxes are returned at."""
        if resized.ndim != 4 or resized.shape[:2] != (1, 3) or max(resized.shape[-2:]) != self.processor.image_size:
            raise ValueError(f"set_torch_image needs [1, 3, h, w] with longest side {self.processor.image_size}, got "
                             f"{tuple(resized.shape)}")
        self._pixel_values = self.model.preprocess(resized.to(self.device))
        self._embedding = self.model.encode_image(self._pixel_values)
        self._meta = ImageMeta(tuple(int(v) for v in original_size), tuple(resized.shape[-2:]),
                               self.processor.image_size)
        self._image = None

    @torch.inference_mode()
    def predict_torch(self, prompt: Prompt, output_attentions: bool = False) -> dict:
        """P prompt rows (geometry in model-input pixels) on the cached image -> the model's raw outputs (see
        :class:`SamLiteModel`); prompt row i is paired with the image."""
        if not self.is_image_set:
            raise ValueError("no image set: call set_image(image) before predict(prompt)")
        if output_attentions and not self._embedding.encoder_attentions:
            # the encoder's self-attention weights are only materialised when someone wants to look at them
            self._embedding = self.model.encode_image(self._pixel_values, output_attentions=True)
        device = self.device
        prompt = prompt.to(device)
        text = self.model.encode_prompt(prompt)
        return self.model.decode(self._embedding, prompt, text, torch.zeros(len(prompt), dtype=torch.long,
                                                                            device=device),
                                 output_attentions=output_attentions)

    @torch.inference_mode()
    def predict(self, prompt: str | list[str] | None = None, points=None, point_labels=None, box=None,
                exemplars=None, multimask_output: bool = False, score_threshold: float | None = None,
                return_attention: bool = False, mask_threshold: float | None = None, max_instances: int | None = None,
                nms_iou: float | None = None, return_concept_map: bool = False
                ) -> PredictionResult | list[PredictionResult]:
        """Segment a prompt. One string -> one result; a list of strings -> a list of results.

        Text only: every instance of each prompt scoring above ``score_threshold``. Visual prompts (checkpoints
        trained with ``geometric_prompts``), SAM's names and shapes, in pixels of the photo: ``points`` [N, 2] (x, y)
        with ``point_labels`` [N] (1 positive, 0 negative; default all 1), ``box`` [4] xyxy, ``exemplars`` [E, 4]
        xyxy boxes; ``prompt`` is then one string or None. Points and/or a box without exemplars ask for the one
        object under them (best first, no threshold; up to three alternatives with ``multimask_output``, each with
        its predicted IoU). Exemplars (with or without text and points) ask for every instance of the same concept.

        ``score_threshold``, ``mask_threshold``, ``nms_iou``: default from the checkpoint's inference config.
        ``return_concept_map``: also return P(prompt | pixel) [H, W] at the photo's size (models with a concept
        map; otherwise ``None``). ``return_attention``: the attention weights of every layer."""
        if not self.is_image_set:
            raise ValueError("no image set: call set_image(image) before predict(prompt)")
        prompts, visual, row = self._check_prompt(prompt, points, point_labels, box, exemplars)
        policy = self._policy(score_threshold, mask_threshold, nms_iou)
        if visual is not None:
            batch = Prompt.from_rows(prompts, [row])
        else:
            batch = Prompt(prompts)
        out = to_device(self.predict_torch(batch, output_attentions=return_attention), "cpu")  # post-processing: CPU
        raw, presence = instance_scores(out)
        # what a score means: P(right), when the checkpoint is calibrated
        scores = calibrate(out, raw, policy.config.score_calibration, policy.config.mask_threshold)
        one_object = visual is not None and "exemplars" not in visual
        results = []
        for i, p in enumerate(prompts):
            if one_object:  # the object under the points / in the box, and SAM's alternatives
                order, masks = policy.one_object(out, i, raw[i], row, self._meta, multimask_output)
            else:  # instances = the queries that score above the threshold, duplicates suppressed
                order, masks = policy.instances(out, i, scores[i], self._meta, max_instances=max_instances,
                                                 presence=float(presence[i]))
            attention = None
            if return_attention:
                attention = out["attentions"].select(i)
                attention.tokens = self._token_names(p, batch, visual)
            concept_map = None
            if return_concept_map and "concept_prompt_map" in out:
                concept_map = self.processor.postprocess_masks(out["concept_prompt_map"][i][None], self._meta)[0]
            results.append(PredictionResult(
                prompt=" ".join(p.split()), masks=masks, scores=scores[i, order],
                boxes=policy.boxes(out, i, order, masks, self._meta), presence=float(presence[i]),
                attention=attention, concept_map=concept_map,
                iou_predictions=out["pred_iou"][i, order].float() if visual is not None else None,
                visual_prompt=describe(visual) if visual is not None else None,
                query_indices=order, query_scores=scores[i], image_meta=self._meta))
        return results[0] if isinstance(prompt, str) or visual is not None else results

    def _policy(self, score_threshold, mask_threshold, nms_iou) -> PostProcess:
        """The checkpoint's inference config with this call's overrides (checked)."""
        overrides = {k: float(v) for k, v in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold),
                                              ("nms_iou", nms_iou)) if v is not None}
        return PostProcess(self.processor, replace(self.inference_config, **overrides))

    def _check_prompt(self, prompt, points, point_labels, box, exemplars
                      ) -> tuple[list[str], dict | None, dict | None]:
        """-> (prompt strings, the visual prompt in photo pixels, the same in model-input pixels) or ValueError."""
        if any(v is not None for v in (points, point_labels, box, exemplars)):
            if not self.model.config.geometric_prompts:
                raise ValueError("this checkpoint takes text prompts only: points, box and exemplars need a model "
                                 "trained with geometric_prompts (its config has geometric_prompts false)")
            if prompt is not None and not isinstance(prompt, str):
                raise ValueError("points, box and exemplars describe one prompt: give prompt as one string or None, "
                                 f"not {type(prompt).__name__}")
            visual = check_visual_prompt(points, point_labels, box, exemplars, self._meta.original_size)
            return [" ".join((prompt or "").split())], visual, to_model_pixels(visual, self._meta)
        if prompt is None:
            raise ValueError("nothing to segment: give a text prompt (a string or a list of strings), points, a box "
                             "or exemplars")
        if not isinstance(prompt, (str, list, tuple)):
            raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        return prompts, None, None

    def _token_names(self, prompt: str, batch: Prompt, visual: dict | None) -> list[str]:
        """Labels of the K/V tokens the decoder's prompt cross-attention reads, in order (for attention plots)."""
        if not batch.is_geometric:
            return self.model.text_encoder.word_tokens(prompt)
        t = self.model.encode_prompt(batch).features.shape[1]
        words = self.model.text_encoder.word_tokens(prompt) if prompt.strip() else []
        words = words + ["[pad]"] * (t - len(words))
        return words + ["[no text]"] + token_labels(visual, batch.points.shape[1], batch.exemplars.shape[1])
