"""ONNX export of a geometric_prompts model: the prompt decoder takes points, boxes, exemplars and text_valid."""

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sam_lite import SamLiteConfig, SamLiteModel  # noqa: E402
from sam_lite.export import GEOMETRY_INPUTS, example_inputs, main, run_onnx, run_pytorch  # noqa: E402
from sam_lite.structures import Prompt  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-geo")
    torch.manual_seed(0)
    model = SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True, geometry_prior=True))
    with torch.no_grad():  # the dense prior's projections start at zero: make them count in the comparison
        model.priors["geometry"].token_proj.weight.normal_()
        model.priors["geometry"].pixel_proj.weight.normal_()
    model.save_pretrained(root / "ckpt")
    assert main(["--checkpoint", str(root / "ckpt"), "--out", str(root / "onnx"), "--max-points", "3",
                 "--max-exemplars", "2"]) == 0  # (verifies against PyTorch itself)
    model = SamLiteModel.from_pretrained(root / "ckpt")
    out = root / "onnx"
    return model, {"image_encoder": out / "image_encoder.onnx", "prompt_decoder": out / "prompt_decoder.onnx"}, out


def _close(got, ref):
    for k, v in ref.items():
        v = v.detach().float().numpy()
        assert got[k].shape == v.shape, k
        np.testing.assert_allclose(got[k], v, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(v).max())), err_msg=k)


def test_inputs_outputs_and_manifest(exported):
    model, paths, out = exported
    dec = ort.InferenceSession(str(paths["prompt_decoder"]), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in dec.get_inputs()}
    assert list(shapes)[-len(GEOMETRY_INPUTS):] == list(GEOMETRY_INPUTS)
    assert shapes["point_coords"][1:] == [3, 2] and shapes["exemplars"][1:] == [2, 4]  # fixed N and E
    assert isinstance(shapes["point_coords"][0], str)  # batch is symbolic
    outputs = [o.name for o in dec.get_outputs()]
    assert outputs[5] == "pred_iou"
    manifest = json.loads((out / "onnx_export.json").read_text())["prompt_decoder"]
    assert set(manifest["outputs"]) == set(outputs) and manifest["inputs"][-len(GEOMETRY_INPUTS):] == list(
        GEOMETRY_INPUTS)
    assert manifest["visual_prompt"]["max_points"] == 3 and manifest["visual_prompt"]["max_exemplars"] == 2


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_pytorch(exported, batch):
    model, paths, _ = exported
    ex = example_inputs(model, batch=batch, max_points=3, max_exemplars=2)
    _close(run_onnx(paths, ex), run_pytorch(model, ex))


def test_text_rows_and_full_slots(exported):
    """A text-only row (all padding), a row with every point and exemplar slot used, and a box-only row."""
    model, paths, _ = exported
    rows = [None, {"points": [[1.0, 2.0], [30.0, 40.0], [60.0, 10.0]], "point_labels": [1, 0, 1],
                   "exemplars": [[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 63.0, 50.0]]}, {"box": [5.0, 6.0, 40.0, 41.0]}]
    geo = Prompt.from_rows(["dog", "", "a small red car"], rows, 3, 2)
    text = model.encode_prompt(geo)
    ex = example_inputs(model, batch=3, max_points=3, max_exemplars=2)
    ex.update({"text_features": text.features, "text_padding_mask": text.padding_mask,
               "sentence": text.sentence, "point_coords": geo.points, "point_labels": geo.point_labels,
               "boxes": geo.boxes, "box_valid": geo.box_valid, "exemplars": geo.exemplars,
               "exemplar_valid": geo.exemplar_valid, "text_valid": geo.text_valid})
    _close(run_onnx(paths, ex), run_pytorch(model, ex))


def test_benchmark_text_feeds_fill_the_visual_prompt_inputs(exported):
    """The benchmark's text path on a geometric export: the inputs it does not feed get 'no visual prompt', and the
    answer is the PyTorch model's for the text prompt alone (geometry=None)."""
    from sam_lite.benchmarking.common import empty_visual_prompt_feeds

    model, paths, _ = exported
    ex = example_inputs(model, batch=1, max_points=3, max_exemplars=2)
    text = model.encode_prompt(["dog"])
    ex = {"pixel_values": ex["pixel_values"], "text_features": text.features,
          "text_padding_mask": text.padding_mask, "sentence": text.sentence}
    enc = ort.InferenceSession(str(paths["image_encoder"]), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(paths["prompt_decoder"]), providers=["CPUExecutionProvider"])
    feeds = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"pixel_values": ex["pixel_values"].numpy()})))
    feeds.update({k: v.numpy() for k, v in ex.items() if k != "pixel_values"})
    blank = empty_visual_prompt_feeds(dec.get_inputs(), feeds)
    assert sorted(blank) == sorted(GEOMETRY_INPUTS)
    assert (blank["point_labels"] == -1).all() and blank["text_valid"].all() and not blank["box_valid"].any()
    got = dict(zip([o.name for o in dec.get_outputs()], dec.run(None, {**feeds, **blank})))
    ref = run_pytorch(model, ex)
    _close(got, {k: ref[k] for k in ("pred_logits", "pred_masks", "pred_boxes", "presence_logits", "scores")})
