"""The CLIPSeg-style baseline: shapes, loss, checkpoints, predictor."""

import numpy as np
import pytest
import torch

from sam_lite.baseline import BaselinePredictor, ClipSegBaseline, ClipSegBaselineConfig
from sam_lite.registry import checkpoint_family, load_predictor

S = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClipSegBaseline(ClipSegBaselineConfig(image_size=S, d_model=16, max_text_tokens=16))


def pixels(b=2):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, S, S, generator=g) * 2 - 1


def test_forward_shapes(model):
    out = model(pixels(2), ["dog", "red car"])
    assert out["semantic_logits"].shape == (2, S // 4, S // 4)
    assert out["presence_logits"].shape == (2,)
    with pytest.raises(ValueError, match="one prompt per"):
        model(pixels(2), ["dog"])


def test_loss_is_finite_and_backprops(model):
    model.train()
    out = model(pixels(2), ["dog", "cat"])
    m = torch.zeros(2, S // 4, S // 4, dtype=torch.bool)
    m[0, 2:6, 2:6] = m[1, 8:12, 8:14] = True
    targets = [{"masks": m}, {"masks": torch.zeros(0, S // 4, S // 4, dtype=torch.bool)}]  # present, absent
    losses = model.loss(out, targets)
    assert set(losses) == {"loss", "loss_mask_bce", "loss_mask_dice", "loss_presence"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    losses["loss"].backward()
    assert model.mask_out.weight.grad is not None and model.mask_out.weight.grad.abs().sum() > 0
    assert model.film16.proj.weight.grad.abs().sum() > 0  # the text conditioning learns
    assert all(p.grad is None for p in model.backbone.parameters())  # frozen
    assert not model.backbone.training  # BatchNorm stays in eval mode
    with pytest.raises(ValueError, match="output resolution"):
        model.loss(out, [{"masks": torch.zeros(1, 8, 8, dtype=torch.bool)}] * 2)
    model.eval()


def test_save_load_round_trip(model, tmp_path):
    model.eval()
    with torch.no_grad():
        for p in model.film8.proj.parameters():  # make the round trip meaningful: non-default weights
            p.normal_(0, 0.01)
    d = model.save_pretrained(tmp_path / "ckpt")
    assert checkpoint_family(d).name == "clipseg_baseline"
    assert isinstance(load_predictor(d), BaselinePredictor)
    from safetensors.torch import load_file

    keys = load_file(str(d / "model.safetensors")).keys()
    assert not any(k.startswith(("backbone.", "text_encoder.bert.")) for k in keys)
    loaded = ClipSegBaseline.from_pretrained(d)
    x = pixels(1)
    with torch.no_grad():
        a, b = model(x, ["a dog"]), loaded(x, ["a dog"])
    assert torch.equal(a["semantic_logits"], b["semantic_logits"])
    assert torch.equal(a["presence_logits"], b["presence_logits"])
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        ClipSegBaseline.from_pretrained(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        ClipSegBaseline.from_pretrained(d)
    (d / "config.json").write_text('{"model_type": "sam_lite"}')
    with pytest.raises(ValueError, match="model_type 'sam_lite', expected 'clipseg_baseline'"):
        ClipSegBaseline.from_pretrained(d)


def test_predictor_masks_at_original_size(model):
    pred = BaselinePredictor(model)
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    pred.set_image(image)
    res = pred.predict(["dog", "cat"], score_threshold=0.0)
    assert len(res) == 2
    for r in res:
        assert r.masks.dtype == torch.bool and r.masks.shape[1:] == (50, 70)
        assert r.scores.shape == (r.masks.shape[0],) and r.boxes.shape == (r.masks.shape[0], 4)
        assert 0.0 <= r.presence <= 1.0
    single = pred.predict("dog")
    assert single.masks.shape[1:] == (50, 70)


def test_predictor_connected_components(model, monkeypatch):
    """Two blobs become two instances scored presence x mean prob; a blob under 0.1% of the image is dropped."""
    pred = BaselinePredictor(model)
    pred.set_image((np.zeros((128, 128, 3)) + 100).astype(np.uint8))
    logits = torch.full((1, S // 4, S // 4), -10.0)
    logits[0, 1:5, 1:5] = 4.0  # big blob
    logits[0, 9:14, 9:14] = 1.0  # a second, less confident blob
    presence = torch.tensor([3.0])
    monkeypatch.setattr(model, "decode", lambda *a, **k: {"semantic_logits": logits, "presence_logits": presence})
    r = pred.predict("dog", score_threshold=0.0)
    assert r.masks.shape == (2, 128, 128)
    assert r.scores[0] > r.scores[1] and r.scores[0] <= torch.sigmoid(presence)[0] + 1e-6
    assert r.masks[0, 20, 20] and r.masks[1, 92, 92] and not r.masks[0, 92, 92] and not r.masks[:, 60, 60].any()
    assert len(pred.predict("dog", score_threshold=float(r.scores[0]) - 1e-4)) == 1  # score filter
    logits[0, 9:14, 9:14] = -10.0
    logits[0, 10:12, 10:12] = 4.0  # a small blob (~1% of the image): kept at the default 0.1%
    small = pred.predict("dog", score_threshold=0.0)
    big_frac, small_frac = small.masks.flatten(1).float().mean(1).tolist()
    assert len(small) == 2 and 0.001 < small_frac < 0.02 < big_frac
    assert len(pred.predict("dog", score_threshold=0.0, min_area_fraction=0.02)) == 1  # now too small


def test_evaluate_cli_on_tiny_coco(model, tmp_path, capsys):
    """scripts/evaluate.py end to end: a 3-image COCO dataset, the baseline checkpoint, JSON out."""
    pytest.importorskip("sam_lite.data")
    import json

    from PIL import Image
    from pycocotools import mask as mask_utils

    from sam_lite.evaluation.evaluate import main

    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, 4):
        Image.fromarray(np.full((40, 56, 3), 60 * i, dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 40, "width": 56})
        m = np.zeros((40, 56), dtype=np.uint8, order="F")
        m[5:25, 10:40] = 1
        rle = mask_utils.encode(m)
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % 2, "iscrowd": 0, "area": float(m.sum()),
                     "bbox": [10, 5, 30, 20], "segmentation": {"size": [40, 56], "counts": rle["counts"].decode()}})
    cats = [{"id": 1, "name": "dog", "isthing": 1}, {"id": 2, "name": "person", "isthing": 1}]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "res.json"
    rc = main(["--data", str(root), "--checkpoint", str(ckpt), "--split", "all", "--calibrate", "--out", str(out),
               "--quiet", "--max-images", "3"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["model_type"] == "clipseg_baseline" and res["n_images"] == 3
    assert res["metrics"]["all"]["n"] == res["n_samples"] > 0
    assert "best_gIoU" in res["calibration"] and res["latency_ms"]["predict_per_prompt"]["mean"] > 0
    assert "gIoU" in capsys.readouterr().out


def test_evaluate_reads_the_model_type_from_the_checkpoint(model, tmp_path, tiny_checkpoint):
    """One evaluation command for every family: the checkpoint's model_type picks the predictor (registry)."""
    import json

    from sam_lite.evaluation.evaluate import main

    from .fixtures import write_tiny_coco

    root = write_tiny_coco(tmp_path / "coco", n_images=2)
    out = tmp_path / "res.json"
    for ckpt, kind in ((tiny_checkpoint, "sam_lite"), (model.save_pretrained(tmp_path / "baseline"), "clipseg_baseline")):
        rc = main(["--data", str(root), "--checkpoint", str(ckpt), "--split", "all", "--out", str(out), "--quiet",
                   "--no-ap"])
        assert rc == 0 and json.loads(out.read_text())["model_type"] == kind