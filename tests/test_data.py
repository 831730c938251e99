"""Data: masks align with images, prompts and negatives follow the rules, the colour rule, bad data is skipped."""

import json

import numpy as np
import pytest
import torch

from sam_lite.data import CocoConcepts, ConceptSegmentationDataset, collate, concept_name
from sam_lite.data.colors import COLOURS, hsv_image, instance_colours

from .fixtures import COLOURS as DRAWN, write_tiny_coco


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    return CocoConcepts(write_tiny_coco(tmp_path_factory.mktemp("coco")))


def test_concept_names():
    assert concept_name("sky-other-merged") == "sky"
    assert concept_name("tree-merged") == "tree"
    assert concept_name("wall-brick") == "wall brick"
    assert concept_name("dining table") == "dining table"


@pytest.mark.parametrize("name", ["red", "blue", "green", "yellow"])
def test_colour_rule_on_synthetic_patches(name):
    patch = np.zeros((20, 20, 3), np.uint8)
    patch[:] = DRAWN[name]
    assert instance_colours(hsv_image(patch), torch.ones(1, 20, 20, dtype=torch.bool)) == [name]


def test_colour_rule_greys_and_mixtures():
    def colour(rgb):
        p = np.zeros((20, 20, 3), np.uint8)
        p[:] = rgb
        return instance_colours(hsv_image(p), torch.ones(1, 20, 20, dtype=torch.bool))[0]

    assert colour((250, 250, 250)) == "white"
    assert colour((10, 10, 10)) == "black"
    assert colour((128, 128, 128)) == "gray"
    assert colour((120, 70, 30)) == "brown"
    half = np.zeros((20, 20, 3), np.uint8)
    half[:, :7] = (220, 30, 30)
    half[:, 7:14] = (30, 60, 210)
    half[:, 14:] = (40, 170, 50)
    assert instance_colours(hsv_image(half), torch.ones(1, 20, 20, dtype=torch.bool)) == [None]  # no majority
    tiny = torch.zeros(1, 20, 20, dtype=torch.bool)
    tiny[0, :3, :3] = True
    assert instance_colours(hsv_image(half), tiny) == [None]  # too few pixels to judge
    assert set(COLOURS) >= {"red", "blue", "white", "black"}


def test_masks_align_with_images(tiny_coco):
    for iid in tiny_coco.image_ids:
        rgb = tiny_coco.load_rgb(iid)
        for ann in tiny_coco.image_annotations(iid):
            m = tiny_coco.ann_mask(ann)
            assert m.shape == rgb.shape[:2]
            pixels = rgb[m]
            assert (pixels == pixels[0]).all(), "a mask covers pixels of more than one drawn object"
            assert not (pixels[0] == 128).all(), "a mask covers the gray background"


def test_split_is_deterministic_and_disjoint(tiny_coco):
    train, val = tiny_coco.split("train"), tiny_coco.split("val")
    assert sorted(train + val) == tiny_coco.image_ids
    assert not set(train) & set(val)
    assert tiny_coco.split("val") == val


def test_eval_samples_rules(tiny_coco):
    samples = tiny_coco.eval_samples(tiny_coco.image_ids)
    kinds = {s.prompt_type for s in samples}
    assert {"category", "colour", "negative", "stuff"} <= kinds
    for s in samples:
        present, _ = tiny_coco.concepts_in_image(s.image_id)
        if s.prompt_type == "negative":
            assert s.ann_ids == []
            assert s.prompt not in present
            if s.prompt == "sky":
                assert tiny_coco.stuff_labelled[s.image_id], "stuff used as a negative on an unlabelled image"
        else:
            assert s.ann_ids
        if s.prompt_type == "colour":
            colour, name = s.prompt.split(" ", 1)
            masks = tiny_coco.instance_masks(s)
            rgb = tiny_coco.load_rgb(s.image_id)
            for m in masks:
                assert tuple(rgb[m.numpy()][0]) == DRAWN[colour]
            assert len(s.ann_ids) == sum(1 for a in present[name]
                                         if tuple(rgb[tiny_coco.ann_mask(tiny_coco.coco.anns[a])][0]) == DRAWN[colour])


def test_training_items_and_collate(tiny_coco):
    ds = ConceptSegmentationDataset(tiny_coco, tiny_coco.image_ids, image_size=64, prompts_per_image=6,
                                    copy_paste_prob=1.0)
    items = [ds[i] for i in range(len(ds))]
    n_neg = 0
    for it in items:
        assert it["image"].shape == (3, 64, 64) and it["image"].dtype == torch.uint8
        assert len(it["prompts"]) == len(it["targets"]) == 6
        for p, t, kind in zip(it["prompts"], it["targets"], it["prompt_types"]):
            assert t["masks"].shape[1:] == (64, 64) and t["masks"].dtype == torch.bool
            assert t["boxes"].shape == (t["masks"].shape[0], 4)
            assert ((t["boxes"] >= 0) & (t["boxes"] <= 1)).all()
            n_neg += kind == "negative"
            assert (t["masks"].shape[0] == 0) == (kind == "negative")
            if p == "sky" and kind == "negative":
                assert tiny_coco.stuff_labelled[it["image_id"]]
    assert n_neg > 0
    # the same (seed, epoch, index) gives the same sample; another epoch gives another augmentation
    assert torch.equal(ds[(0, 0)]["image"], ds[(0, 0)]["image"])
    assert not torch.equal(ds[(0, 0)]["image"], ds[(0, 1)]["image"])
    batch = collate(items[:2])
    assert batch["images"].shape == (2, 3, 64, 64)
    assert batch["image_index"].tolist() == [0] * 6 + [1] * 6


def test_colour_prompts_are_exact_after_augmentation(tiny_coco):
    ds = ConceptSegmentationDataset(tiny_coco, tiny_coco.image_ids, image_size=96, prompts_per_image=8,
                                    colour_fraction=0.7, negative_fraction=0.1, copy_paste_prob=1.0)
    checked = 0
    for i in range(len(ds)):
        for epoch in range(3):
            it = ds[(i, epoch)]
            hsv = hsv_image(it["image"])
            for p, t, kind in zip(it["prompts"], it["targets"], it["prompt_types"]):
                if kind == "colour":
                    colour = p.split(" ", 1)[0]
                    assert instance_colours(hsv, t["masks"]) == [colour] * t["masks"].shape[0]
                    checked += 1
    assert checked > 0


def test_bad_annotations_skipped_with_a_count(tmp_path):
    root = write_tiny_coco(tmp_path, n_images=3)
    data = json.loads((root / "annotations.json").read_text())
    data["images"].append({"id": 99, "file_name": "missing.png", "height": 10, "width": 10})
    data["annotations"].append({"id": 1000, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 2, 3]],
                                "area": 1, "bbox": [0, 0, 1, 1]})
    data["annotations"].append({"id": 1001, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [],
                                "area": 0, "bbox": [0, 0, 0, 0]})
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"skipped 1 x missing image file, 2 x invalid annotation"):
        coco = CocoConcepts(root)
    assert 99 not in coco.image_ids
    ds = ConceptSegmentationDataset(coco, coco.image_ids, image_size=64)
    assert all(len(ds[i]["prompts"]) == 4 for i in range(len(ds)))


def test_empty_annotations_and_bad_files(tmp_path):
    root = write_tiny_coco(tmp_path, n_images=2)
    data = json.loads((root / "annotations.json").read_text())
    data["annotations"] = []
    (root / "annotations.json").write_text(json.dumps(data))
    coco = CocoConcepts(root)
    ds = ConceptSegmentationDataset(coco, coco.image_ids, image_size=64)
    it = ds[0]
    assert all(k == "negative" for k in it["prompt_types"])
    (root / "annotations.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoConcepts(root)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        CocoConcepts(tmp_path / "nowhere")
