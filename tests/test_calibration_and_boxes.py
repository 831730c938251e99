"""Score calibration (reliability table, ECE, the logistic fit on the query's features, its use by the
post-processing) and the box protocol."""

import json

import numpy as np
import pytest
import torch

from sam_lite import InferenceConfig, SamLitePredictor
from sam_lite.structures import Prompt
from sam_lite.data import CocoConcepts
from sam_lite.evaluation.boxes import _match, box_samples, evaluate_boxes
from sam_lite.evaluation.calibration import calibration_data, fit_logistic, reliability, right_in_score_order
from sam_lite.postprocessing import calibrate, instance_scores, score_features

from .fixtures import write_tiny_coco


def test_reliability_table_and_ece_by_hand():
    pairs = [(0.05, False)] * 4 + [(0.95, True)] * 4 + [(0.55, True), (0.55, False)]
    r = reliability(pairs)
    assert r["n"] == 10 and [b["n"] for b in r["bins"]] == [4, 2, 4]
    # bins: |0 - 0.05| x 0.4 + |0.5 - 0.55| x 0.2 + |1 - 0.95| x 0.4 = 0.02 + 0.01 + 0.02
    assert r["ece"] == pytest.approx(0.05)
    assert reliability([])["n"] == 0


def test_logistic_calibration_recovers_a_known_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 2))
    true_p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)))
    right = rng.uniform(size=len(x)) < true_p
    w, b = fit_logistic(x, right)
    assert w == pytest.approx([2.0, -1.0], abs=0.2) and b == pytest.approx(0.5, abs=0.15)
    raw = 1 / (1 + np.exp(-x[:, 0]))  # the first feature alone, uncalibrated
    fitted = 1 / (1 + np.exp(-(x @ np.array(w) + b)))
    assert reliability(list(zip(fitted, right)))["ece"] < reliability(list(zip(raw, right)))["ece"] / 3
    with pytest.raises(ValueError, match="right and wrong"):
        fit_logistic(np.zeros((2, 1)), np.array([True, True]))


def test_right_in_score_order_is_cocos_greedy_matching():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    preds = torch.tensor([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    # the first (best-scored) takes the GT box although the second overlaps it more: the second is a duplicate
    assert right_in_score_order(preds, gt) == [True, False, False]
    assert right_in_score_order(preds, torch.zeros(0, 4)) == [False] * 3 and right_in_score_order(preds[:0], gt) == []


def _outputs(p: int = 2, k: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"pred_logits": torch.randn(p, k, generator=g), "presence_logits": torch.randn(p, generator=g),
            "pred_masks": torch.randn(p, k, 8, 8, generator=g), "pred_iou": torch.rand(p, k, generator=g)}


def test_platt_scaling_is_monotonic_and_stored_in_the_inference_config(tmp_path):
    out = _outputs()
    s, _ = instance_scores(out)
    c = calibrate(out, s, InferenceConfig(score_calibration=[2.0, 1.0]).score_calibration)
    assert torch.equal(c.argsort(), s.argsort()) and not torch.allclose(c, s)
    torch.testing.assert_close(c, torch.sigmoid(2.0 * torch.logit(s, 1e-4) + 1.0))
    assert calibrate(out, s, None) is s
    cfg = InferenceConfig(score_calibration=[2.0, 1.0])  # the older [a, b] of Platt scaling still loads
    cfg.save(tmp_path / "inference_config.json")
    assert InferenceConfig.load(tmp_path).score_calibration == {"features": ["score"], "weights": [2.0], "bias": 1.0}


def test_feature_calibration_reads_the_mask_and_is_checked():
    out = _outputs()
    names = ["match", "presence", "mask_confidence", "predicted_iou", "mask_area"]
    x = score_features(out, names)
    assert x.shape == (2, 3, 5)
    torch.testing.assert_close(x[..., 0], out["pred_logits"])
    torch.testing.assert_close(x[1, :, 1], out["presence_logits"][1].expand(3))
    torch.testing.assert_close(x[..., 3], torch.logit(out["pred_iou"], 1e-4))
    torch.testing.assert_close(x[..., 4].exp(), (out["pred_masks"] > 0).float().mean((-1, -2)))
    cal = {"features": names, "weights": [1.0, 0.5, 0.3, 0.2, 0.1], "bias": -1.0}
    s, _ = instance_scores(out)
    torch.testing.assert_close(calibrate(out, s, cal), torch.sigmoid(x @ torch.tensor(cal["weights"]) - 1.0))
    with pytest.raises(ValueError, match="no IoU head"):
        calibrate({k: v for k, v in out.items() if k != "pred_iou"}, s, cal)
    for bad in ({"features": ["colour"], "weights": [1.0], "bias": 0.0},  # an unknown feature
                {"features": ["match", "presence"], "weights": [1.0], "bias": 0.0},  # lengths differ
                {"features": ["match"], "weights": [-1.0], "bias": 0.0},  # falls as the match rises
                {"features": ["presence"], "weights": [1.0], "bias": 0.0},  # ignores the match
                [-1.0, 0.0], "platt"):
        with pytest.raises(ValueError, match="score_calibration"):
            InferenceConfig(score_calibration=bad)


def test_a_calibration_reading_the_iou_head_needs_one(tiny_checkpoint):
    model = SamLitePredictor.from_pretrained(tiny_checkpoint).model  # text only: no IoU head
    cal = {"features": ["match", "predicted_iou"], "weights": [1.0, 1.0], "bias": 0.0}
    with pytest.raises(ValueError, match="no IoU head"):
        SamLitePredictor(model, inference_config=InferenceConfig(score_calibration=cal))


def test_predictor_reports_calibrated_scores(tiny_geometric_checkpoint):
    plain = SamLitePredictor.from_pretrained(tiny_geometric_checkpoint)
    cal = {"features": ["match", "mask_confidence", "predicted_iou"], "weights": [1.0, 2.0, 0.5], "bias": 0.3}
    scaled = SamLitePredictor(plain.model, inference_config=InferenceConfig(score_calibration=cal))
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    for p in (plain, scaled):
        p.set_image(image)
    a = plain.predict("car", score_threshold=0.0, nms_iou=1.0)
    b = scaled.predict("car", score_threshold=0.0, nms_iou=1.0)
    assert len(a) == len(b) > 0
    out = plain.predict_torch(Prompt(["car"]))
    expected = calibrate(out, instance_scores(out)[0], cal)[0]
    torch.testing.assert_close(b.scores, expected[b.query_indices])  # the instances are ranked by the new score
    assert torch.equal(b.scores, b.scores.sort(descending=True).values)


def test_calibration_data_on_a_tiny_dataset(tmp_path, tiny_geometric_checkpoint):
    root = write_tiny_coco(tmp_path, n_images=2)
    coco = CocoConcepts(root)
    predictor = SamLitePredictor.from_pretrained(tiny_geometric_checkpoint)
    samples = box_samples(coco, coco.image_ids)
    x, raw, right = calibration_data(predictor, samples, ["match", "predicted_iou"])
    assert x.shape == (len(raw), 2) == (len(right), 2) and len(raw) > 0 and right.dtype == bool
    calibrated = SamLitePredictor(predictor.model, inference_config=InferenceConfig(score_calibration=[1.0, 0.0]))
    with pytest.raises(ValueError, match="raw scores"):
        calibration_data(calibrated, samples, ["match"])


def test_box_matching_by_hand():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 4.0, 4.0]])
    gt = torch.tensor([[1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    rows, cols = _match(pred, gt)
    assert rows == [0] and cols == [0]


def test_box_protocol_on_a_tiny_dataset(tmp_path, tiny_checkpoint):
    root = write_tiny_coco(tmp_path, n_images=3)
    data = json.loads((root / "annotations.json").read_text())
    for a in data["annotations"]:
        if a["category_id"] == 1:
            del a["segmentation"]  # cars known by their box alone: still evaluated
    (root / "annotations.json").write_text(json.dumps(data))
    coco = CocoConcepts(root)
    samples = box_samples(coco, coco.image_ids, negatives=3)
    present = [s for s in samples if s.present]
    assert {s.prompt for s in present} == {"car", "sports ball"}  # things only
    with_stuff = box_samples(coco, coco.image_ids, negatives=3, stuff=True)  # what calibration fits on
    skies = [s for s in with_stuff if s.prompt == "sky"]
    assert {s.image_id for s in skies if s.present} == {i for i in coco.image_ids if coco.stuff_labelled[i]}
    assert all(len(s.boxes) == 1 for s in skies if s.present)
    assert all(len(s.boxes) == len(s.areas) >= 1 for s in present)
    res = evaluate_boxes(SamLitePredictor.from_pretrained(tiny_checkpoint), samples, 0.0, 0.5, progress=False)
    assert res["n_present"] == len(present) and res["found"] == 1.0  # threshold 0: every prompt finds something
    assert res["rejected"] == 0.0 or res["n_absent"] == 0
    assert 0.0 <= res["box_F1_50"] <= 1.0 and set(res["recall_by_size"]) == {"small", "medium", "large"}
    assert res["reliability"]["n"] > 0


def test_presence_auroc_per_category_by_hand():
    from types import SimpleNamespace

    from sam_lite.evaluation.boxes import _mean_auroc_per_category

    s = lambda prompt, present: SimpleNamespace(prompt=prompt, present=present)  # noqa: E731
    samples = [s("dog", True), s("dog", False), s("cat", True), s("cat", False), s("cat", False), s("cow", True)]
    presence = np.array([0.9, 0.1, 0.2, 0.5, 0.1, 0.7])
    # dog: perfectly ranked (1.0); cat: the present photo above one of two absent ones (0.5); cow: one class only
    assert _mean_auroc_per_category(samples, presence) == pytest.approx(0.75)


def test_best_instance_presence_keeps_the_best_guess_when_the_concept_is_there():
    from sam_lite.evaluation.metrics import SegmentationMetrics
    from sam_lite.postprocessing import PostProcess
    from sam_lite.processing import ImageMeta, SamLiteProcessor

    masks = torch.full((1, 3, 8, 8), -5.0)
    masks[0, 0, :4, :4] = masks[0, 1, 4:, 4:] = 5.0  # queries 0 and 1 non-empty, query 2 empty
    out = {"pred_masks": masks}
    scores = torch.tensor([0.05, 0.10, 0.30])  # the empty query 2 scores best: never returned
    meta = ImageMeta((32, 32), (32, 32), 32)
    for floor, presence, expected in ((None, 0.99, []), (0.9, 0.5, []), (0.9, 0.95, [1])):
        post = PostProcess(SamLiteProcessor(image_size=32), InferenceConfig(score_threshold=0.5,
                                                                               best_instance_presence=floor))
        order, _ = post.instances(out, 0, scores, meta, presence=presence)
        assert order.tolist() == expected
    with pytest.raises(ValueError, match="best_instance_presence"):
        InferenceConfig(best_instance_presence=1.5)
    # the metrics apply the same rule at every grid threshold
    gt = torch.zeros(1, 16, 16, dtype=torch.bool)
    gt[0, :8, :8] = True
    for floor, tp in ((None, 0), (0.9, 1)):
        m = SegmentationMetrics(threshold=0.5, thresholds=[0.5], compute_ap=False, best_instance_presence=floor)
        m.update("category", gt.clone(), torch.tensor([0.2]), 0.95, gt, 1, "dog")
        assert m.inst_counts[0][0][0] == tp
