"""Image-level presence (``image_presence``): the pooled image in the sentence space, its targets (what a photo
labels present or absent, after augmentation), its loss, a fine-tune that adds it answering as before at step 0,
and its ONNX export."""

import json

import pytest
import torch

from sam_lite import SamLiteConfig, SamLiteModel
from sam_lite.data import CocoConcepts, ConceptSegmentationDataset, collate
from sam_lite.modeling.concept_map import image_presence_loss
from sam_lite.training.checkpointing import init_from_checkpoint
from sam_lite.training.criterion import SetCriterion

from .fixtures import write_tiny_coco

NAMES = ["car", "sports ball", "sky"]


def test_targets_are_present_absent_or_unknown(tmp_path):
    root = write_tiny_coco(tmp_path, n_images=3)
    data = json.loads((root / "annotations.json").read_text())
    for im in data["images"]:  # photo 1 labels cars only; sports balls there are unknown
        if im["id"] == 1:
            im.update(labelled_category_ids=[1], neg_category_ids=[1] if not any(
                a["category_id"] == 1 and a["image_id"] == 1 for a in data["annotations"]) else [])
    (root / "annotations.json").write_text(json.dumps(data))
    coco = CocoConcepts(root)
    ds = ConceptSegmentationDataset(coco, coco.image_ids, image_size=64, augment=False, copy_paste_prob=0.0)
    vocab = ds.vocabulary
    for i, iid in enumerate(coco.image_ids):
        item = ds[i]
        labels = item["image_labels"]
        assert labels.shape == (len(vocab),)
        present, ambiguous = coco.concepts_in_image(iid)
        known = (coco.labelled_concepts(iid) | coco.box_labelled_concepts(iid)) - ambiguous
        for c, name in enumerate(vocab):
            want = 1.0 if name in present else (0.0 if name in known else -1.0)
            assert labels[c] == want, (iid, name, labels[c], want)
    assert ds[0]["image_labels"][vocab.index("sports ball")] == -1  # not labelled on photo 1
    assert collate([ds[0], ds[1]])["image_labels"].shape == (2, len(vocab))


def test_loss_reads_only_the_known_labels():
    logits = torch.tensor([[3.0, -3.0, 50.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    loss = image_presence_loss(logits, labels)
    assert torch.isclose(loss, torch.nn.functional.softplus(torch.tensor(-3.0)))
    loss.backward()
    assert logits.grad[0, 2] == 0
    assert image_presence_loss(logits, torch.full((1, 3), -1.0)) == 0


def _model(image_presence: bool) -> SamLiteModel:
    torch.manual_seed(0)
    return SamLiteModel(SamLiteConfig.from_preset("tiny", concept_names=NAMES, image_presence=image_presence))


def test_adding_it_to_a_checkpoint_changes_nothing_at_step_0_then_it_trains(tmp_path):
    old = _model(False).eval()
    old.save_pretrained(tmp_path / "old")
    new = _model(True)
    fresh = init_from_checkpoint(new, tmp_path / "old")
    assert fresh and all(k.startswith("image_encoder.image_presence.") for k in fresh)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    new.eval()
    with torch.no_grad():
        a, b = new(x, ["car", "sky"]), old(x, ["car", "sky"])
    for k in ("presence_logits", "pred_logits", "pred_masks"):
        torch.testing.assert_close(a[k], b[k])
    assert a["image_presence_logits"].shape == (2,) and a["image_concept_logits"].shape == (2, len(NAMES))
    # one optimiser step on the criterion's loss moves the vote, the projection and the image-level logits
    new.train()
    out = new(x, ["car", "sky"])
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]), "masks": torch.zeros(1, 64, 64),
                "labels": torch.zeros(1, dtype=torch.long)},
               {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 64, 64), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = SetCriterion()(out, targets, image_labels=torch.tensor([[1.0, 0.0, -1.0], [0.0, -1.0, 1.0]]))
    assert losses["loss_image_presence"] > 0
    losses["loss"].backward()
    head = new.image_encoder.image_presence
    assert head.vote.grad is not None and head.vote.grad != 0
    assert head.proj.weight.grad.abs().sum() > 0


def test_geometric_rows_without_text_get_no_image_level_vote():
    from sam_lite.structures import Prompt

    torch.manual_seed(0)
    model = SamLiteModel(SamLiteConfig.from_preset("tiny", concept_names=NAMES, image_presence=True,
                                                   geometric_prompts=True)).eval()
    prompt = Prompt.from_rows(["car", ""], [None, {"box": torch.tensor([4.0, 4.0, 40.0, 40.0])}])
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64) * 2 - 1, prompt, torch.zeros(2, dtype=torch.long))
    assert out["image_presence_logits"][1] == 0 and out["image_presence_logits"][0] != 0


def test_config_needs_the_concept_map():
    with pytest.raises(ValueError, match="image_presence needs concept_map"):
        SamLiteConfig.from_preset("tiny", concept_map=False, image_presence=True)
