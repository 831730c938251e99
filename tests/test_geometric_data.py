"""Geometric training prompts: points inside their instance, boxes around it, exemplar targets, collate, training."""

import json
import random
from pathlib import Path

import pytest
import torch

from sam_lite.data import CocoConcepts, ConceptSegmentationDataset, collate
from sam_lite.data.geometric import jittered_box, sample_geometric_prompt, sample_point
from sam_lite.training.criterion import DEFAULT_WEIGHTS, SetCriterion

from .fixtures import write_tiny_coco

ROOT = Path(__file__).resolve().parent.parent


def _scene():
    """Two cars and a ball on a 32x32 image whose bottom 4 rows are padding."""
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, 2:8, 2:12] = True
    masks[1, 15:25, 3:9] = True
    masks[2, 10:20, 18:28] = True
    valid = torch.ones(32, 32, dtype=torch.bool)
    valid[28:] = False
    return masks, ["car", "car", "ball"], valid


def test_points_lie_inside_their_mask_and_boxes_contain_it():
    masks, _, _ = _scene()
    rng = random.Random(0)
    for _ in range(200):
        i = rng.randrange(3)
        x, y = sample_point(masks[i], rng)
        assert masks[i, int(y), int(x)]
        x0, y0, x1, y1 = jittered_box(masks[i], rng)
        ys, xs = masks[i].nonzero(as_tuple=True)
        assert x0 <= xs.min() and y0 <= ys.min() and x1 >= xs.max() and y1 >= ys.max()
        assert 0 <= x0 < x1 <= 31 and 0 <= y0 < y1 <= 31
        w = int(xs.max() - xs.min() + 1)
        assert xs.min() - x0 <= 0.1 * w + 1e-6  # jitter up to 10 % of the side


def test_sampled_prompts_and_targets():
    masks, names, valid = _scene()
    rng = random.Random(1)
    seen = set()
    for _ in range(300):
        text, idx, kind, geo = sample_geometric_prompt(masks, names, ["car", "ball"], valid, rng)
        seen.add(kind)
        if kind == "exemplar":
            (box,) = geo["exemplars"].tolist()
            name = names[idx[0]]
            assert idx == [i for i, n in enumerate(names) if n == name]  # every instance of the concept
            assert any(box == [float(v) for v in (m.nonzero()[:, 1].min(), m.nonzero()[:, 0].min(),
                                                  m.nonzero()[:, 1].max(), m.nonzero()[:, 0].max())]
                       for m in masks[idx])
            assert text in ("", name)
        else:
            assert text == "" and len(idx) == 1
        if kind == "point":
            (x, y), labels = geo["points"][0].tolist(), geo["point_labels"].tolist()
            assert labels[0] == 1 and masks[idx[0], int(y), int(x)]
            if len(labels) == 2:
                xn, yn = geo["points"][1].tolist()
                assert labels[1] == 0 and not masks[idx[0], int(yn), int(xn)] and valid[int(yn), int(xn)]
        if kind == "box":
            x0, y0, x1, y1 = geo["box"].tolist()
            ys, xs = masks[idx[0]].nonzero(as_tuple=True)
            assert x0 <= xs.min() and x1 >= xs.max() and y0 <= ys.min() and y1 >= ys.max()
    assert seen == {"point", "box", "exemplar"}
    # no exhaustively labelled concept: no exemplar prompt
    kinds = {sample_geometric_prompt(masks, names, [], valid, rng)[2] for _ in range(50)}
    assert kinds == {"point", "box"}


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    return CocoConcepts(write_tiny_coco(tmp_path_factory.mktemp("coco")))


def test_dataset_items_and_collate(tiny_coco):
    plain = ConceptSegmentationDataset(tiny_coco, tiny_coco.image_ids, image_size=64, prompts_per_image=4)
    off = ConceptSegmentationDataset(tiny_coco, tiny_coco.image_ids, image_size=64, prompts_per_image=4,
                                     geometric_fraction=0.0)
    for i in range(3):  # off by default, and off means the same prompts as before
        a, b = plain[i], off[i]
        assert a["prompts"] == b["prompts"] and all(g is None for g in a["geometry"])
    ds = ConceptSegmentationDataset(tiny_coco, tiny_coco.image_ids, image_size=64, prompts_per_image=6,
                                    geometric_fraction=0.5)
    items = [ds[i] for i in range(len(ds))]
    kinds = [k for it in items for k in it["prompt_types"]]
    assert {"point", "box", "exemplar"} <= set(kinds) and "category" in kinds
    for it in items:
        for p, t, kind, g in zip(it["prompts"], it["targets"], it["prompt_types"], it["geometry"]):
            assert (g is not None) == (kind in ("point", "box", "exemplar"))
            if kind == "point":
                x, y = g["points"][0].long().tolist()
                assert t["masks"].shape[0] == 1 and t["masks"][0, y, x]
    batch = collate(items[:2])
    geo, n = batch["prompt"].geometry(), len(batch["prompts"])
    assert batch["prompt"].text == batch["prompts"]
    assert geo["points"].shape[0] == geo["point_labels"].shape[0] == n and geo["points"].shape[2] == 2
    assert geo["boxes"].shape == (n, 4) and geo["box_valid"].shape == (n,)
    assert geo["exemplars"].shape[0] == n and geo["exemplars"].shape[2] == 4 and geo["exemplars"].shape[1] >= 1
    assert geo["text_valid"].tolist() == [bool(p) for p in batch["prompts"]]
    rows = [g for it in items[:2] for g in it["geometry"]]
    assert geo["box_valid"].tolist() == [g is not None and "box" in g for g in rows]


def test_iou_loss_is_the_error_against_the_detached_mask_iou():
    k = 3
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    pred = torch.full((1, k, 8, 8), -10.0)
    pred[0, 0, :4, :4] = 10  # query 0: exact (IoU 1)
    pred[0, 1, :4, :2] = 10  # query 1: half (IoU 0.5)
    out = {"pred_logits": torch.tensor([[5.0, 0.0, -5.0]]), "pred_masks": pred,
           "pred_boxes": torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.2, 0.25, 0.25, 0.5], [0.8, 0.8, 0.1, 0.1]]]),
           "presence_logits": torch.zeros(1), "pred_iou": torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True)}
    tgt = {"masks": masks, "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5]])}
    losses = SetCriterion()(out, [tgt])
    assert DEFAULT_WEIGHTS["loss_iou"] > 0
    # query 0 matched (target 1), the others against their best IoU (0.5 and 0)
    assert losses["loss_iou"].item() == pytest.approx(0.25 + (0.0 + 0.25) / 2)
    losses["loss"].backward()
    g = out["pred_iou"].grad[0]
    assert g[0] < 0 and g[1] == 0 and g[2] > 0
    empty = {"masks": torch.zeros(0, 8, 8, dtype=torch.bool), "boxes": torch.zeros(0, 4)}
    assert SetCriterion()(out, [empty])["loss_iou"] == 0


def test_two_training_steps_with_geometric_prompts(tmp_path):
    from sam_lite.training.train import main

    data = write_tiny_coco(tmp_path / "coco", n_images=6)
    threads = torch.get_num_threads()
    try:
        main(["--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--config", "tiny",
              "--batch-size", "2", "--prompts-per-image", "3", "--workers", "0", "--threads", "1",
              "--warmup-steps", "1", "--geometric-fraction", "0.5"])
    finally:
        torch.set_num_threads(threads)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all("loss_iou" in rec and rec["loss_iou"] >= 0 for rec in log)
    from sam_lite import SamLiteModel

    model = SamLiteModel.from_pretrained(tmp_path / "run" / "final")
    assert model.config.geometric_prompts
