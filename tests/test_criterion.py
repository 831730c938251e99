"""HungarianMatcher, SetCriterion and the per-family training objectives on hand-made predictions."""

import torch

from sam_lite.training.criterion import DEFAULT_WEIGHTS, SetCriterion
from sam_lite.training.matcher import HungarianMatcher
from sam_lite.training.objectives import SemanticMaskObjective


def _outputs(b, k, size=8, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    out = {"pred_logits": torch.randn(b, k, generator=g), "pred_masks": torch.randn(b, k, size, size, generator=g),
           "pred_boxes": torch.rand(b, k, 4, generator=g) * 0.5 + 0.25, "presence_logits": torch.randn(b, generator=g)}
    return {n: v.requires_grad_(requires_grad) for n, v in out.items()}


def test_matcher_recovers_known_assignment():
    # three queries predict three boxes/masks exactly; targets are those in another order
    k, size = 3, 8
    masks = torch.zeros(k, size, size, dtype=torch.bool)
    masks[0, :4, :4] = masks[1, 4:, 4:] = masks[2, :4, 4:] = True
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5]])
    out = {"pred_logits": torch.full((1, k), 2.0), "pred_masks": (masks.float() * 20 - 10)[None],
           "pred_boxes": boxes[None]}
    perm = torch.tensor([2, 0, 1])
    (q, t), = HungarianMatcher(mask_cost_stride=1)(out, [{"masks": masks[perm], "boxes": boxes[perm]}])
    assert perm[t].tolist() == q.tolist()


def test_matcher_on_a_hand_made_cost_matrix():
    # only the box L1 cost: query 0 sits on target 1, query 2 on target 0; query 1 is far from both
    m = HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0, cost_giou=0, cost_bbox=1)
    out = _outputs(1, 3)
    out["pred_boxes"] = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.1, 0.9, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]]])
    tgt = {"masks": torch.zeros(2, 8, 8, dtype=torch.bool),
           "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}
    (q, t), = m(out, [tgt])
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 2: 0}


def test_criterion_with_empty_targets_trains_no_object():
    out = _outputs(2, 4, requires_grad=True)
    out["aux_outputs"] = [_outputs(2, 4, requires_grad=True)]
    empty = {"masks": torch.zeros(0, 8, 8, dtype=torch.bool), "boxes": torch.zeros(0, 4)}
    losses = SetCriterion()(out, [empty, empty])
    assert torch.isfinite(losses["loss"])
    assert losses["loss_mask"] == 0 and losses["loss_bbox"] == 0
    assert losses["loss_ce"] > 0 and losses["loss_ce_0"] > 0
    losses["loss"].backward()
    # every query is pushed towards "no object", presence towards "absent"
    assert (out["pred_logits"].grad > 0).all()
    assert (out["presence_logits"].grad > 0).all()


def test_criterion_weight_dict_and_aux_terms():
    """The total is the weighted sum of every term of every layer: only loss_dice weighted (3.0), the total is 3 x
    (final + auxiliary dice), each dice computed by hand."""
    out = _outputs(1, 3, requires_grad=True)
    out["aux_outputs"] = [_outputs(1, 3, requires_grad=True), _outputs(1, 3, requires_grad=True)]
    tgt = {"masks": torch.ones(1, 8, 8, dtype=torch.bool), "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]])}
    weights = {k: 0.0 for k in DEFAULT_WEIGHTS}
    weights["loss_dice"] = 3.0
    crit = SetCriterion(weight_dict=weights)
    losses = crit(out, [tgt])
    assert {f"loss_dice_{i}" for i in range(2)} <= set(losses)

    def dice(o):  # the matched query is the one whose mask covers the all-ones target best (lowest cost)
        (q, _), = crit.matcher(o, [tgt])
        p = o["pred_masks"][0, q[0]].sigmoid().flatten()
        return 1 - (2 * p.sum() + 1) / (p.sum() + 64 + 1)

    expected = 3.0 * (dice(out) + dice(out["aux_outputs"][0]) + dice(out["aux_outputs"][1]))
    torch.testing.assert_close(losses["loss"], expected)
    assert losses["loss_ce"] > 0  # computed, weighted zero


def test_criterion_can_leave_negative_prompts_to_presence():
    out = _outputs(2, 4, requires_grad=True)
    empty = {"masks": torch.zeros(0, 8, 8, dtype=torch.bool), "boxes": torch.zeros(0, 4)}
    full = {"masks": torch.ones(1, 8, 8, dtype=torch.bool), "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]])}
    losses = SetCriterion(match_loss_on_negatives=False)(out, [empty, full])
    losses["loss"].backward()
    assert (out["pred_logits"].grad[0] == 0).all()  # the absent concept's queries are left alone
    assert (out["pred_logits"].grad[1] != 0).any()
    assert (out["presence_logits"].grad != 0).all()  # presence still learns "absent" and "present"


def test_semantic_objective_unites_and_resizes_the_instance_masks():
    """The baseline's objective: the model's input preprocessed by the core, each prompt's instance masks resized
    (area fraction > 0.5) to the ``semantic_logits`` resolution before ``core.loss``."""
    seen = {}

    class Core:
        def preprocess(self, images):
            return images / 255

        def __call__(self, pixels, prompts, image_index):
            seen["pixels"], seen["prompts"] = pixels, prompts
            return {"semantic_logits": torch.zeros(1, 4, 4)}

        def loss(self, outputs, targets):
            seen["targets"] = targets
            return {"loss": outputs["semantic_logits"].sum()}

    big = torch.zeros(2, 16, 16, dtype=torch.bool)
    big[0, :8, :8] = True  # the top-left quarter: 2x2 output cells
    big[1, 14:, 14:] = True  # a 2x2 speck: a quarter of one 4x4 output cell, under the 0.5 cut
    batch = {"images": torch.full((1, 3, 16, 16), 255.0), "prompts": ["car"], "image_index": torch.zeros(1),
             "targets": [{"masks": big}]}
    core = Core()
    assert SemanticMaskObjective(core)(core, core, batch)["loss"] == 0
    assert torch.equal(seen["pixels"], torch.ones(1, 3, 16, 16)) and seen["prompts"] == ["car"]
    m = seen["targets"][0]["masks"]
    assert m.shape == (2, 4, 4) and m.dtype == torch.bool
    assert m[0, :2, :2].all() and m[0].sum() == 4 and m[1].sum() == 0
