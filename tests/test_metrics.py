"""Evaluation metrics on hand-computed examples, and the evaluation loop on a fake predictor / dataset."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_lite.evaluation.metrics import (APSample, SegmentationMetrics, choose_threshold, ciou, coco_mask_ap,
                                         encode_masks, giou, intersection_union, matthews_corrcoef, mcc_from_counts,
                                         presence_accuracy, roc_auc, sample_iou)
from sam_lite.evaluation.instance_matching import mask_iou_matrix, match_counts, prf_from_counts


def box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def stack(*ms, h=4, w=4):
    return torch.stack(ms) if ms else torch.zeros(0, h, w, dtype=torch.bool)


# --- per-sample IoU, gIoU, cIoU ---------------------------------------------------------------------------------
def test_union_iou_by_hand():
    # predicted: two instances covering rows 0-1 (8 px); GT: one instance covering rows 1-2 (8 px)
    pred = stack(box_mask(4, 4, 0, 2, 0, 2), box_mask(4, 4, 0, 2, 2, 4))
    gt = stack(box_mask(4, 4, 1, 3, 0, 4))
    inter, union = intersection_union(pred, gt)
    assert (inter, union) == (4, 12)  # row 1 shared; rows 0-2 covered
    assert sample_iou(inter, union) == pytest.approx(1 / 3)


def test_negative_sample_iou():
    empty_gt = stack()
    assert sample_iou(*intersection_union(stack(), empty_gt)) == 1.0  # absent concept, nothing predicted
    one_pixel = stack(box_mask(4, 4, 0, 1, 0, 1))
    assert sample_iou(*intersection_union(one_pixel, empty_gt)) == 0.0  # absent concept, any pixel predicted
    assert sample_iou(*intersection_union(stack(), stack(box_mask(4, 4, 0, 2, 0, 2)))) == 0.0  # missed concept


def test_giou_and_ciou():
    inters, unions = [4, 4, 0], [12, 4, 0]  # IoU 1/3, a perfect one, a correctly empty negative
    assert giou(inters, unions) == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert ciou(inters, unions) == pytest.approx(8 / 16)
    assert math.isnan(ciou([0], [0])) and math.isnan(giou([], []))


# --- presence / image level -------------------------------------------------------------------------------------
def test_presence_accuracy_and_auroc():
    p, y = [0.9, 0.8, 0.3, 0.1], [True, False, True, False]
    assert presence_accuracy(p, y, 0.5) == pytest.approx(0.5)
    assert presence_accuracy(p, y, 0.2) == pytest.approx(0.75)
    # positive pairs ranked right: (0.9 > 0.8), (0.9 > 0.1), (0.3 > 0.1); wrong: (0.3 < 0.8) -> 3/4
    assert roc_auc(p, y) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # ties count half
    assert math.isnan(roc_auc([0.2, 0.9], [True, True]))  # one class only


def test_mcc_known_confusion_matrix():
    # tp=6, fp=2, fn=1, tn=3: (6*3 - 2*1) / sqrt(8 * 7 * 5 * 4)
    expected = 16 / math.sqrt(1120)
    assert mcc_from_counts(6, 2, 1, 3) == pytest.approx(expected)
    pred = [1] * 6 + [1] * 2 + [0] * 1 + [0] * 3
    act = [1] * 6 + [0] * 2 + [1] * 1 + [0] * 3
    assert matthews_corrcoef(pred, act) == pytest.approx(expected)
    assert matthews_corrcoef([1, 0], [1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1], [1, 0]) == pytest.approx(-1.0)
    assert math.isnan(matthews_corrcoef([1, 0], [1, 1]))  # GT all positive: undefined
    assert matthews_corrcoef([0, 0, 0], [1, 0, 0]) == 0.0  # constant prediction: no information


# --- mask AP ----------------------------------------------------------------------------------------------------
H, W = 48, 48


def ap_sample(prompt, gts, preds=(), scores=()):
    return APSample(prompt, H, W, encode_masks(stack(*gts, h=H, w=W)), encode_masks(stack(*preds, h=H, w=W)),
                    list(scores))


def test_ap_perfect_and_shifted():
    a, b = box_mask(H, W, 10, 30, 10, 30), box_mask(H, W, 5, 15, 30, 45)
    perfect = [ap_sample("dog", [a], [a], [0.9]), ap_sample("cat", [b], [b], [0.8]),
               ap_sample("cat", [], [], [])]
    assert coco_mask_ap(perfect) == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
    # shifted 4 px: IoU = 320 / 480 = 0.667 -> a match at IoU 0.50..0.65 (4 of 10 thresholds), none at 0.75
    shifted = box_mask(H, W, 10, 30, 14, 34)
    res = coco_mask_ap([ap_sample("dog", [a], [shifted], [0.9])])
    assert res["AP50"] == pytest.approx(1.0) and res["AP75"] == pytest.approx(0.0)
    assert res["AP"] == pytest.approx(0.4)
    # a false positive on a negative sample, scored above the true positive, lowers AP
    fp = [ap_sample("dog", [a], [a], [0.5]), ap_sample("dog", [], [b], [0.9])]
    assert coco_mask_ap(fp)["AP"] < 1.0


def test_ap_degenerate_cases():
    a = box_mask(H, W, 10, 30, 10, 30)
    assert all(math.isnan(v) for v in coco_mask_ap([]).values())
    assert all(math.isnan(v) for v in coco_mask_ap([ap_sample("dog", [], [a], [0.9])]).values())  # no GT
    assert coco_mask_ap([ap_sample("dog", [a])]) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}  # nothing predicted


# --- accumulator ------------------------------------------------------------------------------------------------
def test_accumulator_by_type_and_threshold():
    m = SegmentationMetrics(threshold=0.5, thresholds=[0.25, 0.5, 0.75])
    gt = stack(box_mask(4, 4, 1, 3, 0, 4))
    pred = stack(box_mask(4, 4, 1, 3, 0, 4), box_mask(4, 4, 0, 1, 0, 4))  # exact mask (0.9) + a wrong row (0.3)
    m.update("category", pred, torch.tensor([0.9, 0.3]), 0.95, gt, image_id=1, prompt="dog")
    m.update("negative", stack(box_mask(4, 4, 0, 1, 0, 1)), torch.tensor([0.4]), 0.2, stack(), image_id=1,
             prompt="cat")
    m.update("negative", stack(), torch.zeros(0), 0.6, stack(), image_id=2, prompt="cat")
    r = m.compute()
    assert set(r) == {"all", "category", "negative"}
    assert r["all"]["n"] == 3 and r["all"]["n_positive"] == 1
    assert r["category"]["gIoU"] == pytest.approx(1.0)  # the 0.3 mask is below the threshold
    assert r["negative"]["gIoU"] == pytest.approx(1.0)
    assert r["all"]["cIoU"] == pytest.approx(8 / 8)
    assert r["all"]["presence_acc"] == pytest.approx(2 / 3)  # 0.95 right, 0.2 right, 0.6 wrong
    assert r["all"]["IL_MCC"] == pytest.approx(1.0)
    assert r["category"]["AP"] == pytest.approx(1.0)
    assert math.isnan(r["negative"]["AP"]) and math.isnan(r["negative"]["IL_MCC"])
    low = m.compute(0.25)  # the wrong row and the negative's pixel now count
    assert low["category"]["gIoU"] == pytest.approx(8 / 12)
    assert low["negative"]["gIoU"] == pytest.approx(0.5)
    assert low["all"]["cIoU"] == pytest.approx(8 / 13)
    with pytest.raises(ValueError, match="not in the accumulated grid"):
        m.compute(0.6)
    with pytest.raises(ValueError, match="original image size"):
        m.update("category", stack(h=5, w=5), torch.zeros(0), 0.5, gt, 3, "dog")


def test_calibration_picks_the_obvious_threshold():
    assert choose_threshold([0.1, 0.3, 0.5, 0.7], [0.2, 0.9, 0.4, 0.1]) == (0.3, 0.9)
    assert choose_threshold([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 1, 1, 0])[0] == 0.3  # middle of the plateau
    m = SegmentationMetrics(threshold=0.5)
    obj = stack(box_mask(4, 4, 1, 3, 1, 3))
    junk = stack(box_mask(4, 4, 0, 1, 0, 4))
    for i in range(4):  # right masks score 0.8, junk on negatives scores 0.3
        m.update("category", obj, torch.tensor([0.8]), 0.7, obj, image_id=i, prompt="dog")
        m.update("negative", junk, torch.tensor([0.3]), 0.2, stack(), image_id=i, prompt="cat")
    g = m.calibrate("gIoU")
    assert 0.3 < g["threshold"] <= 0.8 and g["value"] == pytest.approx(1.0)
    assert m.calibrate("gIoU")["curve"]["0.30"] == pytest.approx(0.5)
    p = m.calibrate("presence_acc")
    assert 0.2 < p["threshold"] <= 0.7 and p["value"] == pytest.approx(1.0)


# --- instance F1 at IoU 0.5 ------------------------------------------------------------------------------------
def f1_case():
    """2 GT (25 px each), 3 predictions: a perfect match of A, IoU 10/25 = 0.4 with B, one on empty background."""
    gt_a, gt_b = box_mask(10, 10, 0, 5, 0, 5), box_mask(10, 10, 5, 10, 5, 10)
    exact, weak, background = gt_a, box_mask(10, 10, 5, 7, 5, 10), box_mask(10, 10, 0, 2, 7, 10)
    return stack(gt_a, gt_b), stack(exact, weak, background)


def test_instance_matching_by_hand():
    gt, pred = f1_case()
    iou = mask_iou_matrix(pred, gt)
    np.testing.assert_allclose(iou, [[1.0, 0.0], [0.0, 0.4], [0.0, 0.0]])
    assert match_counts(iou) == (1, 2, 1)
    assert prf_from_counts(1, 2, 1) == pytest.approx((1 / 3, 1 / 2, 0.4))  # F1 = 2 / (2 + 2 + 1)
    # one-to-one: two predictions covering the same GT well (IoU 1 and 16/20) -> one TP, one FP
    one = box_mask(4, 5, 0, 4, 0, 5)
    both = mask_iou_matrix(stack(one, box_mask(4, 5, 0, 4, 0, 4)), stack(one))
    np.testing.assert_allclose(both, [[1.0], [0.8]])
    assert match_counts(both) == (1, 1, 0)
    # maximum *total* IoU, not greedy: greedy would take the 0.6 pair and leave the other at 0.0 (TP 1)
    assert match_counts(np.array([[0.6, 0.55], [0.58, 0.0]])) == (2, 0, 0)
    assert match_counts(np.zeros((0, 2))) == (0, 0, 2) and match_counts(np.zeros((3, 0))) == (0, 3, 0)
    assert all(math.isnan(v) for v in prf_from_counts(0, 0, 0))


def test_instance_f1_accumulated_per_group_and_threshold():
    gt, pred = f1_case()
    empty = torch.zeros(0, 10, 10, dtype=torch.bool)
    m = SegmentationMetrics(threshold=0.5, thresholds=[0.1, 0.25, 0.75], compute_ap=False)
    # predictions passed out of score order: background 0.2, exact 0.6, weak 0.3
    m.update("category", pred[[2, 0, 1]], torch.tensor([0.2, 0.6, 0.3]), 0.9, gt, image_id=1, prompt="dog")
    m.update("negative", stack(box_mask(10, 10, 0, 1, 0, 1)), torch.tensor([0.4]), 0.5, empty, 1, "cat")
    m.update("negative", empty, torch.zeros(0), 0.1, empty, 2, "cat")  # contributes nothing
    low = m.compute(0.1)
    assert low["category"]["F1_50"] == pytest.approx(0.4)  # TP 1, FP 2, FN 1
    assert low["category"]["inst_precision_50"] == pytest.approx(1 / 3)
    assert low["category"]["inst_recall_50"] == pytest.approx(1 / 2)
    assert low["negative"]["F1_50"] == 0.0 and low["negative"]["inst_precision_50"] == 0.0  # FP 1
    assert math.isnan(low["negative"]["inst_recall_50"])
    assert low["all"]["F1_50"] == pytest.approx(2 / (2 + 3 + 1))  # micro-average over the three samples
    # above the background (0.2) and negative (0.4) scores: TP 1, FP 1 (weak), FN 1 at 0.25; TP 1, FN 1 at 0.5
    assert m.compute(0.25)["category"]["F1_50"] == pytest.approx(2 / 4)
    assert m.compute(0.25)["all"]["F1_50"] == pytest.approx(2 / 5)
    r = m.compute()
    assert r["all"]["F1_50"] == pytest.approx(2 / 3) and r["category"]["inst_precision_50"] == pytest.approx(1.0)
    assert all(math.isnan(r["negative"][k]) for k in ("F1_50", "inst_precision_50", "inst_recall_50"))
    assert m.compute(0.75)["all"]["F1_50"] == 0.0  # nothing kept: TP 0, FN 2
    c = m.calibrate("F1_50")
    assert c["threshold"] == 0.5 and c["value"] == pytest.approx(2 / 3)
    assert c["curve"] == pytest.approx({"0.10": 1 / 3, "0.25": 0.4, "0.50": 2 / 3, "0.75": 0.0})
    only_empty = SegmentationMetrics(compute_ap=False)
    only_empty.update("negative", empty, torch.zeros(0), 0.1, empty, 1, "cat")
    assert math.isnan(only_empty.compute()["all"]["F1_50"])


# --- evaluation loop on fakes -----------------------------------------------------------------------------------
@dataclass
class FakeSample:
    image_id: int
    file_path: Path
    prompt: str
    prompt_type: str
    ann_ids: list = field(default_factory=list)


class FakeCoco:
    def __init__(self, masks):
        self.masks = masks  # (image_id, prompt) -> bool [N, H, W]

    def instance_masks(self, s):
        return self.masks.get((s.image_id, s.prompt), torch.zeros(0, 6, 8, dtype=torch.bool))


class FakePredictor:
    """Predicts the GT of "dog" exactly, and a junk mask for "cat" at a low score."""

    def __init__(self, coco):
        self.coco, self.calls, self.image = coco, [], None

    def set_image(self, path):
        self.image = int(Path(path).stem)

    def predict(self, prompts, score_threshold=0.5):
        from sam_lite.predictor import PredictionResult

        self.calls.append((self.image, list(prompts), score_threshold))
        out = []
        for p in prompts:
            if p == "dog":
                masks = self.coco.masks[(self.image, "dog")]
                scores = torch.full((masks.shape[0],), 0.9)
            else:
                masks, scores = stack(box_mask(6, 8, 0, 1, 0, 8)), torch.tensor([0.2])
            keep = scores >= score_threshold
            out.append(PredictionResult(p, masks[keep], scores[keep], torch.zeros(int(keep.sum()), 4),
                                        presence=float(scores.max())))
        return out


def test_evaluate_loop_and_cli_table(tmp_path):
    from sam_lite.evaluation.evaluate import _json_safe, evaluate, format_table

    dog = stack(box_mask(6, 8, 2, 5, 1, 4), box_mask(6, 8, 2, 5, 5, 8))
    coco = FakeCoco({(1, "dog"): dog, (2, "dog"): dog[:1]})
    samples = [FakeSample(1, Path("1.jpg"), "dog", "category", [1, 2]), FakeSample(1, Path("1.jpg"), "cat", "negative"),
               FakeSample(2, Path("2.jpg"), "dog", "category", [3]), FakeSample(2, Path("2.jpg"), "cat", "negative")]
    pred = FakePredictor(coco)
    res = evaluate(pred, coco, samples, score_threshold=0.5, calibrate=True, progress=False, warmup=False)
    assert [c[:2] for c in pred.calls] == [(1, ["dog", "cat"]), (2, ["dog", "cat"])]  # one batched call per image
    assert pred.calls[0][2] == pytest.approx(0.05)  # predicted once at the floor, thresholds applied afterwards
    m = res["metrics"]
    assert m["all"]["n"] == 4 and m["all"]["gIoU"] == pytest.approx(1.0) and m["category"]["AP"] == pytest.approx(1.0)
    assert res["calibration"]["best_gIoU"]["value"] == pytest.approx(1.0)
    assert m["all"]["F1_50"] == pytest.approx(1.0) and math.isnan(m["negative"]["F1_50"])  # junk scores 0.2 < 0.5
    assert res["calibration"]["best_gIoU"]["curve"]["0.20"] == pytest.approx(0.5)
    assert res["latency_ms"]["set_image"]["mean"] >= 0
    table = format_table(m)
    assert "gIoU" in table and "negative" in table and "F1@.5" in table
    json.dumps(_json_safe(res))  # NaNs become null: valid JSON
