"""SamLitePredictor: set an image once (its embedding is cached), then ask for any number of prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .modeling import SamLiteModel
from .modeling.prompt_encoder import pad_geometry
from .processing import ORIGINAL_SIZE_KEY, ImageMeta, SamLiteProcessor, boxes_from_masks, load_image, suppress_duplicates
from .visual_prompts import agrees_with_prompt, check_visual_prompt, describe, to_model_pixels, token_labels

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "sam-lite-base"


@dataclass
class PredictionResult:
    prompt: str
    masks: Tensor  # bool [N, H, W] at the original image size, best first
    scores: Tensor  # float [N], descending: sigmoid(match) x presence (see SamLiteConfig.instance_inference)
    boxes: Tensor  # float [N, 4] xyxy pixels
    presence: float  # probability that the concept is in the image
    attention: dict | None = field(default=None, repr=False)
    # P(prompt | pixel) [H, W] from the concept map, at the original image size (predict(return_concept_map=True))
    concept_map: Tensor | None = field(default=None, repr=False)
    # visual prompts: the predicted IoU of each mask [N] (float), and the points / box / exemplars in photo pixels
    iou_predictions: Tensor | None = None
    visual_prompt: dict | None = None

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


def mask_confidence(mask_logits: Tensor, mask_threshold: float = 0.0) -> Tensor:
    """[..., h, w] logits -> [...]: mean probability inside the mask (0 for an empty mask), as in Mask2Former."""
    prob = mask_logits.sigmoid().flatten(-2)
    inside = (mask_logits > mask_threshold).flatten(-2).float()
    return (prob * inside).sum(-1) / inside.sum(-1).clamp(min=1.0)


def concept_agreement(mask_logits: Tensor, concept_map: Tensor, mask_threshold: float = 0.0) -> Tensor:
    """mask_logits [P, K, h, w], concept_map [P, h', w'] (P(prompt | pixel)) -> [P, K]: the mean concept probability
    inside each query's mask (0 for an empty mask)."""
    cmap = F.interpolate(concept_map[:, None], size=mask_logits.shape[-2:], mode="bilinear", align_corners=False)
    inside = (mask_logits > mask_threshold).float()
    return (inside * cmap).flatten(2).sum(-1) / inside.flatten(2).sum(-1).clamp(min=1.0)


def semantic_instances(semantic_logits: Tensor, mask_logits: Tensor, match_prob: Tensor, presence: Tensor,
                       mask_threshold: float = 0.0, min_cells: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """Split the presence token's semantic mask into instances (Mask2Former's panoptic inference, one concept).

    semantic_logits [h, w], mask_logits [K, h, w], match_prob [K], presence (0-dim). Every pixel of the semantic
    mask (logit > ``mask_threshold``) goes to the query with the highest match x mask probability there; regions of
    fewer than ``min_cells`` pixels are dropped. Returns regions bool [N, h, w], scores [N] = presence x mean
    semantic probability of the region (descending) and the owning query of each [N].
    """
    region = semantic_logits > mask_threshold
    owner = (match_prob[:, None, None] * mask_logits.sigmoid()).argmax(0)
    sem_prob = semantic_logits.sigmoid()
    regions, scores, queries = [], [], []
    for k in owner[region].unique().tolist():
        cells = region & (owner == k)
        if int(cells.sum()) < min_cells:
            continue
        regions.append(cells)
        scores.append(presence * sem_prob[cells].mean())
        queries.append(k)
    if not queries:
        return (region.new_zeros((0, *region.shape)), semantic_logits.new_zeros(0), torch.zeros(0, dtype=torch.long))
    scores_t = torch.stack(scores)
    order = scores_t.argsort(descending=True)
    return torch.stack(regions)[order], scores_t[order], torch.tensor(queries, dtype=torch.long)[order]


class SamLitePredictor:
    """Thin wrapper in the style of ``SamPredictor``::

        predictor = SamLitePredictor.from_pretrained()
        predictor.set_image("photo.jpg")
        result = predictor.predict("red car")
    """

    def __init__(self, model: SamLiteModel, processor: SamLiteProcessor | None = None) -> None:
        self.model = model.eval()
        self.processor = processor or SamLiteProcessor.from_config(model.config)
        # the ImageNet prior may look at the photo at a higher resolution than the rest of the model
        size = model.config.prior_image_size if model.config.use_imagenet_prior else 0
        self.prior_processor = SamLiteProcessor(size) if size else None
        self.reset_image()

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "SamLitePredictor":
        """No argument: the checkpoint shipped in ``checkpoints/``."""
        return cls(SamLiteModel.from_pretrained(directory or DEFAULT_CHECKPOINT))

    def reset_image(self) -> None:
        self._embedding: dict | None = None
        self._pixel_values: Tensor | None = None
        self._prior_pixel_values: Tensor | None = None
        self._meta: ImageMeta | None = None
        self._image = None

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def image(self):
        """The RGB PIL image last set (after EXIF rotation and conversion)."""
        return self._image

    @torch.inference_mode()
    def set_image(self, image) -> None:
        """image: PIL image, HxWx3 uint8 array or a file path. Computes and caches the image embedding."""
        pil = load_image(image)
        pixel_values, meta = self.processor.preprocess(pil)
        # a huge photo was downscaled for the model; masks and boxes still come back at the size the user gave
        meta.original_size = pil.info.get(ORIGINAL_SIZE_KEY, meta.original_size)
        prior_pixel_values = self.prior_processor.preprocess(pil)[0] if self.prior_processor else None
        self._embedding = self.model.encode_image(pixel_values, prior_pixel_values=prior_pixel_values)
        self._pixel_values, self._prior_pixel_values, self._meta, self._image = (pixel_values, prior_pixel_values,
                                                                                 meta, pil)

    def _partition(self, semantic_logits: Tensor, regions: Tensor, keep: Tensor, mask_threshold: float) -> Tensor:
        """The semantic mask at the photo's size [H, W], split by all the low-resolution regions [N, h, w] (so a
        dropped region's pixels never move to a kept one) -> bool [len(keep), H, W] for the regions ``keep``
        indexes: disjoint, and for every region their union is the semantic mask."""
        semantic = self.processor.postprocess_masks(semantic_logits[None].float(), self._meta)[0] > mask_threshold
        if not len(keep):
            return semantic[None][:0]
        owner = self.processor.postprocess_regions(regions, self._meta)
        return semantic[None] & (owner[None] == keep[:, None, None])

    @torch.inference_mode()
    def predict(self, prompt: str | list[str] | None = None, points=None, point_labels=None, box=None,
                exemplars=None, multimask_output: bool = False, score_threshold: float | None = None,
                return_attention: bool = False, mask_threshold: float = 0.0, max_instances: int | None = None,
                nms_iou: float = 0.6, return_concept_map: bool = False) -> PredictionResult | list[PredictionResult]:
        """Segment a prompt. One string -> one result; a list of strings -> a list of results.

        Text only: every instance of each prompt scoring above ``score_threshold``. Visual prompts (checkpoints
        trained with ``geometric_prompts``), SAM's names and shapes, in pixels of the photo: ``points`` [N, 2] (x, y)
        with ``point_labels`` [N] (1 positive, 0 negative; default all 1), ``box`` [4] xyxy, ``exemplars`` [E, 4]
        xyxy boxes; ``prompt`` is then one string or None. Points and/or a box without exemplars ask for the one
        object under them: the best query first (queries whose mask holds every positive point, no negative one and
        lies at least half in the box rank first, then by score x mask confidence; no threshold), and with
        ``multimask_output`` up to three distinct alternatives in the same order, each with its predicted IoU.
        Exemplars (with or without text and points) ask for every instance of the same concept: the threshold path.
        Results of visual prompts carry ``iou_predictions`` and ``visual_prompt``.

        ``return_concept_map``: also return the prompt's heat map on the image's concept map, P(prompt | pixel)
        [H, W] at the photo's size (models trained with ``concept_map``; otherwise ``None``)."""
        if not self.is_image_set:
            raise ValueError("no image set: call set_image(image) before predict(prompt)")
        visual = row = None
        if any(v is not None for v in (points, point_labels, box, exemplars)):
            if not self.model.config.geometric_prompts:
                raise ValueError("this checkpoint takes text prompts only: points, box and exemplars need a model "
                                 "trained with geometric_prompts (its config has geometric_prompts false)")
            if prompt is not None and not isinstance(prompt, str):
                raise ValueError("points, box and exemplars describe one prompt: give prompt as one string or None, "
                                 f"not {type(prompt).__name__}")
            visual = check_visual_prompt(points, point_labels, box, exemplars, self._meta.original_size)
            row = to_model_pixels(visual, self._meta)
            prompt = " ".join((prompt or "").split())
        elif prompt is None:
            raise ValueError("nothing to segment: give a text prompt (a string or a list of strings), points, a box "
                             "or exemplars")
        single = isinstance(prompt, str)
        if not single and not isinstance(prompt, (list, tuple)):
            raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        if score_threshold is None:  # the threshold calibrated on validation data, stored with the checkpoint
            score_threshold = self.model.config.score_threshold
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        geometry = None
        if visual is not None:
            text, text_valid = self.model.encode_prompts(prompts)
            geometry = pad_geometry([row], text_valid=text_valid.tolist())
        else:
            text = self.model.encode_text(prompts)
        if return_attention and not self._embedding["attentions"]:
            # the encoder's self-attention weights are only materialised when someone wants to look at them
            self._embedding = self.model.encode_image(self._pixel_values, output_attentions=True,
                                                      prior_pixel_values=self._prior_pixel_values)
        emb = self._embedding
        out = self.model.decode(emb, text, image_index=torch.zeros(len(prompts), dtype=torch.long),
                                output_attentions=return_attention, geometry=geometry)
        presence = out["presence_logits"].float().sigmoid()
        scores = out["pred_logits"].float().sigmoid() * presence[:, None]
        if self.model.config.mask_rescoring:
            scores = scores * mask_confidence(out["pred_masks"].float(), mask_threshold)
        if self.model.config.concept_rescoring and "concept_prompt_map" in out:
            scores = scores * concept_agreement(out["pred_masks"].float(), out["concept_prompt_map"].float(),
                                                mask_threshold)
        semantic = self.model.config.instance_inference == "semantic"
        one_object = visual is not None and "exemplars" not in visual
        results = []
        for i, p in enumerate(prompts):
            if one_object:  # the object under the points / in the box, and SAM's alternatives
                order, masks = self._one_object(out, i, scores[i], row, multimask_output, mask_threshold, nms_iou)
                inst_scores = scores[i, order]
            elif semantic:  # instances = the semantic mask, split among the queries that own its pixels
                regions, inst_scores, order = semantic_instances(
                    out["pred_semantic"][i].float(), out["pred_masks"][i].float(),
                    out["pred_logits"][i].float().sigmoid(), presence[i], mask_threshold)
                keep = (inst_scores >= score_threshold).nonzero()[:, 0][:max_instances]
                masks = self._partition(out["pred_semantic"][i], regions, keep, mask_threshold)
                inst_scores, order = inst_scores[keep], order[keep]
            else:  # instances = the queries that score above the threshold, duplicates suppressed
                keep = (scores[i] >= score_threshold).nonzero()[:, 0]
                low_masks = out["pred_masks"][i, keep] > mask_threshold
                keep_nonempty = low_masks.flatten(1).any(1)
                keep, low_masks = keep[keep_nonempty], low_masks[keep_nonempty]
                order = keep[suppress_duplicates(low_masks, scores[i, keep], nms_iou)] if keep.numel() else keep
                order = order[:max_instances]
                inst_scores = scores[i, order]
                masks = self.processor.postprocess_masks(out["pred_masks"][i, order], self._meta) > mask_threshold
            # a blob of a few low-resolution cells can vanish when upsampled to a small photo: never return it
            visible = masks.flatten(1).any(1)
            order, masks, inst_scores = order[visible], masks[visible], inst_scores[visible]
            head_boxes = self.processor.postprocess_boxes(out["pred_boxes"][i, order], self._meta)
            attention = None
            if return_attention:
                attention = {k: v[i] for k, v in out["attentions"].items()}
                attention.update(grid=out["grid"], query_order=(order + 1).tolist(), query_scores=scores[i].tolist(),
                                 tokens=self._token_names(p, text, geometry, visual), meta=self._meta)
            concept_map = None
            if return_concept_map and "concept_prompt_map" in out:
                concept_map = self.processor.postprocess_masks(out["concept_prompt_map"][i][None], self._meta)[0]
            results.append(PredictionResult(
                prompt=" ".join(p.split()), masks=masks, scores=inst_scores, boxes=boxes_from_masks(masks, head_boxes),
                presence=float(presence[i]), attention=attention, concept_map=concept_map,
                iou_predictions=out["pred_iou"][i, order].float() if visual is not None else None,
                visual_prompt=describe(visual) if visual is not None else None))
        return results[0] if single else results

    def _one_object(self, out: dict, i: int, scores: Tensor, row: dict, multimask: bool, mask_threshold: float,
                    nms_iou: float) -> tuple[Tensor, Tensor]:
        """Row i's answer to a point / box prompt -> (query indices [n], masks bool [n, H, W]), n <= 1 (or <= 3 with
        ``multimask``): queries that agree with the prompt first, then by score x mask confidence (Mask2Former's
        mean foreground probability); distinct masks (mask NMS). Not by ``pred_iou`` as SAM does: on training photos
        this rule picked better masks than the score alone and than the IoU head (click 0.242 / 0.222 / 0.131,
        box 0.399 / 0.325 / 0.302 mean IoU; docs/experiments.md)."""
        logits = out["pred_masks"][i].float()
        low = logits > mask_threshold
        cand = low.flatten(1).any(1).nonzero()[:, 0]
        if not cand.numel():
            return cand, self.processor.postprocess_masks(logits[:0], self._meta) > mask_threshold
        agree = agrees_with_prompt(logits, row, self.processor.image_size, mask_threshold)
        rank = scores * mask_confidence(logits, mask_threshold) + 2.0 * agree.float()  # agreeing queries first
        order = cand[suppress_duplicates(low[cand], rank[cand], nms_iou)]
        want = 3 if multimask else 1
        order = order[: want + 3]  # a few spares in case a tiny mask vanishes when upsampled
        masks = self.processor.postprocess_masks(out["pred_masks"][i, order], self._meta) > mask_threshold
        visible = masks.flatten(1).any(1)
        return order[visible][:want], masks[visible][:want]

    def _token_names(self, prompt: str, text: dict, geometry: dict | None, visual: dict | None) -> list[str]:
        """Labels of the K/V tokens the decoder's prompt cross-attention reads, in order (for attention plots)."""
        if geometry is None:
            return self.model.text_encoder.word_tokens(prompt)
        t = text["features"].shape[1]
        words = self.model.text_encoder.word_tokens(prompt) if prompt.strip() else []
        words = words + ["[pad]"] * (t - len(words))
        return words + ["[no text]"] + token_labels(visual, geometry["points"].shape[1],
                                                    geometry["exemplars"].shape[1])
