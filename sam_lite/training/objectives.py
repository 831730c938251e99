"""What one training step optimises, per model family (see :mod:`sam_lite.registry`): ``objective(model, core,
batch)`` runs the forward pass on a collated batch and returns the dict of loss terms with ``"loss"`` their weighted
sum. ``model`` may be the DistributedDataParallel wrapper of ``core``.
"""

from __future__ import annotations

from torch import Tensor

from ..structures import Prompt
from .criterion import SetCriterion
from .matcher import resize_masks


class SetPredictionObjective:
    """sam-lite: one image-encoder pass per image, prompt i paired with image ``image_index[i]``; Hungarian matching
    and the DETR-style :class:`SetCriterion` (plus the concept map's dense loss)."""

    def __init__(self, core, match_loss_on_negatives: bool = True) -> None:
        self.criterion = SetCriterion(match_loss_on_negatives=match_loss_on_negatives)
        self.geometric = core.config.geometric_prompts

    def __call__(self, model, core, batch: dict) -> dict[str, Tensor]:
        # a text-only model reads the words alone; a geometric one every row's visual prompt too
        prompt = batch["prompt"] if self.geometric else Prompt(batch["prompts"]).to(batch["images"].device)
        outputs = model(core.preprocess(batch["images"]), prompt, batch["image_index"])
        return self.criterion(outputs, batch["targets"], batch["dense_labels"], batch["dense_allowed"],
                              batch.get("image_labels"))


class SemanticMaskObjective:
    """The CLIPSeg-style baseline: one semantic mask per (image, prompt), the union of the instance masks at the
    output resolution (:meth:`ClipSegBaseline.loss`)."""

    def __init__(self, core, **_) -> None:
        pass

    def __call__(self, model, core, batch: dict) -> dict[str, Tensor]:
        outputs = model(core.preprocess(batch["images"]), batch["prompts"], batch["image_index"])
        size = outputs["semantic_logits"].shape[-2:]
        return core.loss(outputs, [{"masks": resize_masks(t["masks"], size) > 0.5} for t in batch["targets"]])
