"""Visual-prompt evaluation: click placement, the metrics on hand-made masks, the loop with an oracle, the script."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_lite.data import CocoConcepts
from sam_lite.evaluation.geometric import (GeometricMetrics, best_match_iou, click_point, evaluate_geometric,
                                           mask_box, mask_iou, union_iou)

from .fixtures import write_tiny_coco

ROOT = Path(__file__).resolve().parent.parent


def test_click_at_the_centre_of_the_largest_inscribed_region():
    m = np.zeros((20, 30), bool)
    m[5:16, 4:15] = True  # an 11x11 square: its centre pixel (9, 10)
    assert click_point(m) == (9.0, 10.0)
    m[5:8, 15:29] = True  # a thin arm does not move it
    assert click_point(m) == (9.0, 10.0)
    ring = np.zeros((21, 21), bool)
    yy, xx = np.mgrid[:21, :21]
    r = np.hypot(yy - 10, xx - 10)
    ring[(r >= 5) & (r <= 9)] = True
    x, y = click_point(ring)
    assert ring[int(y), int(x)]  # on the ring, not in its hole (where the centroid is)
    edge = np.zeros((10, 10), bool)
    edge[:, :4] = True  # touches the photo's left edge: the edge counts as a border
    assert click_point(edge)[0] in (1.0, 2.0)
    with pytest.raises(ValueError, match="non-empty"):
        click_point(np.zeros((4, 4), bool))


def test_metrics_on_hand_made_masks():
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True  # 8 px
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[1:3] = True  # 8 px, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(torch.zeros(4, 4), torch.zeros(4, 4)) == 1.0
    assert union_iou(torch.stack([a, b]), a[None]) == pytest.approx(8 / 12)
    assert union_iou(torch.zeros(0, 4, 4, dtype=torch.bool), a[None]) == 0.0
    assert best_match_iou(torch.stack([a, b]), torch.stack([b, a])) == pytest.approx([1.0, 1.0])
    assert best_match_iou(torch.zeros(0, 4, 4, dtype=torch.bool), a[None]) == [0.0]
    assert mask_box(a.numpy()) == [0.0, 0.0, 3.0, 1.0]
    m = GeometricMetrics()
    m.add("click", "thing", 1.0)
    m.add("click", "stuff", 0.5)
    m.add("exemplar", "thing", 0.25)
    out = m.compute()
    assert out["all"]["click_mIoU"] == 0.75 and out["thing"]["click_mIoU"] == 1.0 and out["all"]["n_click"] == 2
    assert out["stuff"]["click_mIoU"] == 0.5 and "exemplar_gIoU" not in out["stuff"]


class _Result:
    def __init__(self, masks):
        self.masks = masks
        self.scores = self.iou_predictions = torch.ones(len(masks))


class OraclePredictor:
    """Answers from the ground truth: a click -> the instance under it, a box -> the instance with that box,
    exemplars / text -> every instance of the concept the exemplar box belongs to."""

    def __init__(self, coco):
        self.coco = coco

    def set_image(self, path):
        iid = next(i for i in self.coco.image_ids if self.coco.image_path(i) == Path(path))
        present, _ = self.coco.concepts_in_image(iid)
        self.gt = {n: torch.from_numpy(np.stack([self.coco.ann_mask(self.coco.coco.anns[a]) for a in ids]))
                   for n, ids in present.items()}

    def predict(self, prompt=None, points=None, box=None, exemplars=None, multimask_output=False,
                score_threshold=None):
        if isinstance(prompt, list):
            return [self.predict(p) for p in prompt]
        every = [(n, m) for n, ms in self.gt.items() for m in ms]
        if points is not None:
            x, y = (int(v) for v in points[0])
            return _Result(torch.stack([m for _, m in every if m[y, x]]))
        if box is not None:
            return _Result(torch.stack([m for _, m in every if mask_box(m.numpy()) == list(box)]))
        if exemplars is not None:
            prompt = next(n for n, m in every if mask_box(m.numpy()) == list(exemplars[0]))
        return _Result(self.gt[prompt])


def test_evaluation_loop_with_an_oracle(tmp_path):
    coco = CocoConcepts(write_tiny_coco(tmp_path / "coco", n_images=4))
    out = evaluate_geometric(OraclePredictor(coco), coco, coco.image_ids, score_threshold=0.5, progress=False)
    m = out["metrics"]["all"]
    assert out["n_images"] == 4 and m["n_click"] == m["n_box"] == m["n_text_instance"] > 4
    for k in ("click_mIoU", "box_mIoU", "exemplar_gIoU", "exemplar_text_gIoU", "text_gIoU", "text_instance_mIoU",
              "click_multimask_oracle_mIoU"):
        assert m[k] == pytest.approx(1.0), k
    assert out["metrics"]["stuff"]["n_click"] >= 1  # the "sky" band of even photos


def test_script_on_a_tiny_geometric_checkpoint(tmp_path, capsys):
    from sam_lite import SamLiteConfig, SamLiteModel

    data = write_tiny_coco(tmp_path / "coco", n_images=6)
    torch.manual_seed(0)
    SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True)).save_pretrained(tmp_path / "ckpt")
    from sam_lite.evaluation.geometric import main

    threads = torch.get_num_threads()
    try:
        rc = main(["--data", str(data), "--checkpoint", str(tmp_path / "ckpt"), "--split", "all", "--max-images", "2",
                   "--threshold", "0.0", "--threads", "1", "--quiet", "--out", str(tmp_path / "geo.json")])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert rc == 0 and "1-click" in printed and "exemplar gIoU" in printed
    result = json.loads((tmp_path / "geo.json").read_text())
    m = result["metrics"]["all"]
    assert result["n_images"] == 2 and 0 <= m["click_mIoU"] <= 1 and 0 <= m["exemplar_gIoU"] <= 1
