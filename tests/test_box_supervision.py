"""Box-only instances: the loader (v3 fields, plain detection datasets), the dataset's targets and dense labels, and
the BoxInst projection terms of the matcher and criterion."""

import json

import pytest
import torch

from sam_lite.data import CocoConcepts, ConceptSegmentationDataset, collate
from sam_lite.training.criterion import SetCriterion, projection_loss
from sam_lite.training.matcher import HungarianMatcher, batch_projection_cost

from .fixtures import write_tiny_coco


def _boxes_only(root, image_ids, v3_fields=True):
    """Strip the masks of every "car" on ``image_ids`` (box-only instances, as in coco_mini v3)."""
    data = json.loads((root / "annotations.json").read_text())
    for a in data["annotations"]:
        if a["image_id"] in image_ids and a["category_id"] == 1:
            del a["segmentation"]
    if v3_fields:
        for im in data["images"]:
            if im["id"] in image_ids:
                cars = any(a["category_id"] == 1 for a in data["annotations"] if a["image_id"] == im["id"])
                im.update(labelled_category_ids=[2], neg_category_ids=[], box_labelled_category_ids=[1, 2],
                          box_neg_category_ids=[] if cars else [1])
    (root / "annotations.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def box_coco(tmp_path_factory):
    return CocoConcepts(_boxes_only(write_tiny_coco(tmp_path_factory.mktemp("boxes"), n_images=4), {1, 2}))


def test_box_only_annotations_are_kept_and_labelled_at_box_level(box_coco):
    assert box_coco.skipped["invalid annotation"] == 0
    for iid in (1, 2):
        boxed = box_coco.box_annotations(iid)
        assert boxed and all(name == "car" for name, _ in boxed)
        assert "car" not in box_coco.labelled_concepts(iid)  # no masks of cars here
        assert "car" in box_coco.box_labelled_concepts(iid)
        present, _ = box_coco.concepts_in_image(iid)
        assert "car" not in present and "sports ball" in present  # the mask level is unchanged
        assert all(a["id"] not in box_coco.box_only for _, a in box_coco.dense_annotations(iid))
    assert box_coco.box_annotations(3) == []  # masks everywhere else


def test_box_labels_off_reads_the_mask_level_alone(box_coco):
    """The ablation --box-labels off: box-only instances and box-level labels ignored; the mask level unchanged."""
    masks_only = CocoConcepts(box_coco.root, box_labels=False)
    for iid in box_coco.image_ids:
        assert masks_only.box_annotations(iid) == []
        assert masks_only.box_labelled_concepts(iid) == masks_only.labelled_concepts(iid) \
            == box_coco.labelled_concepts(iid)
        assert masks_only.negative_pool(iid, set(), level="box") == box_coco.negative_pool(iid, set())
        assert masks_only.concepts_in_image(iid) == box_coco.concepts_in_image(iid)
    assert "car" in box_coco.box_labelled_concepts(1) and "car" not in masks_only.box_labelled_concepts(1)


def test_a_detection_dataset_without_lvis_fields_trains_at_box_level(tmp_path):
    root = _boxes_only(write_tiny_coco(tmp_path, n_images=3), {1, 2, 3}, v3_fields=False)
    coco = CocoConcepts(root)
    for iid in coco.image_ids:
        assert "car" not in coco.labelled_concepts(iid) and coco.box_annotations(iid)
        assert "car" not in coco.negative_pool(iid, set(), level="box")  # cars are present
    ds = ConceptSegmentationDataset(coco, coco.image_ids, image_size=64, copy_paste_prob=0.0, prompts_per_image=8)
    kinds = {k for i in range(len(ds)) for k in ds[i]["prompt_types"]}
    assert "category" in kinds


def test_box_targets_keep_their_box_and_skip_the_concept_map(box_coco):
    ds = ConceptSegmentationDataset(box_coco, [1], image_size=64, augment=False, prompts_per_image=12,
                                    negative_fraction=0.0)
    it = ds[0]
    cars = [t for p, t in zip(it["prompts"], it["targets"]) if p == "car"]
    assert cars, it["prompts"]
    t = cars[0]
    assert not t["has_mask"].any() and t["masks"].shape[0] == t["boxes"].shape[0] >= 1
    rect = t["masks"][0]
    ys, xs = rect.nonzero(as_tuple=True)
    assert rect[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # still a filled box after resizing
    balls = [t for p, t in zip(it["prompts"], it["targets"]) if p == "sports ball"]
    assert all(t["has_mask"].all() for t in balls)
    # the concept map: cells inside a car's box are ignored, and outside them "car" is not allowed
    car = box_coco.vocabulary.index("car")
    inside = torch.nn.functional.adaptive_avg_pool2d(rect.float()[None], it["dense_labels"].shape)[0] > 0
    cells = it["dense_labels"][inside]
    assert (cells != -1).all() and (cells == -2).any()  # ignored, or a masked concept drawn over the box
    assert not it["dense_allowed"][car]
    assert collate([it, it])["targets"][0]["has_mask"].dtype == torch.bool


def test_no_negative_without_a_verified_absent_concept(tmp_path):
    """A photo with nothing usable gives no prompt (it used to teach a random thing concept as absent: on a
    box-only photo, "person is absent" on a photo of people). Here "sports ball" is labelled, its ball not annotated
    (not exhaustive) and nothing is verified absent."""
    root = write_tiny_coco(tmp_path, n_images=2)
    data = json.loads((root / "annotations.json").read_text())
    for im in data["images"]:
        im.update(labelled_category_ids=[2], neg_category_ids=[], not_exhaustive_category_ids=[2])
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 2]
    (root / "annotations.json").write_text(json.dumps(data))
    coco = CocoConcepts(root)
    ds = ConceptSegmentationDataset(coco, coco.image_ids, image_size=64, copy_paste_prob=0.0)
    assert all(ds[i]["prompts"] == [] for i in range(len(ds)))
    assert collate([ds[0], ds[1]])["image_index"].numel() == 0


def _box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1
    return m


def test_projection_loss_is_zero_only_for_a_mask_that_fills_its_box_edges():
    box = _box_mask(16, 16, 4, 12, 2, 10)
    fits = (box * 40 - 20)[None]  # the box itself
    diamond = torch.full((16, 16), -20.0)
    for y in range(4, 12):  # a shape touching all four box edges: the projections still match
        diamond[y, 2:10] = 20.0 if y in (4, 11) else -20.0
    diamond[4:12, 2] = diamond[4:12, 9] = 20.0
    shifted = (_box_mask(16, 16, 6, 14, 2, 10) * 40 - 20)[None]
    assert projection_loss(fits, box[None]).item() < 0.01
    assert projection_loss(diamond[None], box[None]).item() < 0.01  # a box does not say which pixels inside
    assert projection_loss(shifted, box[None]).item() > 0.1


def test_matcher_uses_projections_for_box_only_targets():
    box = _box_mask(16, 16, 4, 12, 2, 10).bool()
    good = box.float() * 20 - 10
    bad = _box_mask(16, 16, 0, 4, 10, 16) * 20 - 10
    cxcywh = torch.tensor([[6 / 16, 8 / 16, 8 / 16, 8 / 16]])
    out = {"pred_logits": torch.zeros(1, 2), "pred_masks": torch.stack([bad, good])[None],
           "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]]])}  # boxes say nothing
    target = {"masks": box[None], "boxes": cxcywh, "has_mask": torch.tensor([False])}
    (q, t), = HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0, mask_cost_stride=1)(out, [target])
    assert q.tolist() == [1]
    cost = batch_projection_cost(torch.stack([bad, good]).sigmoid(), box[None].float())
    assert cost[1, 0] < cost[0, 0]


def test_criterion_supervises_box_only_masks_by_projection_alone():
    box = _box_mask(16, 16, 4, 12, 2, 10).bool()
    logits = torch.full((1, 2, 16, 16), -10.0)
    logits[0, 0] = box.float() * 20 - 10
    out = {"pred_logits": torch.tensor([[5.0, -5.0]]), "pred_masks": logits.requires_grad_(),
           "pred_boxes": torch.tensor([[[6 / 16, 8 / 16, 8 / 16, 8 / 16], [0.5, 0.5, 0.1, 0.1]]]),
           "presence_logits": torch.tensor([3.0]), "pred_semantic": (box.float() * 20 - 10)[None]}
    box_target = {"masks": box[None], "boxes": torch.tensor([[6 / 16, 8 / 16, 8 / 16, 8 / 16]]),
                  "has_mask": torch.tensor([False])}
    losses = SetCriterion()(out, [box_target])
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0  # a box never supervises pixels directly
    assert losses["loss_proj"] < 0.01 and losses["loss_sem_dice"] < 0.01
    mask_target = {**box_target, "has_mask": torch.tensor([True])}
    with_mask = SetCriterion()(out, [mask_target])
    assert with_mask["loss_proj"] == 0 and with_mask["loss_dice"] < 0.01
    hollow = logits.detach().clone()
    hollow[0, 0, 6:10, 4:8] = -10.0  # a hole in the middle: the box cannot see it, a mask can
    out["pred_masks"] = hollow
    assert SetCriterion()(out, [box_target])["loss_proj"] < 0.01
    assert SetCriterion()(out, [mask_target])["loss_dice"] > 0.05


def _two_box_only_photos(tmp_path):
    """4 photos: 1 and 2 labelled by boxes alone (every category), 3 and 4 with masks, exhaustive."""
    root = write_tiny_coco(tmp_path / "coco", n_images=4)
    data = json.loads((root / "annotations.json").read_text())
    for a in data["annotations"]:
        if a["image_id"] in (1, 2):
            del a["segmentation"]
    for im in data["images"]:
        if im["id"] in (1, 2):
            im.update(labelled_category_ids=[], neg_category_ids=[],
                      box_labelled_category_ids=[c["id"] for c in data["categories"]])
    (root / "annotations.json").write_text(json.dumps(data))
    return root, data


def test_mask_weighted_sampling_halves_the_photos_labelled_by_boxes_alone(tmp_path):
    coco = CocoConcepts(_two_box_only_photos(tmp_path)[0])
    full = [coco.sample_weight(i) for i in coco.image_ids]  # categories known at box level / 10 (few here)
    assert full[2:] == [1.0, 1.0] and 0 < min(full[:2])
    half = [coco.sample_weight(i, mask_share=0.5) for i in coco.image_ids]
    assert half == pytest.approx([max(0.1, full[0] / 2), max(0.1, full[1] / 2), 1.0, 1.0])


def test_masked_photos_ablation_leaves_out_the_photos_labelled_by_boxes_alone(tmp_path, capsys):
    """--box-labels masked-photos: box labels kept where a photo has masks; photos with boxes only not trained on
    (and a dataset of nothing else is one clear error)."""
    from .test_train import COMMON, _train

    root, data = _two_box_only_photos(tmp_path)
    coco = CocoConcepts(root)
    assert [coco.has_masks(i) for i in coco.image_ids] == [False, False, True, True]
    args = ["--data", root, "--split", "all", "--steps", "1", *COMMON]
    _train([*args, "--out", tmp_path / "ok", "--box-labels", "masked-photos"])
    assert (tmp_path / "ok" / "final" / "model.safetensors").exists()
    for im in data["images"]:
        if im["id"] in (3, 4):
            im["id"] += 10  # the masked photos now have no annotations at all ...
    for im in data["images"]:
        im.update(labelled_category_ids=[], neg_category_ids=[])  # ... and nothing is labelled at mask level
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="no images to train on"):
        _train([*args, "--out", tmp_path / "none", "--box-labels", "masked-photos"])
