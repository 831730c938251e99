"""The concept map and partial (LVIS-style) labels: the dense loss, which categories count on which photo, the dense
targets of the dataset, the model's concept outputs and the Lite2 backbone (weighted epoch sampling: test_sampling)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from sam_lite import SamLiteConfig, SamLiteModel
from sam_lite.config import COCO_PANOPTIC_CONCEPTS
from sam_lite.data import CocoConcepts, ConceptSegmentationDataset, collate
from sam_lite.modeling.concept_map import ConceptMap, concept_loss
from sam_lite.modeling.image_encoder import EfficientNetLite
from sam_lite.training.criterion import SetCriterion

from .fixtures import write_tiny_coco

CAR, BALL, SKY = 1, 2, 3
CATS = [{"id": CAR, "name": "car", "isthing": 1}, {"id": BALL, "name": "sports ball", "isthing": 1},
        {"id": SKY, "name": "sky-other-merged", "isthing": 0}]
VOCAB = ["car", "sports ball", "sky"]


# --- helpers ----------------------------------------------------------------------------------------------------------
def _edit(root: Path, fn) -> Path:
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return root


def _drop_anns(data: dict, image_id: int, category_id: int) -> None:
    data["annotations"] = [a for a in data["annotations"]
                           if not (a["image_id"] == image_id and a["category_id"] == category_id)]


def _image(data: dict, image_id: int) -> dict:
    return next(im for im in data["images"] if im["id"] == image_id)


def _write_rect_coco(root: Path, images: list[dict], size=(48, 64)) -> Path:
    """Photos of axis-aligned rectangles on gray, exact masks. images: dict(id, rects=[(cid, y0, y1, x0, x1, rgb)],
    plus any image fields (LVIS fields, stuff_labelled))."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    h, w = size
    out_images, anns = [], []
    for spec in images:
        img = np.full((h, w, 3), 128, np.uint8)
        for cid, y0, y1, x0, x1, rgb in spec["rects"]:
            m = np.zeros((h, w), bool)
            m[y0:y1, x0:x1] = True
            img[m] = rgb
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": spec["id"], "category_id": cid, "iscrowd": 0,
                         "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                         "area": int(m.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
        name = f"{spec['id']:06d}.png"
        Image.fromarray(img).save(root / "images" / name)
        out_images.append({"id": spec["id"], "file_name": name, "height": h, "width": w,
                           **{k: v for k, v in spec.items() if k not in ("id", "rects")}})
    (root / "annotations.json").write_text(json.dumps({"images": out_images, "annotations": anns,
                                                        "categories": CATS}))
    return root


# --- 1. the dense loss ------------------------------------------------------------------------------------------------
def test_concept_loss_matches_a_hand_computation():
    # 3 concepts + background (index 3); pixels: annotated as c1, unannotated (allowed c2 or bg), ignored
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0],           # softmax 1/4 each: CE for c1 = ln 4
                           [math.log(3), 0.0, 0.0, 0.0],   # softmax 3/6, 1/6, 1/6, 1/6: -log(1/6 + 1/6) = ln 3
                           [100.0, -100.0, 5.0, 3.0]]      # ignored, whatever it says
                          ).T.reshape(1, 4, 1, 3).requires_grad_(True)
    labels = torch.tensor([[[1, -1, -2]]])
    allowed = torch.tensor([[False, False, True, True]])
    loss = concept_loss(logits, labels, allowed)
    torch.testing.assert_close(loss, torch.tensor((math.log(4) + math.log(3)) / 2))
    loss.backward()
    g = logits.grad[0, :, 0]  # [4, 3]: d loss / d logit per pixel (mean over the 2 counted pixels)
    torch.testing.assert_close(g[:, 0], torch.tensor([0.25, -0.75, 0.25, 0.25]) / 2)
    torch.testing.assert_close(g[:, 1], torch.tensor([0.5, 1 / 6, 1 / 6 - 0.5, 1 / 6 - 0.5]) / 2)
    torch.testing.assert_close(g[:, 2], torch.zeros(4))  # the ignored pixel gets no gradient


def test_concept_loss_unannotated_with_everything_allowed_is_zero():
    logits = torch.randn(2, 5, 3, 4)
    labels = torch.full((2, 3, 4), -1)
    loss = concept_loss(logits, labels, torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(loss, torch.tensor(0.0), atol=1e-6, rtol=0)


def test_concept_loss_all_ignored_is_zero_without_nan():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    labels = torch.full((2, 3, 3), -2)
    allowed = torch.tensor([[False, False, False, True], [True, False, True, True]])
    loss = concept_loss(logits, labels, allowed)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_concept_loss_batch_mean_over_counted_pixels_and_gradient_flows():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 3], [-1, -2]], [[-2, -2], [2, -1]]])
    allowed = torch.tensor([[False, True, False, True], [True, True, False, True]])
    loss = concept_loss(logits, labels, allowed)
    lp = logits.detach().log_softmax(1)
    terms = [-lp[0, 0, 0, 0], -lp[0, 3, 0, 1], -lp[0, [1, 3], 1, 0].logsumexp(0),
             -lp[1, 2, 1, 0], -lp[1, [0, 1, 3], 1, 1].logsumexp(0)]
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[0, :, 1, 1] == 0).all() and (logits.grad[1, :, 0] == 0).all()  # ignored pixels
    assert logits.grad[0, :, 0, 0].abs().sum() > 0 and logits.grad[1, :, 1, 1].abs().sum() > 0


# --- 2. which categories count on which photo -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lvis_root(tmp_path_factory) -> Path:
    """write_tiny_coco (every image: 1-2 cars and a ball; sky + stuff_labelled on even ids) with LVIS fields:
    1: only car labelled (its ball is unlabelled); 2: all labelled, ball absent and verified (neg [2]);
    3: car+ball (+sky, but stuff is not labelled there) labelled, ball absent but not verified, neg [3] (stuff);
    4: all labelled, car not exhaustive; 5: no fields, its ball is a crowd region; 6: no fields."""
    root = write_tiny_coco(tmp_path_factory.mktemp("lvis"))

    def edit(data):
        _drop_anns(data, 2, BALL)
        _drop_anns(data, 3, BALL)
        _image(data, 1).update(labelled_category_ids=[CAR], neg_category_ids=[], not_exhaustive_category_ids=[])
        _image(data, 2).update(labelled_category_ids=[CAR, BALL, SKY], neg_category_ids=[BALL],
                               not_exhaustive_category_ids=[])
        _image(data, 3).update(labelled_category_ids=[CAR, BALL, SKY], neg_category_ids=[SKY],
                               not_exhaustive_category_ids=[])
        _image(data, 4).update(labelled_category_ids=[CAR, BALL, SKY], neg_category_ids=[],
                               not_exhaustive_category_ids=[CAR])
        for a in data["annotations"]:
            if a["image_id"] == 5 and a["category_id"] == BALL:
                a["iscrowd"] = 1

    return _edit(root, edit)


@pytest.fixture(scope="module")
def lvis(lvis_root) -> CocoConcepts:
    return CocoConcepts(lvis_root)


def test_vocabulary_and_labelled_sets(lvis):
    assert lvis.vocabulary == VOCAB
    assert lvis.labelled_concepts(1) == {"car"}
    assert lvis.labelled_concepts(2) == {"car", "sports ball", "sky"}
    assert lvis.labelled_concepts(3) == {"car", "sports ball"}  # sky listed, but stuff is not labelled on image 3
    assert lvis.labelled_concepts(5) == {"car", "sports ball"}  # no fields, odd image: things only
    assert lvis.labelled_concepts(6) == {"car", "sports ball", "sky"}
    assert not lvis.is_fully_labelled(1)
    assert all(lvis.is_fully_labelled(i) for i in (2, 3, 4, 5, 6))


def test_unlabelled_category_is_neither_positive_nor_negative_nor_dense(lvis):
    present, ambiguous = lvis.concepts_in_image(1)
    n_car = sum(a["category_id"] == CAR for a in lvis.image_annotations(1))
    assert any(a["category_id"] == BALL for a in lvis.image_annotations(1))  # the ball is there, just unlabelled
    assert set(present) == {"car"} and len(present["car"]) == n_car
    assert ambiguous == set()
    assert lvis.negative_pool(1, set()) == []
    dense = lvis.dense_annotations(1)
    assert [n for n, _ in dense] == ["car"] * n_car
    assert all(a["category_id"] == CAR for _, a in dense)


def test_negatives_only_from_neg_category_ids(lvis):
    assert lvis.negative_pool(2, set()) == ["sports ball"]
    assert lvis.negative_pool(2, {"sports ball"}) == []
    # image 3: the ball is labelled and has no annotation, but it is not in neg_category_ids: not a negative;
    # sky is in neg_category_ids, but stuff is never a negative where stuff is not labelled
    assert lvis.negative_pool(3, set()) == []
    present, ambiguous = lvis.concepts_in_image(3)
    assert set(present) == {"car"} and ambiguous == set()


def test_not_exhaustive_concept_is_ambiguous_but_dense(lvis):
    present, ambiguous = lvis.concepts_in_image(4)
    assert set(present) == {"sports ball", "sky"}
    assert ambiguous == {"car"}
    assert "car" not in lvis.negative_pool(4, set())
    assert lvis.negative_pool(4, set()) == []
    assert {n for n, _ in lvis.dense_annotations(4)} == {"car", "sports ball", "sky"}


def test_crowd_only_concept_is_ambiguous(lvis):
    present, ambiguous = lvis.concepts_in_image(5)
    assert set(present) == {"car"} and ambiguous == {"sports ball"}
    assert lvis.negative_pool(5, set(present) | ambiguous) == []
    # the crowd region still counts for the dense target
    assert sorted(n for n, a in lvis.dense_annotations(5) if a.get("iscrowd")) == ["sports ball"]


def test_partial_labels_off_restores_exhaustive_labels(lvis_root):
    coco = CocoConcepts(lvis_root, partial_labels=False)
    present, ambiguous = coco.concepts_in_image(1)
    assert set(present) == {"car", "sports ball"} and ambiguous == set()
    assert coco.labelled_concepts(1) == {"car", "sports ball"}
    assert coco.negative_pool(3, set()) == ["sports ball"]  # labelled minus annotated
    present, ambiguous = coco.concepts_in_image(4)
    assert set(present) == {"car", "sports ball", "sky"} and ambiguous == set()
    assert {n for n, _ in coco.dense_annotations(1)} == {"car", "sports ball"}
    assert all(coco.is_fully_labelled(i) for i in coco.image_ids)


def test_dataset_without_fields_follows_the_coco_rule(tmp_path):
    root = write_tiny_coco(tmp_path)

    def edit(data):
        _drop_anns(data, 1, BALL)  # odd: no stuff labelled
        _drop_anns(data, 2, BALL)  # even: stuff labelled, sky present
        _drop_anns(data, 4, SKY)  # even: sky painted but not annotated -> a negative by the exhaustive rule

    coco = CocoConcepts(_edit(root, edit))
    pools = {i: coco.negative_pool(i, set()) for i in coco.image_ids}
    assert pools == {1: ["sports ball"], 2: ["sports ball"], 3: [], 4: ["sky"], 5: [], 6: []}
    assert all(coco.is_fully_labelled(i) for i in coco.image_ids)
    assert coco.labelled_concepts(3) == {"car", "sports ball"}  # no sky on odd images, never a negative there


def test_sample_weight_of_partially_labelled_photo(lvis):
    assert lvis.sample_weight(1) == pytest.approx(0.1)  # one labelled category


def test_sample_weight_formula_with_a_larger_vocabulary(tmp_path):
    root = write_tiny_coco(tmp_path, n_images=2)

    def edit(data):
        data["categories"] += [{"id": 10 + k, "name": f"thing{k}", "isthing": 1} for k in range(9)]
        _image(data, 1).update(labelled_category_ids=[CAR, BALL, 10, 11])

    coco = CocoConcepts(_edit(root, edit))
    assert coco.sample_weight(1) == pytest.approx(0.4)
    assert coco.sample_weight(2) == pytest.approx(1.0)  # 11 things + sky labelled


def test_sample_weight_of_fully_labelled_photo_is_one(lvis):
    # every category of the dataset is labelled on image 6 (and every thing on image 5): a fully labelled photo
    for iid in (5, 6):
        assert lvis.is_fully_labelled(iid)
        assert lvis.sample_weight(iid) == pytest.approx(1.0), (
            f"LIBRARY BUG (sam_lite/data/coco.py CocoConcepts.sample_weight): image {iid} labels every category of "
            f"this 3-category dataset but gets weight {lvis.sample_weight(iid)} (= {len(lvis.labelled[iid])}/10): "
            "the weight is an absolute count / 10, so on any dataset with < 10 categories (or plain COCO data "
            "without LVIS fields) fully labelled photos are down-weighted and train.py's epoch shrinks")


def test_eval_samples_never_use_an_unlabelled_category_as_a_negative(lvis):
    samples = lvis.eval_samples(lvis.image_ids, negatives_per_image=5)
    negatives = [s for s in samples if s.prompt_type == "negative" and s.prompt in VOCAB]
    assert {(s.image_id, s.prompt) for s in negatives} == {(2, "sports ball")}
    for s in samples:
        if s.image_id == 1 and s.prompt_type != "negative":
            assert s.prompt.endswith("car") or s.prompt == "automobile", s.prompt
        if s.image_id == 4:
            assert not (s.prompt_type != "negative" and s.prompt.endswith("car")), "not-exhaustive car as target"


# --- 3. dense targets of the dataset ----------------------------------------------------------------------------------
RED, YELLOW, BLUE = (220, 30, 30), (240, 220, 40), (30, 60, 210)


@pytest.fixture(scope="module")
def rect_coco(tmp_path_factory) -> CocoConcepts:
    """48x64 photos (no resize at 64 px: 8 px padding top and bottom after the centre crop).
    1: car rows 12-32 cols 0-28, an unlabelled sports ball rows 0-20 cols 44-64; only car labelled.
    2: a large sports ball rows 8-40 cols 16-56, fully labelled."""
    root = _write_rect_coco(tmp_path_factory.mktemp("rects"), [
        {"id": 1, "rects": [(CAR, 12, 32, 0, 28, RED), (BALL, 0, 20, 44, 64, YELLOW)], "stuff_labelled": False,
         "labelled_category_ids": [CAR], "neg_category_ids": [], "not_exhaustive_category_ids": []},
        {"id": 2, "rects": [(BALL, 8, 40, 16, 56, BLUE)], "stuff_labelled": False,
         "labelled_category_ids": [CAR, BALL], "neg_category_ids": [CAR], "not_exhaustive_category_ids": []},
    ])
    return CocoConcepts(root)


def test_dense_targets_without_augmentation(rect_coco):
    ds = ConceptSegmentationDataset(rect_coco, [1, 2], image_size=64, augment=False)
    it = ds[0]
    assert it["image_id"] == 1
    labels, allowed = it["dense_labels"], it["dense_allowed"]
    assert labels.shape == (16, 16) and labels.dtype == torch.long
    assert allowed.shape == (4,) and allowed.dtype == torch.bool
    car = rect_coco.vocabulary.index("car")
    # model rows = photo rows + 8 (centre-crop padding), cols unchanged; dense cell = 4x4 model px
    assert (labels[5:10, 0:7] == car).all()  # the car: model rows 20-40, cols 0-28
    assert (labels[2:14, 7:11] == -1).all()  # gray, nothing annotated
    assert (labels[2:7, 11:16] == -1).all()  # the unlabelled ball: no dense label either
    assert (labels[:2] == -2).all() and (labels[14:] == -2).all()  # padding
    assert (labels >= -2).all() and set(labels.unique().tolist()) == {-2, -1, car}
    assert allowed.tolist() == [False, True, True, True]  # car labelled here; ball, sky, background may be
    # the image is the photo, centre padded with zeros
    assert (it["image"][:, :8] == 0).all() and (it["image"][:, 56:] == 0).all()
    assert it["image"][:, 8 + 20, 10].tolist() == list(RED)
    # image 2: everything labelled
    it2 = ds[1]
    ball = rect_coco.vocabulary.index("sports ball")
    assert (it2["dense_labels"][4:12, 4:14] == ball).all()  # model rows 16-48, cols 16-56
    assert it2["dense_allowed"].tolist() == [False, False, True, True]  # sky (not labelled) and background
    batch = collate([it, it2])
    assert batch["dense_labels"].shape == (2, 16, 16) and batch["dense_allowed"].shape == (2, 4)


def test_dense_target_marks_mixed_boundary_cells_ignored(rect_coco):
    ds = ConceptSegmentationDataset(rect_coco, [1], image_size=8, augment=False)
    vocab = rect_coco.vocabulary
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)  # 2x2 cells of 4x4 px
    masks[0, :, 0] = True  # cell column 0: car 1/4 ...
    masks[1, :, 1] = True  # ... ball 1/4: half annotated, no concept in the majority -> ignored
    masks[0, :4, 4:6] = True  # cell (0, 1): car 1/2 -> car
    masks[1, 4:, 4:5] = True  # cell (1, 1): ball 1/4 -> unannotated
    valid = torch.ones(8, 8, dtype=torch.bool)
    labels, allowed = ds.dense_target(2, masks, ["car", "sports ball"], valid, set())
    assert labels.tolist() == [[-2, vocab.index("car")], [-2, -1]]
    assert allowed.tolist() == [False, False, True, True]  # image 2 labels car and ball
    valid[:, 4:7] = False  # cell column 1 is padding
    labels, _ = ds.dense_target(2, masks, ["car", "sports ball"], valid, set())
    assert labels.tolist() == [[-2, -2], [-2, -2]]
    # an ambiguous concept stays allowed on unannotated cells
    _, allowed = ds.dense_target(2, masks, ["car", "sports ball"], valid, {"sports ball"})
    assert allowed.tolist() == [False, True, True, True]


def test_copy_paste_never_makes_an_unlabelled_concept_a_target(rect_coco):
    ball = rect_coco.vocabulary.index("sports ball")
    pasted = 0
    for seed in range(6):
        ds = ConceptSegmentationDataset(rect_coco, [1, 2], image_size=64, prompts_per_image=6, copy_paste_prob=1.0,
                                        augment=True, seed=seed)
        for epoch in range(3):
            it = ds[(0, epoch)]
            assert it["image_id"] == 1
            has_ball = bool((it["dense_labels"] == ball).any())  # only a pasted ball can be labelled on image 1
            pasted += has_ball
            assert it["dense_allowed"].tolist() == [False, True, True, True]
            for p, kind in zip(it["prompts"], it["prompt_types"]):
                assert not p.endswith("sports ball"), (seed, epoch, p, kind)
    assert pasted >= 3, "copy-paste never pasted the ball: the test checks nothing"


# --- 5. the model's concept map ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> SamLiteModel:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = SamLiteModel(SamLiteConfig.from_preset("tiny", concept_names=VOCAB))
    return m.train()


def _criterion_inputs(model, b=2):
    s = model.config.image_size
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(b, 3, s, s, generator=g)
    prompts = ["car", "sky", "sports ball"]
    image_index = torch.tensor([0, 1, 1])
    m = torch.zeros(1, s, s, dtype=torch.bool)
    m[0, 8:40, 4:30] = True
    targets = [{"masks": m, "boxes": torch.tensor([[17 / s, 24 / s, 26 / s, 32 / s]])},
               {"masks": torch.zeros(0, s, s, dtype=torch.bool), "boxes": torch.zeros(0, 4)},
               {"masks": m, "boxes": torch.tensor([[17 / s, 24 / s, 26 / s, 32 / s]])}]
    labels = torch.randint(-2, len(VOCAB) + 1, (b, s // 4, s // 4), generator=g)
    allowed = torch.tensor([[False, True, True, True], [True, False, False, True]])
    return pixels, prompts, image_index, targets, labels, allowed


def test_forward_has_concept_outputs(model):
    s = model.config.image_size
    pixels, prompts, image_index, *_ = _criterion_inputs(model)
    with torch.no_grad():
        out = model(pixels, prompts, image_index)
    assert out["concept_logits"].shape == (2, len(VOCAB) + 1, s // 8, s // 8)
    assert torch.isfinite(out["concept_logits"]).all()
    pm = out["concept_prompt_map"]
    assert pm.shape == (3, s // 8, s // 8)
    assert (pm >= 0).all() and (pm <= 1).all()
    assert model.image_encoder.concept_map.names == VOCAB
    # the concept logits are scale * cosine to the vocabulary, background last
    cm = model.image_encoder.concept_map
    with torch.no_grad():
        emb = model.encode_image(pixels).concept_embedding
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(2, s // 8, s // 8))
        scale = cm.logit_scale.exp()
        torch.testing.assert_close(out["concept_logits"][:, -1],
                                   scale * torch.einsum("bchw,c->bhw", emb, torch.nn.functional.normalize(
                                       cm.background, dim=0)))


def test_concept_prompt_weights_pick_the_named_concept(model):
    from sam_lite import ImageEmbedding, Prompt, TextEmbedding

    cm, prior = model.image_encoder.concept_map, model.priors["concept_map"]
    w, best = prior.prompt_weights(cm.concept_embeddings.clone())
    assert w.shape == (3, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(3))
    assert w.argmax(-1).tolist() == [0, 1, 2]
    torch.testing.assert_close(best, torch.ones(3))
    # P(prompt | x) = sum_c w_c(prompt) * softmax over the vocabulary (background included) of concept c
    emb = torch.nn.functional.normalize(torch.randn(3, 384, 2, 2), dim=1)
    with torch.no_grad():
        probs = cm.logits(emb).softmax(1)[:, :-1]  # P(concept | x), as the image encoder keeps it
    image = ImageEmbedding(tokens=torch.zeros(3, 4, 8), pos=torch.zeros(4, 8), grid=(2, 2),
                           pixel_features=torch.zeros(3, 8, 2, 2), concept_embedding=emb, concept_probs=probs)
    text = TextEmbedding(torch.zeros(3, 1, 384), torch.zeros(3, 1, dtype=torch.bool), cm.concept_embeddings.clone())
    maps, stats, p = prior.maps(image, text, Prompt(VOCAB))
    with torch.no_grad():
        by_hand = torch.einsum("pk,pkhw->phw", w, cm.logits(emb).softmax(1)[:, :-1])
    torch.testing.assert_close(p, by_hand)
    assert p.shape == (3, 2, 2) and (p >= 0).all() and (p <= 1).all()
    assert maps.shape == (3, 4, 2, 2) and stats.shape == (3, 5)
    torch.testing.assert_close(stats[:, 0], p.flatten(1).max(1).values)
    with pytest.raises(ValueError, match="vocabulary"):
        ConceptMap([], 32, 40, 112, 1280)


def test_criterion_concept_loss_trains_the_concept_map(model):
    pixels, prompts, image_index, targets, labels, allowed = _criterion_inputs(model)
    model.zero_grad(set_to_none=True)
    out = model(pixels, prompts, image_index)
    crit = SetCriterion()
    losses = crit(out, targets, labels, allowed)
    assert "loss_concept" in losses and torch.isfinite(losses["loss_concept"])
    logits = torch.nn.functional.interpolate(out["concept_logits"].detach(), size=labels.shape[-2:],
                                             mode="bilinear", align_corners=False)
    torch.testing.assert_close(losses["loss_concept"], concept_loss(logits, labels, allowed))
    manual = sum(v * crit.weight_dict[k.rsplit("_", 1)[0] if k[-1].isdigit() else k]
                 for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], manual)
    losses["loss_concept"].backward()
    cm = model.image_encoder.concept_map
    for name in ("out.weight", "lateral8.weight", "lateral16.weight", "tokens16.weight", "background"):
        g = dict(cm.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    # without dense targets there is no concept loss
    assert "loss_concept" not in crit({k: v.detach() if torch.is_tensor(v) else v for k, v in out.items()}, targets)


def test_decoder_reads_the_concept_map_detached(model):
    pixels, prompts, image_index, targets, labels, allowed = _criterion_inputs(model)
    model.zero_grad(set_to_none=True)
    out = model(pixels, prompts, image_index)
    losses = SetCriterion()(out, targets, labels, allowed)
    losses["loss_ce"].backward()
    g = model.priors["concept_map"].token_proj.weight.grad
    assert g is not None and g.abs().sum() > 0  # the decoder's loss does use the concept prior
    cm = model.image_encoder.concept_map
    for name in ("out.weight", "refine.0.0.weight", "lateral8.weight"):
        g = dict(cm.named_parameters())[name].grad
        assert g is None or (g == 0).all(), f"loss_ce reached image_encoder.concept_map.{name}"


def test_decoder_losses_reach_only_the_background_and_temperature_of_the_concept_map(model):
    """The decoder reads the concept embedding detached: its losses may only tune the map's background embedding
    and temperature (shared with the dense softmax), never the layers that paint the embedding."""
    pixels, prompts, image_index, targets, labels, allowed = _criterion_inputs(model)
    model.zero_grad(set_to_none=True)
    out = model(pixels, prompts, image_index)
    losses = SetCriterion()(out, targets, labels, allowed)
    sum(v for k, v in losses.items() if k not in ("loss", "loss_concept")).backward()  # every decoder loss
    cm = model.image_encoder.concept_map
    reached = sorted(n for n, p in cm.named_parameters() if p.grad is not None and (p.grad != 0).any())
    assert set(reached) <= {"background", "logit_scale"}, reached


def test_save_and_load_keep_the_concept_map(model, tmp_path):
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["concept_map"] is True and saved["concept_names"] == VOCAB
    loaded = SamLiteModel.from_pretrained(tmp_path)
    assert loaded.config.concept_names == VOCAB
    assert loaded.image_encoder.concept_map.names == VOCAB
    src = model.image_encoder.concept_map.state_dict()
    dst = loaded.image_encoder.concept_map.state_dict()
    assert set(src) == set(dst)
    for k in src:
        assert torch.equal(src[k], dst[k]), k
    torch.testing.assert_close(loaded.image_encoder.concept_map.concept_embeddings,
                               model.image_encoder.concept_map.concept_embeddings)
    s = model.config.image_size
    x = torch.randn(1, 3, s, s)
    model.eval()
    try:
        with torch.no_grad():
            a, b = model(x, ["car"]), loaded(x, ["car"])
    finally:
        model.train()
    torch.testing.assert_close(a["concept_logits"], b["concept_logits"])
    torch.testing.assert_close(a["concept_prompt_map"], b["concept_prompt_map"])


def test_config_concept_fields():
    cfg = SamLiteConfig(concept_map=True, concept_names=[])
    assert cfg.concept_names == list(COCO_PANOPTIC_CONCEPTS) and len(cfg.concept_names) == 133
    assert cfg.concept_names[0] == "person" and cfg.concept_names[-1] == "rug"
    assert SamLiteConfig.from_preset("tiny").concept_names == list(COCO_PANOPTIC_CONCEPTS)
    assert SamLiteConfig().concept_names == []  # no map, no names
    assert SamLiteConfig(concept_names=("a", "b")).concept_names == ["a", "b"]
    with pytest.raises(ValueError, match="repeat"):
        SamLiteConfig(concept_map=True, concept_names=["car", "sky", "car"])
    with pytest.raises(ValueError, match="non-empty"):
        SamLiteConfig(concept_map=True, concept_names=["car", " "])
    with pytest.raises(ValueError, match="backbone"):
        SamLiteConfig(backbone="lite3")
    with pytest.raises(ValueError, match="concept_hidden"):
        SamLiteConfig(concept_hidden=4)
    d = SamLiteConfig.from_preset("tiny", concept_names=VOCAB, backbone="lite2").to_dict()
    back = SamLiteConfig.from_dict(d)
    assert back.concept_names == VOCAB and back.backbone == "lite2"


# --- 6. the Lite2 backbone --------------------------------------------------------------------------------------------
def test_lite2_loads_its_package_weights_strictly():
    net = EfficientNetLite("lite2")
    sd = net.load_pretrained_state_dict()
    result = net.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert net.channels == {"f4": 24, "f8": 48, "f16": 120, "head": 1280}
    assert torch.equal(net._fc.weight, sd["_fc.weight"])
    assert len(net._blocks) == 1 + 3 + 3 + 4 + 4 + 5 + 1
    net.eval()
    with torch.no_grad():
        f = net.forward_features(torch.zeros(1, 3, 64, 64), with_classifier=True)
    assert f["f4"].shape == (1, 24, 16, 16) and f["f8"].shape == (1, 48, 8, 8) and f["f16"].shape == (1, 120, 4, 4)
    assert f["head"].shape == (1, 1280, 2, 2) and f["class_logits"].shape == (1, 1000, 2, 2)
    with pytest.raises(ValueError, match="unknown backbone"):
        EfficientNetLite("lite3")


def test_tiny_model_with_lite2_backbone_runs():
    torch.manual_seed(0)
    m = SamLiteModel(SamLiteConfig.from_preset("tiny", backbone="lite2", concept_names=VOCAB)).eval()
    sd = EfficientNetLite("lite2").load_pretrained_state_dict()
    assert torch.equal(m.image_encoder.backbone._blocks[5]._project_conv.weight, sd["_blocks.5._project_conv.weight"])
    s = m.config.image_size
    with torch.no_grad():
        out = m(torch.randn(2, 3, s, s), ["car", "sky"])
    assert out["pred_masks"].shape == (2, m.config.num_queries, s // 4, s // 4)
    assert out["concept_logits"].shape == (2, len(VOCAB) + 1, s // 8, s // 8)
    assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["concept_logits"]).all()


# --- 7. evaluation subsets and halves ---------------------------------------------------------------------------------
def test_evaluate_subset_full_leaves_out_partially_labelled_photos_and_halves_alternate(lvis_root, tiny_checkpoint,
                                                                                        tmp_path, capsys):
    """--subset full (the default) drops photo 1 (only car labelled); --half first/second alternate photos in id
    order and together make the whole subset."""
    from sam_lite.evaluation.evaluate import main

    def images(*extra):
        out = tmp_path / "r.json"
        assert main(["--data", str(lvis_root), "--checkpoint", str(tiny_checkpoint), "--split", "all", "--no-ap",
                     "--quiet", "--out", str(out), *extra]) == 0
        d = json.loads(out.read_text())
        return d["n_images"], d["subset"]

    assert images() == (5, "full")  # 6 photos, photo 1 labels only car
    assert images("--subset", "all") == (6, "all")
    assert images("--half", "first") == (3, "full")  # photos 2, 4, 6
    assert images("--half", "second") == (2, "full")  # photos 3, 5

