"""SamLiteModel.decode with geometry: K/V = words + no-text token + geometric tokens; priors off without text."""

import pytest
import torch

from sam_lite import Prompt, SamLiteConfig, SamLiteModel


@pytest.fixture(scope="module")
def model() -> SamLiteModel:
    torch.manual_seed(0)
    return SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True)).eval()


@pytest.fixture(scope="module")
def embedding(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.encode_image(torch.randn(1, 3, 64, 64))


def _decode(model, embedding, prompts, rows, **kw):
    prompt = Prompt.from_rows(prompts, rows)
    with torch.no_grad():
        return model.decode(embedding, prompt, model.encode_prompt(prompt),
                            image_index=torch.zeros(len(prompts), dtype=torch.long), **kw)


def test_all_padding_geometry_changes_nothing(model, embedding):
    """Masked K/V tokens contribute nothing: a text prompt decodes the same with an empty geometry."""
    prompt = Prompt(["red car", "dog"])
    with torch.no_grad():
        ref = model.decode(embedding, prompt, model.encode_prompt(prompt), image_index=torch.zeros(2, dtype=torch.long))
    got = _decode(model, embedding, ["red car", "dog"], [None, {"exemplars": torch.zeros(0, 4)}])
    for k in ("pred_logits", "pred_masks", "pred_boxes", "presence_logits", "pred_iou"):
        torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-4)


def test_outputs_and_attention_shapes(model, embedding):
    k = model.config.num_queries
    rows = [{"points": [[10.0, 12.0], [40.0, 40.0]], "point_labels": [1, 0]}, {"box": [5.0, 5.0, 30.0, 20.0]},
            {"exemplars": [[0.0, 0.0, 20.0, 20.0]]}]
    out = _decode(model, embedding, ["", None, "car"], rows, output_attentions=True, aux_outputs=True)
    assert len(out["aux_outputs"]) == model.config.decoder_layers - 1
    assert out["pred_iou"].shape == (3, k) and ((out["pred_iou"] >= 0) & (out["pred_iou"] <= 1)).all()
    assert all(a["pred_iou"].shape == (3, k) for a in out["aux_outputs"])
    t = model.encode_prompt(["car"]).features.shape[1]
    g = 2 + 2 + 3
    assert out["attentions"].fusion[0].text_cross_attn.shape[-1] == t + 1 + g
    assert out["attentions"].decoder[0].text_cross_attn.shape[-1] == t + 1 + g
    w = out["attentions"].decoder[0].text_cross_attn.mean(1)  # heads averaged
    assert torch.all(w[:2, :, :t] == 0)  # rows without text never look at the (placeholder) words
    assert torch.all(w[2, :, t] == 0)  # a row with text never looks at the no-text token
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_rows_without_text_have_no_prior(model, embedding):
    out = _decode(model, embedding, ["", "dog"], [{"points": [[10.0, 10.0]]}, {"points": [[10.0, 10.0]]}])
    assert out["prior_maps"][0].abs().max() == 0 and out["prior_maps"][1].abs().max() > 0
    assert out["concept_prompt_map"][0].abs().max() == 0 and out["concept_prompt_map"][1].abs().max() > 0


def test_placeholder_text_is_ignored_and_the_point_matters(model, embedding):
    rows = [{"points": [[10.0, 10.0]]}]
    a = _decode(model, embedding, [""], rows)
    prompt = Prompt.from_rows(["something else entirely"], rows, text_valid=[False])
    assert prompt.text_valid.tolist() == [False]
    with torch.no_grad():
        b = model.decode(embedding, prompt, model.encode_prompt(prompt))
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], atol=1e-5, rtol=1e-4)
    c = _decode(model, embedding, [""], [{"points": [[50.0, 50.0]]}])
    assert not torch.allclose(a["pred_masks"], c["pred_masks"])
    d = _decode(model, embedding, [""], [{"points": [[10.0, 10.0], [50.0, 50.0]], "point_labels": [1, 0]}])
    assert not torch.allclose(a["pred_masks"], d["pred_masks"])  # a negative point changes the answer


def test_forward_with_empty_prompts_and_errors(model):
    x = torch.randn(2, 3, 64, 64)
    geo = Prompt.from_rows(["", "car"], [{"box": [1.0, 1.0, 30.0, 30.0]}, None])
    with torch.no_grad():
        out = model(x, geo)
    assert out["pred_masks"].shape[:2] == (2, model.config.num_queries)
    with pytest.raises(ValueError, match="empty"):
        model(x, ["", "car"])
    plain = SamLiteModel(SamLiteConfig.from_preset("tiny"), load_pretrained=False).eval()
    with pytest.raises(ValueError, match="geometric_prompts"):
        plain.decode(plain.encode_image(x), geo, plain.encode_prompt(["a", "b"]))
    assert "pred_iou" not in plain.heads(torch.randn(1, 9, 32), torch.randn(1, 16, 16, 16))


def test_gradients_reach_every_prompt_encoder_parameter():
    """A training batch as collate builds it (one point and one exemplar slot at least): every new parameter is in
    the graph (DistributedDataParallel needs that) and gets a gradient from the losses, loss_iou included."""
    from sam_lite.training.criterion import SetCriterion

    torch.manual_seed(0)
    model = SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True)).train()
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 10:30, 10:40] = True
    target = {"masks": masks, "boxes": torch.tensor([[25 / 64, 20 / 64, 30 / 64, 20 / 64]])}
    geo = Prompt.from_rows(["", "car", "dog"], [{"points": [[20.0, 20.0]]}, {"exemplars": [[10.0, 10.0, 39.0, 29.0]]},
                                                None], min_points=1, min_exemplars=1)
    out = model(torch.randn(1, 3, 64, 64), geo, torch.zeros(3, dtype=torch.long))
    losses = SetCriterion()(out, [target, target, {"masks": masks[:0], "boxes": torch.zeros(0, 4)}])
    assert losses["loss_iou"] > 0
    losses["loss"].backward()
    for name, p in list(model.prompt_encoder.named_parameters()) + list(model.heads.iou.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
