"""The model and the predictor: shapes, attention, save/load, pretrained weights, text features, inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from sam_lite import SamLiteConfig, SamLiteModel, SamLitePredictor
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
        out = tiny_model(torch.randn(2, 3, s, s), ["red car", "a dog"])
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
        shared = tiny_model.decode(emb, tiny_model.encode_text(["cat", "sky"]))
        repeated = tiny_model(x.expand(2, -1, -1, -1), ["cat", "sky"])
    torch.testing.assert_close(shared["pred_masks"], repeated["pred_masks"], atol=1e-5, rtol=1e-4)


def test_attention_rows_sum_to_one_and_shapes(tiny_model):
    cfg = tiny_model.config
    s = cfg.image_size
    n = (s // 16) ** 2
    prompts = ["red car", "a very small dog"]
    text = tiny_model.encode_text(prompts)
    t = text["features"].shape[1]
    with torch.no_grad():
        out = tiny_model(torch.randn(2, 3, s, s), prompts, output_attentions=True)
    att = out["attentions"]
    h, q = cfg.num_heads, cfg.num_queries + 1
    assert att["encoder.layer0.self_attn"].shape == (2, h, n, n)
    assert att["fusion.layer0.text_cross_attn"].shape == (2, h, n, t)
    for i in range(cfg.decoder_layers):
        assert att[f"decoder.layer{i}.image_cross_attn"].shape == (2, h, q, n)
        assert att[f"decoder.layer{i}.text_cross_attn"].shape == (2, h, q, t)
        assert att[f"decoder.layer{i}.self_attn"].shape == (2, h, q, q)
    assert set(out["attentions_mean"]) == set(att)
    for name, a in att.items():
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)), msg=name)
        mean = out["attentions_mean"][name]
        assert mean.shape == a.shape[:1] + a.shape[2:]
        torch.testing.assert_close(mean, a.mean(1), msg=name)
        torch.testing.assert_close(mean.sum(-1), torch.ones_like(mean.sum(-1)), msg=name)
    # padding tokens of the shorter prompt get no attention
    pad = text["padding_mask"][0]
    assert pad.any()
    assert att["decoder.layer0.text_cross_attn"][0][..., pad].abs().max() == 0


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
    feats = tiny_model.encode_text(["red car", "blue car"])
    red, blue = feats["features"][0], feats["features"][1]
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
    assert r.attention["tokens"] == ["[CLS]", "dog", "[SEP]"]
    a = r.attention["decoder.layer0.text_cross_attn"]
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


def test_prior_from_a_higher_resolution_pass(tiny_model):
    """prior_image_size: the ImageNet prior comes from a second backbone pass at that size; the predictor feeds it
    the photo resized to that size (not an upsampled copy of the model input)."""
    cfg = SamLiteConfig.from_preset("tiny", prior_image_size=128)
    model = SamLiteModel(cfg).eval()
    model.load_state_dict(tiny_model.state_dict())  # same weights; only the prior's input differs
    s = cfg.image_size
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        emb = model.encode_image(x)
        assert emb["class_logits"].shape[-2:] == (128 // 32, 128 // 32)
        base = tiny_model.encode_image(x)
        torch.testing.assert_close(emb["tokens"], base["tokens"])  # the main pass is unchanged
    predictor = SamLitePredictor(model)
    predictor.set_image(Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)))
    assert predictor._prior_pixel_values.shape == (1, 3, 128, 128)
    r = predictor.predict("dog", score_threshold=0.0)
    assert r.masks.shape[-2:] == (90, 70)
    with pytest.raises(ValueError, match="prior_image_size"):
        SamLiteConfig.from_preset("tiny", prior_image_size=48)


def test_mask_rescoring(tiny_model):
    from sam_lite.predictor import mask_confidence

    logits = torch.tensor([[[4.0, 4.0], [-4.0, -4.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    conf = mask_confidence(logits)
    assert conf[0] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())  # mean probability inside the mask
    assert conf[1] == 0.0  # an empty mask has no confidence
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    plain = SamLitePredictor(tiny_model)
    plain.set_image(image)
    a = plain.predict("dog", score_threshold=0.0, nms_iou=1.0)
    cfg = SamLiteConfig.from_dict({**tiny_model.config.to_dict(), "mask_rescoring": True})
    model = SamLiteModel(cfg).eval()
    model.load_state_dict(tiny_model.state_dict())
    rescored = SamLitePredictor(model)
    rescored.set_image(image)
    b = rescored.predict("dog", score_threshold=0.0, nms_iou=1.0)
    assert len(b) == len(a) and (b.scores <= a.scores.max() + 1e-6).all()
    assert b.scores.max() < a.scores.max()  # every mask probability is below 1
    with pytest.raises(ValueError, match="mask_rescoring"):
        SamLiteConfig.from_preset("tiny", mask_rescoring="yes")


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


def test_fused_pixel_embedding_makes_mask_features_prompt_aware():
    """With ``fused_pixel_embedding`` the pixel embedding the mask heads read differs per prompt (through the fusion
    layer's output); without it (and without the ImageNet prior and the concept map) it is the same for every prompt. With the new
    projection at zero the model is exactly the one without it."""
    def pixel_embeddings(model, prompts):
        seen = []
        handle = model.heads.register_forward_hook(lambda m, args, out: seen.append(args[1]))
        s = model.config.image_size
        with torch.no_grad():
            out = model(torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(1)).expand(2, -1, -1, -1),
                        prompts)
        handle.remove()
        return seen[-1], out

    torch.manual_seed(0)
    plain = SamLiteModel(SamLiteConfig.from_preset("tiny", use_imagenet_prior=False, concept_map=False)).eval()
    fused = SamLiteModel(SamLiteConfig.from_preset("tiny", use_imagenet_prior=False, concept_map=False,
                                                   fused_pixel_embedding=True)).eval()
    fused.load_state_dict(plain.state_dict(), strict=False)
    px, _ = pixel_embeddings(plain, ["dog", "red car"])
    torch.testing.assert_close(px[0], px[1])
    px, _ = pixel_embeddings(fused, ["dog", "red car"])
    assert (px[0] - px[1]).abs().max() > 1e-4
    with torch.no_grad():
        fused.fused_pixel_proj.weight.zero_()
        fused.fused_pixel_proj.bias.zero_()
    _, a = pixel_embeddings(plain, ["dog", "red car"])
    _, b = pixel_embeddings(fused, ["dog", "red car"])
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"])


def test_semantic_instances_partition_the_semantic_mask():
    from sam_lite.predictor import semantic_instances

    sem = torch.full((6, 6), -5.0)
    sem[:, :2], sem[:, 2:5] = 3.0, 2.0  # the concept covers columns 0-4, more surely 0-1
    masks = torch.full((3, 6, 6), -5.0)
    masks[0, :, :2] = 5.0  # query 0 claims columns 0-1
    masks[1, :, 1:5] = 5.0  # query 1 claims columns 1-4 (overlaps query 0 on column 1)
    masks[2, :, 5:] = 5.0  # query 2 lies outside the semantic mask: never an instance
    match = torch.tensor([0.9, 0.5, 0.99])
    regions, scores, queries = semantic_instances(sem, masks, match, torch.tensor(0.8))
    assert queries.tolist() == [0, 1]
    assert regions[0, :, :2].all() and not regions[0, :, 2:].any()  # column 1 goes to the higher match x mask
    assert regions[1, :, 2:5].all() and not regions[1, :, :2].any() and not regions[1, :, 5:].any()
    assert torch.equal(regions.any(0), sem > 0)  # the union is exactly the semantic mask
    torch.testing.assert_close(scores, 0.8 * torch.sigmoid(torch.tensor([3.0, 2.0])))
    _, _, q = semantic_instances(sem, masks, match, torch.tensor(0.8), min_cells=13)  # query 0 owns only 12 cells
    assert q.tolist() == [1]
    regions, scores, q = semantic_instances(torch.full((6, 6), -1.0), masks, match, torch.tensor(0.8))
    assert regions.shape == (0, 6, 6) and scores.numel() == 0 and q.numel() == 0


def test_predictor_semantic_instance_inference(tiny_model):
    """With ``instance_inference="semantic"`` the answer's union is the presence token's semantic mask."""
    import copy

    model = copy.deepcopy(tiny_model)
    model.config = SamLiteConfig.from_dict({**tiny_model.config.to_dict(), "instance_inference": "semantic"})

    def centre_semantic(module, args, out):  # the untrained head paints nothing: make half of the image positive
        sem = out["pred_semantic"]
        return {**out, "pred_semantic": sem - sem.flatten(1).median(1).values[:, None, None]}

    model.heads.register_forward_hook(centre_semantic)
    pred = SamLitePredictor(model)
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    pred.set_image(img)
    r = pred.predict("dog", score_threshold=0.0)
    with torch.no_grad():
        out = model.decode(pred._embedding, model.encode_text(["dog"]))
    expected = pred.processor.postprocess_masks(out["pred_semantic"][:1].float(), pred._meta)[0] > 0
    union = r.masks.any(0) if len(r) else torch.zeros_like(expected)
    assert union.sum() > 0 and (union & ~expected).sum() == 0  # nothing outside the semantic mask
    assert (expected & ~union).float().mean() < 0.01  # and (up to dropped slivers) all of it
    assert r.masks.sum(0).max() <= 1  # instances do not overlap
    assert all(r.scores[:-1] >= r.scores[1:]) and (r.scores <= r.presence + 1e-6).all()
    with pytest.raises(ValueError, match="instance_inference"):
        SamLiteConfig(instance_inference="panoptic")
