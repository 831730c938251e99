"""The fast inference path: the BN-folded backbone copy, encoder attention without a second pass, MiniLM in ONNX
Runtime, and the benchmark's public-API rows."""

from __future__ import annotations

import copy

import pytest
import torch

from sam_lite.modeling.backbone import EfficientNetLite, fold_batchnorm, same_padding


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    from sam_lite import SamLiteModel

    return SamLiteModel.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def lite0():
    net = EfficientNetLite("lite0")
    net.load_state_dict(net.load_pretrained_state_dict())
    return net.eval()


@pytest.mark.parametrize("size", [256, 250, 257])
def test_folded_backbone_matches_the_original(lite0, size):
    """Same features (within float re-association) at even sizes (asymmetric stride-2 pads: the shifted kernel) and
    odd ones (symmetric pads)."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    with torch.no_grad():
        want = lite0.forward_features(x, with_classifier=True)
        got = fold_batchnorm(lite0).forward_features(x.contiguous(memory_format=torch.channels_last), True)
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        torch.testing.assert_close(got[k], want[k], atol=3e-4, rtol=1e-4, msg=k)


def test_same_padding_is_asymmetric_for_stride_two_on_even_sizes():
    assert same_padding((256, 256), (3, 3), (2, 2)) == (0, 1, 0, 1)
    assert same_padding((128, 128), (5, 5), (2, 2)) == (1, 2, 1, 2)
    assert same_padding((257, 257), (3, 3), (2, 2)) == (1, 1, 1, 1)
    assert same_padding((64, 64), (5, 5), (1, 1)) == (2, 2, 2, 2)


def test_folded_copy_follows_weight_changes_and_adds_no_state(tiny_model):
    enc = copy.deepcopy(tiny_model.image_encoder).eval()
    keys = set(enc.state_dict())
    x = torch.rand(1, 3, enc.config.image_size, enc.config.image_size) * 2 - 1
    with torch.no_grad():
        first = enc.folded_backbone()
        assert enc.folded_backbone() is first  # cached while the weights stay
        enc.backbone._bn0.running_mean += 0.5  # e.g. load_state_dict or a training step
        second = enc.folded_backbone()
        assert second is not first
        want = enc.backbone.forward_features(x, True)["f4"]
        torch.testing.assert_close(second.forward_features(x, True)["f4"], want, atol=3e-4, rtol=1e-4)
    assert set(enc.state_dict()) == keys


def test_encoder_attention_needs_no_second_pass(tiny_model, monkeypatch):
    enc = tiny_model.image_encoder.eval()
    s = enc.config.image_size
    x = torch.rand(1, 3, s, s) * 2 - 1
    passes = []
    real = enc._encode
    monkeypatch.setattr(enc, "_encode", lambda pv: passes.append(1) or real(pv))
    captured = []
    hook = enc.layers[0].norm1.register_forward_hook(lambda m, a, out: captured.append(out))
    with torch.inference_mode():
        plain = enc(x)
        explained = enc(x, output_attentions=True)
        assert len(passes) == 1
        assert not plain.encoder_attentions
        torch.testing.assert_close(explained.tokens, plain.tokens, atol=0, rtol=0)
        n = (s // 16) ** 2
        assert len(explained.encoder_attentions) == enc.config.encoder_layers
        a0 = explained.encoder_attentions[0]
        assert a0.shape == (1, enc.config.num_heads, n, n)
        torch.testing.assert_close(a0.sum(-1), torch.ones(a0.shape[:-1]))
        # the weights the eager attention path would materialise, from the same layer input
        h = captured[0]
        qk = h + plain.pos
        _, want = enc.layers[0].self_attn(qk, qk, h, need_weights=True)
        torch.testing.assert_close(a0, want, atol=1e-5, rtol=1e-4)
        x2 = x.clone()  # another tensor (or the same one written to) is encoded again
        enc(x2, output_attentions=True)
        x2.mul_(0.5)
        enc(x2, output_attentions=True)
        enc(x2)  # a plain call is never answered from the remembered one
    hook.remove()
    assert len(passes) == 4
    import pickle

    monkeypatch.undo()
    assert "_last" not in pickle.loads(pickle.dumps(enc)).__dict__


def test_onnx_text_encoder_matches_pytorch(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("SAM_LITE_CACHE", str(tmp_path))
    te = copy.deepcopy(tiny_model.text_encoder).eval()
    te.use_onnx = True
    prompts = ["red car", "a small dog on the green grass", "cup"]
    with torch.inference_mode():
        got = te(prompts)
        assert te.__dict__.get("_onnx") is not None, "ONNX Runtime was not used"
        assert list(tmp_path.glob("minilm-*.onnx"))
        te.use_onnx = False
        te._cache.clear()
        want = te(prompts)
    assert torch.equal(got["padding_mask"], want["padding_mask"])
    torch.testing.assert_close(got["features"], want["features"], atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(got["sentence"], want["sentence"], atol=1e-5, rtol=1e-4)


def test_public_api_table_has_the_clipseg_ratio():
    from sam_lite.benchmarking.report import public_api_table

    t = {"median_ms": 20.0, "min_ms": 19.0, "max_ms": 30.0}
    R = {"ours": {"public_api": [{"threads": 2, "set_image": t, "predict_new_prompt": {**t, "median_ms": 5.0},
                                  "end_to_end": {**t, "median_ms": 25.0}}]},
         "clipseg": {"end_to_end": {"median_ms": 1000.0}}}
    table = public_api_table(R)
    assert "| 2 | 20.0 ms | 5.0 ms | 25.0 ms | 40.0x |" in table


def test_benchmark_reports_the_public_api(tiny_checkpoint, capsys):
    """The quick benchmark on the tiny checkpoint: rows for set_image(JPEG path), a never-seen prompt and
    photo -> masks."""
    from sam_lite.benchmarking.cli import main

    rc = main(["--checkpoint", str(tiny_checkpoint), "--quick", "--no-write", "--image-sizes", "",
               "--skip", "sam,clipseg,train,memory,onnx,alt-threads"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "### Through the public API" in out
    assert "| threads | set_image (JPEG path) | new prompt (never seen) | photo -> masks |" in out
    row = next(ln for ln in out.splitlines() if ln.startswith(f"| {torch.get_num_threads()} | "))
    assert row.count(" ms |") == 3
    assert "public API (JPEG path in, masks at its size out): a new prompt <= 8 ms" in out
