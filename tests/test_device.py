"""--device on the CPU: auto picks the CPU when there is no accelerator, a missing CUDA / MPS is one line and a
non-zero exit on every command (not a traceback), and --device cpu answers as before. No test needs a GPU: CUDA and
MPS are reported missing by monkeypatching sam_lite.device, so these pass on a GPU machine too."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from sam_lite import cli, device as device_module
from sam_lite.device import resolve_device, to_device
from sam_lite.structures import Prompt

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(device_module, "cuda_available", lambda: False)
    monkeypatch.setattr(device_module, "mps_available", lambda: False)


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "dogs.jpg"
    Image.open(REPO / "examples" / "two_dogs.jpg").resize((160, 120)).save(path)
    return path


def _one_line_error(text: str, *needles: str) -> None:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text and all(n in lines[0] for n in needles), text


# --- resolve_device ----------------------------------------------------------------------------------------------
def test_auto_is_the_cpu_without_an_accelerator(no_accelerator):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(device_module, "cuda_available", lambda: True)
    monkeypatch.setattr(device_module, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(device_module, "cuda_available", lambda: False)
    assert resolve_device("auto") == torch.device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_auto_is_the_cpu_here():
    if device_module.mps_available():
        pytest.skip("this machine has MPS")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("name, needle", [("cuda", "CUDA is not available"), ("cuda:0", "CUDA is not available"),
                                          ("mps", "MPS is not available")])
def test_a_missing_device_is_a_clear_value_error(no_accelerator, name, needle):
    with pytest.raises(ValueError) as e:
        resolve_device(name)
    _one_line_error(str(e.value), f"--device {name}", needle, "--device cpu")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", "cpu:0", ""])
def test_an_unknown_device_name_is_a_value_error(name):
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device(name)


# --- moving things -----------------------------------------------------------------------------------------------
def test_to_device_moves_nested_tensors_and_dataclasses():
    """The 'meta' device stands in for a GPU: every tensor moves, everything else is kept."""
    from sam_lite.training.loop import move_batch

    prompt = Prompt.from_rows(["dog", ""], [None, {"box": torch.tensor([1.0, 2.0, 3.0, 4.0])}])
    batch = {"images": torch.zeros(2, 3, 8, 8), "image_index": torch.tensor([0, 1]), "prompt": prompt,
             "prompts": ["dog", ""], "image_ids": [7, 8],
             "targets": [{"masks": torch.zeros(1, 8, 8), "boxes": torch.zeros(1, 4)}, {"boxes": torch.zeros(0, 4)}],
             "dense_labels": torch.zeros(2, 4, 4, dtype=torch.long),
             "dense_allowed": torch.ones(2, 3, dtype=torch.bool)}
    assert move_batch(batch, "cpu") is batch  # the CPU: nothing to do
    moved = move_batch(batch, "meta")
    assert moved["prompts"] == ["dog", ""] and moved["image_ids"] == [7, 8]
    tensors = [moved["images"], moved["image_index"], moved["dense_labels"], moved["dense_allowed"],
               *[v for t in moved["targets"] for v in t.values()],
               *[v for v in vars(moved["prompt"]).values() if isinstance(v, torch.Tensor)]]
    assert len(tensors) > 8 and all(t.device.type == "meta" for t in tensors)
    assert moved["prompt"].text == prompt.text and moved["prompt"].is_geometric
    assert moved["prompt"].text_valid.device.type == "meta"  # Prompt.__post_init__ keeps it on the device
    assert batch["images"].device.type == "cpu"  # the original batch is untouched
    back = to_device({"a": [torch.ones(1), (torch.ones(2), "x")]}, "cpu")
    assert back["a"][1][1] == "x" and back["a"][0].device.type == "cpu"


# --- the predictor -----------------------------------------------------------------------------------------------
def test_predictor_on_the_cpu_answers_as_without_a_device(tiny_checkpoint, small_image):
    from sam_lite import SamLitePredictor

    plain = SamLitePredictor.from_pretrained(tiny_checkpoint)
    on_cpu = SamLitePredictor.from_pretrained(tiny_checkpoint, device="cpu")
    assert plain.device == on_cpu.device == torch.device("cpu")
    results = []
    for p in (plain, on_cpu):
        p.set_image(small_image)
        results.append(p.predict("dog", score_threshold=0.0))
    a, b = results
    assert torch.equal(a.masks, b.masks) and torch.equal(a.scores, b.scores) and torch.equal(a.boxes, b.boxes)
    assert a.masks.device.type == a.scores.device.type == "cpu"
    # .to() keeps the cached embedding usable
    assert on_cpu.to("cpu") is on_cpu
    assert torch.equal(on_cpu.predict("dog", score_threshold=0.0).scores, a.scores)


def test_predictor_with_a_missing_device_fails_before_loading(no_accelerator, tmp_path):
    from sam_lite import SamLitePredictor

    with pytest.raises(ValueError, match="CUDA is not available"):
        SamLitePredictor.from_pretrained(tmp_path / "not-even-a-checkpoint", device="cuda")


# --- every command -----------------------------------------------------------------------------------------------
def test_predict_device_cpu_is_the_same_as_no_flag(tiny_checkpoint, small_image, capsys):
    args = ["predict", str(small_image), "dog, toilet", "--threshold", "0", "--json", "--checkpoint",
            str(tiny_checkpoint)]
    assert cli.main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli.main(args + ["--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out) == plain


def test_predict_device_cuda_without_cuda(no_accelerator, tiny_checkpoint, small_image, capsys):
    rc = cli.main(["predict", str(small_image), "dog", "--device", "cuda", "--checkpoint", str(tiny_checkpoint)])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "sam-lite predict: error:", "CUDA is not available")


@pytest.mark.parametrize("command", ["eval", "eval-boxes"])
def test_eval_device_cuda_without_cuda(no_accelerator, tiny_checkpoint, tmp_path, capsys, command):
    rc = cli.main([command, "--device", "cuda", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path)])
    assert rc != 0
    _one_line_error(capsys.readouterr().err, "error:", "CUDA is not available")


def test_geometric_eval_device_mps_without_mps(no_accelerator, tiny_checkpoint, tmp_path, capsys):
    from sam_lite.evaluation.geometric import main

    rc = main(["--device", "mps", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path)])
    assert rc != 0
    _one_line_error(capsys.readouterr().err, "error:", "MPS is not available")


def test_train_device_cuda_without_cuda(no_accelerator, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--device", "cuda", "--data", str(tmp_path), "--out", str(tmp_path / "x"), "--steps",
                  "1"])
    assert e.value.code not in (0, None)
    _one_line_error(str(e.value.code), "error:", "CUDA is not available")
    assert not (tmp_path / "x").exists()


def test_train_device_defaults():
    from sam_lite.training.train import parse_args, training_device

    args = parse_args(["--steps", "1"])
    assert (args.device, args.bf16, args.workers) == ("auto", None, None)  # resolved in main: CUDA or not
    assert parse_args(["--steps", "1", "--no-bf16"]).bf16 is False
    assert parse_args(["--steps", "1", "--bf16"]).bf16 is True
    assert training_device("cpu", distributed=False) == torch.device("cpu")


def test_demo_device_cuda_without_cuda(no_accelerator, tiny_checkpoint, capsys):
    rc = cli.main(["demo", "--device", "cuda", "--checkpoint", str(tiny_checkpoint), "--port", "0"])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "error:", "CUDA is not available")


def test_export_device_cuda_without_cuda(no_accelerator, tiny_checkpoint, tmp_path, capsys):
    rc = cli.main(["export", "--device", "cuda", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "error:", "CUDA is not available")
    assert not (tmp_path / "o").exists()


def test_export_defaults_to_the_cpu():
    import argparse

    from sam_lite.device import add_device_argument

    ap = argparse.ArgumentParser()
    add_device_argument(ap, default="cpu")
    assert ap.parse_args([]).device == "cpu"


def test_benchmark_device_cuda_without_cuda(no_accelerator, capsys):
    rc = cli.main(["benchmark", "--device", "cuda", "--no-write"])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "error:", "CUDA is not available")
