"""BaselinePredictor: the :class:`~sam_lite.SamLitePredictor` interface for the CLIPSeg-style baseline.

``set_image`` (shared with sam-lite's predictor) caches the backbone features; :meth:`BaselinePredictor.predict`
turns the semantic mask into instances: the connected components (8-connected) of ``sigmoid(logit) >=
mask_threshold`` at the original image size, each scoring ``presence x mean probability inside it``. Components
smaller than ``min_area_fraction`` of the image are dropped, then those scoring below ``score_threshold``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..device import to_device
from ..postprocessing import boxes_from_masks
from ..predictor import PredictionResult, SamLitePredictor
from .model import ClipSegBaseline


class BaselinePredictor(SamLitePredictor):
    model_class = ClipSegBaseline

    @torch.inference_mode()
    def predict_torch(self, prompts: list[str]) -> dict:
        """P prompts on the cached image -> ``semantic_logits [P, S/4, S/4]``, ``presence_logits [P]``."""
        if not self.is_image_set:
            raise ValueError("no image set: call set_image(image) before predict(prompt)")
        sentence = self.model.encode_text(prompts)
        device = self.device
        return self.model.decode(self._embedding, sentence.to(device),
                                 torch.zeros(len(prompts), dtype=torch.long, device=device))

    @torch.inference_mode()
    def predict(self, prompt: str | list[str], score_threshold: float = 0.5, mask_threshold: float = 0.5,
                min_area_fraction: float = 0.001, max_instances: int | None = None):
        """One string -> one :class:`sam_lite.PredictionResult`; a list -> a list of them."""
        from scipy import ndimage

        if not self.is_image_set:
            raise ValueError("no image set: call set_image(image) before predict(prompt)")
        single = isinstance(prompt, str)
        if not single and not isinstance(prompt, (list, tuple)):
            raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        out = to_device(self.predict_torch(prompts), "cpu")
        presence = out["presence_logits"].float().sigmoid()
        probs = self.processor.postprocess_masks(out["semantic_logits"].float(), self._meta).sigmoid()  # [P, H, W]
        h, w = self._meta.original_size
        min_area = min_area_fraction * h * w
        structure = np.ones((3, 3), dtype=bool)
        results = []
        for i, p in enumerate(prompts):
            prob = probs[i].numpy()
            labels, n = ndimage.label(prob >= mask_threshold, structure=structure)
            masks = torch.zeros((0, h, w), dtype=torch.bool)
            scores = torch.zeros(0)
            if n:
                ids = np.arange(1, n + 1)
                areas = ndimage.sum_labels(np.ones_like(prob), labels, ids)
                means = ndimage.mean(prob, labels, ids)
                comp_scores = float(presence[i]) * np.asarray(means)
                keep = (areas >= min_area) & (comp_scores >= score_threshold)
                ids, comp_scores = ids[keep], comp_scores[keep]
                order = np.argsort(-comp_scores, kind="stable")[:max_instances]
                ids, comp_scores = ids[order], comp_scores[order]
                if len(ids):
                    masks = torch.from_numpy(labels)[None] == torch.from_numpy(ids)[:, None, None]
                    scores = torch.from_numpy(comp_scores).float()
            boxes = boxes_from_masks(masks, torch.zeros((masks.shape[0], 4)))
            results.append(PredictionResult(prompt=" ".join(p.split()), masks=masks, scores=scores, boxes=boxes,
                                            presence=float(presence[i]), image_meta=self._meta))
        return results[0] if single else results
