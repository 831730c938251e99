"""The model and the predictor: shapes, attention, save/load, pretrained weights, text features, inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from sam_lite import Prompt, SamLiteConfig, SamLiteModel, SamLitePredictor
from sam_lite.modeling.image_encoder import EfficientNetLite


@pytest.fixture(scope="module")
def tiny_model() -> SamLiteModel:
    torch.manual_seed(0)
    return SamLiteModel(SamLiteConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def predictor(tiny_model) -> SamLitePredictor:
    return SamLitePredictor(tiny_model)


def test_output_shapes(tiny_model):
    cfg = tiny_model.config
    s, k = cfg.image_size, cfg.num_queries
    with torch.no_grad():
        out = tiny_model(torch.randn(2, 3, s, s), ["red car", "a dog"], aux_outputs=True)
        assert tiny_model(torch.randn(1, 3, s, s), ["dog"])["aux_outputs"] == []  # inference: the last layer only
    assert out["pred_logits"].shape == (2, k)
    assert out["pred_masks"].shape == (2, k, s // 4, s // 4)
    assert out["pred_boxes"].shape == (2, k, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert out["presence_logits"].shape == (2,)
    assert len(out["aux_outputs"]) == cfg.decoder_layers - 1
    assert out["aux_outputs"][0]["pred_masks"].shape == out["pred_masks"].shape


def test_one_image_many_prompts_matches_repeated_image(tiny_model):
    s = tiny_model.config.image_size
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        emb = tiny_model.encode_image(x)
        prompt = Prompt(["cat", "sky"])
        shared = tiny_model.decode(emb, prompt, tiny_model.encode_prompt(prompt))
        repeated = tiny_model(x.expand(2, -1, -1, -1), ["cat", "sky"])
    torch.testing.assert_close(shared["pred_masks"], repeated["pred_masks"], atol=1e-5, rtol=1e-4)


def test_attention_rows_sum_to_one_and_shapes(tiny_model):
    cfg = tiny_model.config
    s = cfg.image_size
    n = (s // 16) ** 2
    prompts = ["red car", "a very small dog"]
    text = tiny_model.encode_prompt(prompts)
    t = text.features.shape[1]
    with torch.no_grad():
        out = tiny_model(torch.randn(2, 3, s, s), prompts, output_attentions=True)
    att = out["attentions"]
    h, q = cfg.num_heads, cfg.num_queries + 1
    assert att.grid == (s // 16, s // 16)
    assert att.encoder[0].self_attn.shape == (2, h, n, n)
    assert att.fusion[0].text_cross_attn.shape == (2, h, n, t)
    assert len(att.decoder) == cfg.decoder_layers
    for layer in att.decoder:
        assert layer.image_cross_attn.shape == (2, h, q, n)
        assert layer.text_cross_attn.shape == (2, h, q, t)
        assert layer.self_attn.shape == (2, h, q, q)
    named = att.named()
    assert len(named) == cfg.encoder_layers + cfg.fusion_layers + 3 * cfg.decoder_layers
    for name, a in named:
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)), msg=name)
    one = att.select(1)
    assert one.decoder[0].image_cross_attn.shape == (h, q, n)
    torch.testing.assert_close(one.decoder[0].image_cross_attn, att.decoder[0].image_cross_attn[1])
    # padding tokens of the shorter prompt get no attention
    pad = text.padding_mask[0]
    assert pad.any()
    assert att.decoder[0].text_cross_attn[0][..., pad].abs().max() == 0


def test_attention_path_equals_fast_path(tiny_model):
    s = tiny_model.config.image_size
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        fast = tiny_model(x, ["person"])
        slow = tiny_model(x, ["person"], output_attentions=True)
    torch.testing.assert_close(fast["pred_masks"], slow["pred_masks"], atol=1e-4, rtol=1e-4)


def test_save_load_identical_outputs(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = SamLiteModel.from_pretrained(tmp_path)
    s = tiny_model.config.image_size
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        a, b = tiny_model(x, ["red car"]), loaded(x, ["red car"])
    for key in ("pred_logits", "pred_masks", "pred_boxes", "presence_logits"):
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_leaves_out_packaged_backbones(tiny_model, tmp_path):
    from safetensors.torch import load_file

    tiny_model.save_pretrained(tmp_path)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert not any(k.startswith("text_encoder.bert.") for k in keys)
    assert not any(k.startswith("image_encoder.backbone._conv_stem") for k in keys)


def test_missing_and_corrupt_checkpoints(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SamLiteModel.from_pretrained(tmp_path / "nowhere")
    tiny_model.save_pretrained(tmp_path)
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors"):
        SamLiteModel.from_pretrained(tmp_path)
    w.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SamLiteModel.from_pretrained(tmp_path)


def test_mismatched_config_is_named(tiny_model, tmp_path):
    import json

    tiny_model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["decoder_layers"] += 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        SamLiteModel.from_pretrained(tmp_path)
    cfg["decoder_layers"] -= 1
    cfg["d_model"] = 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        SamLiteModel.from_pretrained(tmp_path)


def test_config_validation():
    with pytest.raises(ValueError, match="image_size"):
        SamLiteConfig(image_size=100)
    with pytest.raises(ValueError, match="num_heads"):
        SamLiteConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown config field"):
        SamLiteConfig.from_dict({"d_model": 64, "colour": "red"})
    with pytest.raises(ValueError, match="preset"):
        SamLiteConfig.from_preset("huge")
    with pytest.raises(ValueError, match="backbone_trainable_to"):
        SamLiteConfig(backbone_trainable_from=4, backbone_trainable_to=3)


def test_partial_backbone_fine_tuning_trains_and_saves_only_those_stages(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = SamLiteModel(SamLiteConfig.from_preset("tiny", backbone_trainable_from=3, backbone_trainable_to=5))
    stages = model.image_encoder.backbone.stage_of_block
    trained = {int(n.split(".")[3]) for n, p in model.named_parameters()
               if n.startswith("image_encoder.backbone._blocks.") and p.requires_grad}
    assert {stages[i] for i in trained} == {3, 4}
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith("image_encoder.backbone.") and not n.startswith("image_encoder.backbone._blocks."))
    s = model.config.image_size
    model.train()
    out = model(torch.randn(2, 3, s, s), ["red car", "dog"])
    out["pred_masks"].sum().backward()
    grads = {stages[int(n.split(".")[3])] for n, p in model.named_parameters()
             if n.startswith("image_encoder.backbone._blocks.") and p.grad is not None and p.grad.abs().sum() > 0}
    assert grads == {3, 4}
    with torch.no_grad():  # a fine-tuned stage differs from the package: it must travel in the checkpoint
        for p in model.image_encoder.backbone._blocks[min(trained)].parameters():
            p.add_(0.01)
    model.eval().save_pretrained(tmp_path)
    saved = {k for k in load_file(str(tmp_path / "model.safetensors")) if k.startswith("image_encoder.backbone.")}
    assert {stages[int(k.split(".")[3])] for k in saved} == {3, 4}
    loaded = SamLiteModel.from_pretrained(tmp_path)
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        torch.testing.assert_close(model(x, ["dog"])["pred_masks"], loaded(x, ["dog"])["pred_masks"])


def test_backbone_equals_package_weights(tiny_model):
    packaged = EfficientNetLite("lite0").load_pretrained_state_dict()
    ours = tiny_model.image_encoder.backbone.state_dict()
    assert set(ours) == set(packaged)
    for k, v in packaged.items():
        assert torch.equal(ours[k], v), k


def test_text_encoder_matches_package_and_separates_colours(tiny_model):
    from transformers import AutoModel

    from sam_lite.modeling.text_encoder import minilm_path

    reference = AutoModel.from_pretrained(minilm_path(), local_files_only=True)
    for k, v in reference.state_dict().items():
        assert torch.equal(tiny_model.text_encoder.bert.state_dict()[k], v), k
    feats = tiny_model.encode_prompt(["red car", "blue car"])
    red, blue = feats.features[0], feats.features[1]
    assert red.shape == blue.shape  # [CLS] red car [SEP]
    assert not torch.allclose(red[1], blue[1], atol=1e-2)  # the colour word itself
    assert (red - blue).abs().max() > 0.1


def test_shipped_class_embeddings_match_recomputation():
    from sam_lite.modeling.text_encoder import compute_imagenet_class_embeddings, imagenet_class_embeddings

    torch.testing.assert_close(imagenet_class_embeddings(), compute_imagenet_class_embeddings(), atol=2e-3, rtol=0)


@pytest.mark.parametrize("size,mode", [((37, 91), "RGB"), ((120, 53), "L"), ((64, 65), "RGBA")])
def test_predictor_returns_original_size(predictor, size, mode):
    h, w = size
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 255, (h, w, channels), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    predictor.set_image(img)
    r = predictor.predict("red car", score_threshold=0.0)
    assert r.masks.dtype == torch.bool and r.masks.shape[1:] == (h, w)
    assert r.scores.shape == (r.masks.shape[0],)
    assert torch.all(r.scores[:-1] >= r.scores[1:])
    assert r.boxes.shape == (r.masks.shape[0], 4)
    assert 0.0 <= r.presence <= 1.0


def test_predictor_numpy_path_and_batched_prompts(predictor, tmp_path):
    arr = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    predictor.set_image(arr)
    a = predictor.predict(["car", "person", "sky"], score_threshold=0.0)
    predictor.set_image(tmp_path / "x.png")
    b = predictor.predict(["car", "person", "sky"], score_threshold=0.0)
    assert [r.prompt for r in a] == ["car", "person", "sky"]
    for ra, rb in zip(a, b):
        assert torch.equal(ra.masks, rb.masks)
    single = predictor.predict("person", score_threshold=0.0)
    assert torch.equal(single.masks, a[1].masks)


def test_predictor_attention(predictor):
    predictor.set_image(np.zeros((40, 40, 3), dtype=np.uint8))
    r = predictor.predict("dog", score_threshold=0.0, return_attention=True)
    assert r.attention.tokens == ["[CLS]", "dog", "[SEP]"]
    a = r.attention.decoder[0].text_cross_attn
    assert a.shape[-1] == 3
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))


def test_predictor_bad_input(predictor):
    fresh = SamLitePredictor(predictor.model)
    with pytest.raises(ValueError, match="no image set"):
        fresh.predict("car")
    predictor.set_image(np.zeros((20, 20, 3), dtype=np.uint8))
    for bad in ["", "   \n\t"]:
        with pytest.raises(ValueError, match="empty"):
            predictor.predict(bad)
    with pytest.raises(ValueError, match="zero size"):
        predictor.set_image(np.zeros((0, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="not found"):
        predictor.set_image("/nonexistent/photo.jpg")


def test_long_prompt_truncated_with_warning(predictor):
    predictor.set_image(np.zeros((20, 20, 3), dtype=np.uint8))
    with pytest.warns(UserWarning, match="truncated"):
        r = predictor.predict("red car " * 200, score_threshold=0.0)
    assert r.masks.shape[1:] == (20, 20)


def test_prompt_cache_reused(predictor):
    enc = predictor.model.text_encoder
    enc.forward(["zebra crossing"])
    assert "zebra crossing" in enc._cache
    cached = enc._cache["zebra crossing"][0]
    again = enc.forward(["zebra crossing"])["features"][0]
    assert torch.equal(again[: cached.shape[0]], cached)


def test_no_empty_masks_after_upsampling(tiny_model, monkeypatch):
    """A query whose mask is one weak low-resolution cell passes the low-resolution checks but vanishes when resized
    to a small photo: it must not come back as an empty mask."""
    predictor = SamLitePredictor(tiny_model)
    predictor.set_image(Image.fromarray(np.full((15, 20, 3), 128, dtype=np.uint8)))
    decode = tiny_model.decode

    def crafted(*args, **kwargs):
        out = decode(*args, **kwargs)
        m = torch.full_like(out["pred_masks"], -20.0)
        m[:, 0] = 20.0  # query 0: the whole image
        m[:, 1, 5, 5] = 0.01  # query 1: a single, barely positive cell
        out["pred_masks"], out["pred_logits"] = m, torch.full_like(out["pred_logits"], 5.0)
        return out

    monkeypatch.setattr(tiny_model, "decode", crafted)
    r = predictor.predict("dog", score_threshold=0.0, nms_iou=1.0)
    assert r.masks.shape == (1, 15, 20) and r.masks.all()
    assert len(r.scores) == len(r.boxes) == 1

