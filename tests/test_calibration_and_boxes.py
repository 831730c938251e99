"""Score calibration (reliability table, ECE, Platt scaling, its use by the post-processing) and the box protocol."""

import json

import numpy as np
import pytest
import torch

from sam_lite import InferenceConfig, SamLitePredictor
from sam_lite.data import CocoConcepts
from sam_lite.evaluation.boxes import _match, box_samples, evaluate_boxes
from sam_lite.evaluation.calibration import apply_platt, fit_platt, reliability
from sam_lite.postprocessing import calibrate

from .fixtures import write_tiny_coco


def test_reliability_table_and_ece_by_hand():
    pairs = [(0.05, False)] * 4 + [(0.95, True)] * 4 + [(0.55, True), (0.55, False)]
    r = reliability(pairs)
    assert r["n"] == 10 and [b["n"] for b in r["bins"]] == [4, 2, 4]
    # bins: |0 - 0.05| x 0.4 + |0.5 - 0.55| x 0.2 + |1 - 0.95| x 0.4 = 0.02 + 0.01 + 0.02
    assert r["ece"] == pytest.approx(0.05)
    assert reliability([])["n"] == 0


def test_platt_scaling_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 0.6, 4000)
    true_p = 1 / (1 + np.exp(-(2.0 * np.log(raw / (1 - raw)) + 1.5)))  # right with probability sigmoid(2 logit + 1.5)
    pairs = list(zip(raw.tolist(), (rng.uniform(size=raw.size) < true_p).tolist()))
    a, b = fit_platt(pairs)
    assert a == pytest.approx(2.0, abs=0.25) and b == pytest.approx(1.5, abs=0.3)
    calibrated = [(apply_platt(s, a, b), r) for s, r in pairs]
    assert reliability(calibrated)["ece"] < reliability(pairs)["ece"] / 3
    with pytest.raises(ValueError, match="right and wrong"):
        fit_platt([(0.3, True), (0.4, True)])


def test_calibration_is_monotonic_and_stored_in_the_inference_config(tmp_path):
    s = torch.tensor([[0.1, 0.2, 0.3]])
    c = calibrate(s, [2.0, 1.0])
    assert torch.equal(c.argsort(), s.argsort()) and not torch.allclose(c, s)
    assert calibrate(s, None) is s
    cfg = InferenceConfig(score_calibration=[2.0, 1.0])
    cfg.save(tmp_path / "inference_config.json")
    assert InferenceConfig.load(tmp_path).score_calibration == [2.0, 1.0]
    with pytest.raises(ValueError, match="score_calibration"):
        InferenceConfig(score_calibration=[-1.0, 0.0])


def test_predictor_reports_calibrated_scores(tiny_checkpoint):
    plain = SamLitePredictor.from_pretrained(tiny_checkpoint)
    scaled = SamLitePredictor(plain.model, inference_config=InferenceConfig(score_calibration=[1.0, 2.0]))
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    for p in (plain, scaled):
        p.set_image(image)
    a = plain.predict("car", score_threshold=0.0, nms_iou=1.0)
    b = scaled.predict("car", score_threshold=0.0, nms_iou=1.0)
    assert len(a) == len(b) > 0
    torch.testing.assert_close(b.scores, calibrate(a.scores, [1.0, 2.0]))


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
