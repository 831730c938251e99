"""SamLitePredictor with points, boxes and exemplars (tiny model, random heads): paths, ordering, errors."""

import numpy as np
import pytest
import torch

from sam_lite import SamLiteConfig, SamLiteModel, SamLitePredictor
from sam_lite.postprocessing import agrees_with_prompt, mask_confidence
from sam_lite.processing import ImageMeta
from sam_lite.structures import Prompt
from sam_lite.visual_prompts import to_model_pixels

W, H = 64, 48  # the tiny model's input is 64 px: this photo is not resized, only padded


@pytest.fixture(scope="module")
def predictor() -> SamLitePredictor:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True)).eval()
    pred = SamLitePredictor(model)
    rng = np.random.default_rng(0)
    pred.set_image((rng.random((H, W, 3)) * 255).astype(np.uint8))
    return pred


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=[1.0, 2.0, 3.0]), r"points must have shape \[N, 2\]"),
    (dict(points=[[1.0, 2.0, 3.0]]), r"points must have shape \[N, 2\].*\(1, 3\)"),
    (dict(points=np.zeros((0, 2))), r"points must have shape \[N, 2\]"),
    (dict(points=[["a", 1]]), "points must be numbers"),
    (dict(points=[[float("nan"), 2.0]]), "points contains NaN or infinite"),
    (dict(points=[[10.0, 2.0], [70.0, 5.0]]), r"point 1 \(70, 5\) is outside the photo \(64x48 pixels\)"),
    (dict(points=[[10.0, -1.0]]), "outside the photo"),
    (dict(points=[[10.0, 2.0]], point_labels=[2]), "point_labels must be 1 .positive. or 0 .negative."),
    (dict(points=[[10.0, 2.0]], point_labels=[1, 0]), r"point_labels must have shape \[N\] = \[1\]"),
    (dict(point_labels=[1]), "point_labels given without points"),
    (dict(box=[10.0, 10.0, 5.0, 20.0]), "is empty or flipped: it needs x1 > x0 and y1 > y0"),
    (dict(box=[10.0, 10.0, 20.0]), r"box must have shape \[4\]"),
    (dict(box=[10.0, 10.0, 20.0, float("inf")]), "box contains NaN or infinite"),
    (dict(box=[10.0, 10.0, 20.0, 60.0]), r"box corner \(x1, y1\) \(20, 60\) is outside the photo \(64x48"),
    (dict(exemplars=[[1.0, 1.0, 9.0]]), r"exemplars must have shape \[E, 4\]"),
    (dict(exemplars=[[1.0, 1.0, 9.0, 9.0], [5.0, 5.0, 5.0, 9.0]]), "exemplar 1 .* is empty or flipped"),
    (dict(prompt=["a", "b"], points=[[1.0, 1.0]]), "describe one prompt"),
    (dict(), "nothing to segment"),
])
def test_bad_visual_prompts(predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_text_only_checkpoint_refuses_visual_prompts(tiny_checkpoint):
    pred = SamLitePredictor.from_pretrained(tiny_checkpoint)
    pred.set_image(np.zeros((H, W, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="geometric_prompts"):
        pred.predict(points=[[3.0, 3.0]])
    assert pred.predict("car", score_threshold=0.0).iou_predictions is None


def test_photo_pixels_to_model_pixels():
    meta = ImageMeta(original_size=(100, 200), resized_size=(32, 64), input_size=64)
    row = to_model_pixels({"points": torch.tensor([[99.5, 49.5]]), "box": torch.tensor([0.0, 0.0, 199.0, 99.0])},
                          meta)
    # the photo's centre lands on the resized photo's centre; its corner pixels on the resized corner pixels
    torch.testing.assert_close(row["points"] + 0.5, torch.tensor([[32.0, 16.0]]))
    torch.testing.assert_close(row["box"], torch.tensor([-0.34, -0.34, 63.34, 31.34]), atol=1e-4, rtol=0)


def _decode_one(predictor, **visual):
    """The model's raw output for one visual prompt, as the predictor builds it."""
    from sam_lite.visual_prompts import check_visual_prompt

    v = check_visual_prompt(visual.get("points"), visual.get("point_labels"), visual.get("box"), None, (H, W))
    row = to_model_pixels(v, predictor.image_meta)
    return predictor.predict_torch(Prompt.from_rows([""], [row])), row


@pytest.mark.parametrize("xy", [(20.0, 30.0), (50.0, 8.0), (5.0, 40.0)])
def test_one_click_returns_the_agreeing_mask_first(predictor, xy):
    r = predictor.predict(points=[list(xy)], point_labels=[1])
    assert len(r) <= 1 and r.masks.shape[1:] == (H, W) and r.masks.dtype == torch.bool
    assert r.iou_predictions.shape == r.scores.shape == (len(r),)
    out, row = _decode_one(predictor, points=[list(xy)])
    agree = agrees_with_prompt(out["pred_masks"][0], row, 64)
    if agree.any():  # some query's mask holds the click: the first mask returned is one of them
        assert r.masks[0, int(xy[1]), int(xy[0])]
        scores = out["pred_logits"][0].sigmoid() * out["presence_logits"][0].sigmoid()
        rank = scores * mask_confidence(out["pred_masks"][0])
        best = int(torch.where(agree, rank, torch.full_like(rank, -1)).argmax())
        assert float(r.scores[0]) == pytest.approx(float(scores[best]), abs=1e-6)


def test_multimask_alternatives_start_with_the_single_answer(predictor):
    r = predictor.predict(points=[[20.0, 30.0]], multimask_output=True, nms_iou=0.9)
    assert 1 <= len(r) <= 3 and r.iou_predictions.shape == (len(r),)
    single = predictor.predict(points=[[20.0, 30.0]])
    assert torch.equal(single.masks[0], r.masks[0])  # same ranking rule: the best alternative is the answer
    assert all(not torch.equal(r.masks[a], r.masks[b]) for a in range(len(r)) for b in range(a))  # distinct


def test_negative_point_changes_the_answer(predictor):
    a = predictor.predict(points=[[20.0, 30.0]])
    b = predictor.predict(points=[[20.0, 30.0], [30.0, 45.0]], point_labels=[1, 0])
    assert not (torch.equal(a.masks, b.masks) and torch.allclose(a.scores, b.scores))
    out, row = _decode_one(predictor, points=[[20.0, 30.0], [30.0, 45.0]], point_labels=[1, 0])
    assert agrees_with_prompt(out["pred_masks"][0], row, 64).any()  # (so the next line tests something)
    assert not b.masks[0, 45, 30] and b.masks[0, 30, 20]  # the negative point is outside the answer


def test_agreement_on_hand_made_masks():
    logits = torch.full((3, 16, 16), -5.0)  # stride 4 of a 64 px input
    logits[0, :, :8] = 5  # left half
    logits[1] = 5  # everything
    logits[2, 8:12, 8:12] = 5  # a small square at pixels 32..47
    prompt = {"points": torch.tensor([[10.0, 10.0], [50.0, 10.0]]), "point_labels": torch.tensor([1, 0])}
    assert agrees_with_prompt(logits, prompt, 64).tolist() == [True, False, False]
    prompt["point_labels"] = torch.tensor([1, 1])
    assert agrees_with_prompt(logits, prompt, 64).tolist() == [False, True, False]
    box = {"box": torch.tensor([30.0, 30.0, 50.0, 50.0])}
    assert agrees_with_prompt(logits, box, 64).tolist() == [False, False, True]


def test_box_and_text_plus_box(predictor):
    r = predictor.predict(box=[10.0, 5.0, 40.0, 30.0])
    assert len(r) == 1 and r.masks.shape == (1, H, W) and r.prompt == ""
    t = predictor.predict("car", box=[10.0, 5.0, 40.0, 30.0], multimask_output=True)
    assert t.prompt == "car" and 1 <= len(t) <= 3
    js = t.to_json()
    assert js["visual_prompt"] == {"box": [10.0, 5.0, 40.0, 30.0]} and "predicted_iou" in js["instances"][0]


def test_exemplars_return_every_instance_above_the_threshold(predictor):
    r = predictor.predict(exemplars=[[5.0, 5.0, 20.0, 20.0], [30.0, 10.0, 50.0, 30.0]], score_threshold=0.0,
                          nms_iou=1.0)
    assert len(r) > 1 and (r.scores[:-1] >= r.scores[1:]).all()
    assert predictor.predict(exemplars=[5.0, 5.0, 20.0, 20.0], score_threshold=1.0).masks.shape == (0, H, W)
    both = predictor.predict("car", exemplars=[[5.0, 5.0, 20.0, 20.0]], score_threshold=0.0, nms_iou=1.0)
    assert both.prompt == "car" and both.visual_prompt == {"exemplars": [[5.0, 5.0, 20.0, 20.0]]}


def test_text_only_unchanged_and_attention_names_every_token(predictor):
    r = predictor.predict("car", score_threshold=0.0)
    assert r.iou_predictions is None and r.visual_prompt is None
    a = predictor.predict("red car", points=[[20.0, 30.0]], exemplars=[[1.0, 1.0, 9.0, 9.0]],
                          return_attention=True).attention
    lk = a.decoder[0].text_cross_attn.shape[-1]
    assert len(a.tokens) == lk
    assert a.tokens[:4] == ["[CLS]", "red", "car", "[SEP]"] and a.tokens[4] == "[no text]"
    assert a.tokens[5] == "point 1 (+)" and a.tokens[-1] == "exemplar 1 appearance"
