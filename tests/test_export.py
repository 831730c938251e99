"""ONNX export: onnxruntime must agree with PyTorch (tiny config), batch 1 and 2, any number of text tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sam_lite import SamLiteConfig, SamLiteModel, SamLitePredictor  # noqa: E402
from sam_lite.export import export_onnx, main, run_onnx, run_pytorch  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny model gains nothing from a second thread, and on a shared 2-core machine a second OpenMP thread
    waiting for a busy core makes every op slow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint on disk, exported once through the CLI entry point (with the text encoder)."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    SamLiteModel(SamLiteConfig.from_preset("tiny")).save_pretrained(root / "ckpt")
    assert main(["--checkpoint", str(root / "ckpt"), "--out", str(root / "onnx"), "--text-encoder",
                 "--no-verify"]) == 0
    model = SamLiteModel.from_pretrained(root / "ckpt")
    out = root / "onnx"
    paths = {"image_encoder": out / "image_encoder.onnx", "prompt_decoder": out / "prompt_decoder.onnx",
             "text_encoder": out / "text_encoder.onnx"}
    return model, paths, out


def _inputs(model, prompts, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.config.image_size
    text = model.encode_prompt(prompts)
    return {"pixel_values": torch.rand(len(prompts), 3, s, s, generator=g) * 2 - 1,
            "text_features": text.features.float(), "text_padding_mask": text.padding_mask,
            "sentence": text.sentence.float()}


def _assert_close(got: dict, ref: dict):
    assert set(ref) <= set(got)
    for k, v in ref.items():
        v = v.detach().float().numpy()
        assert got[k].shape == v.shape, k
        tol = 1e-4 * max(1.0, float(np.abs(v).max()))
        np.testing.assert_allclose(got[k], v, rtol=1e-3, atol=tol, err_msg=k)


def test_files_and_manifest(exported):
    model, paths, out = exported
    for p in paths.values():
        onnx.checker.check_model(str(p))
    manifest = json.loads((out / "onnx_export.json").read_text())
    assert manifest["image_size"] == model.config.image_size
    assert SamLiteConfig.load(out / "config.json") == model.config
    dec = ort.InferenceSession(str(paths["prompt_decoder"]), providers=["CPUExecutionProvider"])
    names = [i.name for i in dec.get_inputs()]
    assert names == ["image_tokens", "pixel_features", "class_logits", "concept_embedding", "text_features",
                     "text_padding_mask", "sentence"]
    outputs = [o.name for o in dec.get_outputs()]
    assert outputs[:5] == ["pred_logits", "pred_masks", "pred_boxes", "presence_logits", "scores"]
    assert set(outputs[5:]) <= {"pred_semantic"}
    assert set(manifest["prompt_decoder"]["outputs"]) == set(outputs)
    # batch and text length are symbolic
    shapes = {i.name: i.shape for i in dec.get_inputs()}
    assert isinstance(shapes["text_features"][0], str) and isinstance(shapes["text_features"][1], str)


@pytest.mark.parametrize("prompts", [["red car"], ["cat", "a small red car parked next to a tall green tree"]],
                         ids=["batch1", "batch2-padded"])
def test_onnxruntime_matches_pytorch(exported, prompts):
    model, paths, _ = exported
    ex = _inputs(model, prompts)
    _assert_close(run_onnx(paths, ex), run_pytorch(model, ex))


def test_text_length_beyond_trace(exported):
    """The graphs were traced with 5 text tokens; the longest prompt here has max_text_tokens (16)."""
    model, paths, _ = exported
    with pytest.warns(UserWarning, match="truncated"):
        ex = _inputs(model, ["dog", "a very long prompt " * 5], seed=1)
    assert ex["text_features"].shape[1] == model.config.max_text_tokens
    _assert_close(run_onnx(paths, ex), run_pytorch(model, ex))


def test_text_encoder_matches_pytorch(exported):
    model, paths, _ = exported
    prompts = ["cat", "a red car on the left"]
    enc = model.text_encoder.tokenizer(prompts, padding=True, truncation=True,
                                       max_length=model.config.max_text_tokens, return_tensors="np")
    sess = ort.InferenceSession(str(paths["text_encoder"]), providers=["CPUExecutionProvider"])
    feats, sentence = sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                      "attention_mask": enc["attention_mask"].astype(np.int64)})
    ref = model.encode_prompt(prompts)
    np.testing.assert_allclose(feats, ref.features.numpy(), atol=1e-4)
    np.testing.assert_allclose(sentence, ref.sentence.numpy(), atol=1e-5)


def test_onnx_pipeline_reproduces_predictor(exported):
    """Processor -> ONNX encoder -> ONNX decoder gives the predictor's scores on a real-sized image."""
    model, paths, _ = exported
    pred = SamLitePredictor(model)
    image = (np.random.default_rng(0).random((50, 90, 3)) * 255).astype(np.uint8)
    pred.set_image(image)
    result = pred.predict("dog", score_threshold=0.0, nms_iou=1.0)
    pixel_values = model.preprocess(pred.processor.preprocess(image)[0])
    text = model.encode_prompt(["dog"])
    got = run_onnx(paths, {"pixel_values": pixel_values, "text_features": text.features,
                           "text_padding_mask": text.padding_mask, "sentence": text.sentence})
    assert len(result) >= 1
    # the predictor drops queries with an empty mask, so match each of its scores to the closest ONNX score
    gap = np.abs(result.scores.numpy()[:, None] - got["scores"][0][None, :]).min(1)
    assert gap.max() < 1e-5
    np.testing.assert_allclose(float(1 / (1 + np.exp(-got["presence_logits"][0]))), result.presence, atol=1e-5)


def test_export_without_imagenet_prior(tmp_path):
    """use_imagenet_prior=False: no class_logits output/input; still batch- and length-dynamic."""
    torch.manual_seed(1)
    model = SamLiteModel(SamLiteConfig.from_preset("tiny", use_imagenet_prior=False)).eval()
    paths = export_onnx(model, tmp_path)
    dec = ort.InferenceSession(str(paths["prompt_decoder"]), providers=["CPUExecutionProvider"])
    assert "class_logits" not in [i.name for i in dec.get_inputs()]
    for prompts in (["car"], ["a dog", "two red cars on a street"]):
        ex = _inputs(model, prompts)
        _assert_close(run_onnx(paths, ex), run_pytorch(model, ex))


def test_export_with_image_presence(tmp_path):
    torch.manual_seed(0)
    model = SamLiteModel(SamLiteConfig.from_preset("tiny", concept_names=["car", "sports ball", "sky"],
                                                   image_presence=True)).eval()
    with torch.no_grad():
        model.image_encoder.image_presence.vote.fill_(0.02)  # a trained vote, so the decoder graph reads it
    paths = export_onnx(model, tmp_path)
    dec = ort.InferenceSession(str(paths["prompt_decoder"]), providers=["CPUExecutionProvider"])
    assert "image_concept" in [i.name for i in dec.get_inputs()]
    for prompts in (["car"], ["a dog", "two red cars on a street"]):
        ex = _inputs(model, prompts)
        _assert_close(run_onnx(paths, ex), run_pytorch(model, ex))


def test_cli_reports_bad_checkpoint(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "missing" in capsys.readouterr().err
