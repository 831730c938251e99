"""The sam-lite command: predict on the tiny checkpoint, clean failures, and delegation to the other scripts."""

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_lite import cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "dogs.jpg"
    Image.open(REPO / "examples" / "two_dogs.jpg").resize((160, 120)).save(path)
    return path


def test_predict_writes_overlay_and_json(tiny_checkpoint, small_image, tmp_path, capsys):
    out = tmp_path / "sub" / "overlay.png"
    rc = cli.main(["predict", str(small_image), "dog", "--threshold", "0", "--checkpoint", str(tiny_checkpoint),
                   "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out)
    assert result["prompt"] == "dog"
    assert 0.0 <= result["presence"] <= 1.0
    assert result["instances"], "threshold 0 keeps at least one instance"
    for inst in result["instances"]:
        assert 0.0 <= inst["score"] <= 1.0 and len(inst["box_xyxy"]) == 4 and inst["area"] > 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (160, 120) and im.mode == "RGB"
        overlay = np.asarray(im, dtype=np.int16)
    assert np.abs(overlay - np.asarray(Image.open(small_image), dtype=np.int16)).mean() > 5  # something was drawn


def test_predict_several_prompts_and_plain_output(tiny_checkpoint, small_image, capsys):
    rc = cli.main(["predict", str(small_image), "dog, toilet", "--threshold", "0", "--checkpoint",
                   str(tiny_checkpoint), "--json"])
    assert rc == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in results] == ["dog", "toilet"]

    rc = cli.main(["predict", str(small_image), "red car", "--threshold", "1", "--checkpoint", str(tiny_checkpoint)])
    assert rc == 0
    assert "no red car found, presence" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["predict", "{img}", " , "], "the prompt is empty"),
    (["predict", "{img}", "dog", "--checkpoint", "{missing}"], "cannot load the checkpoint"),
    (["predict", "{img}", "dog", "-o", "{tmp}/overlay.txt"], "--output must end in"),
    (["predict", "{tmp}/nope.jpg", "dog"], "image file not found"),
])
def test_bad_input_exits_2_with_a_message(args, message, small_image, tmp_path, capsys):
    args = [a.format(img=small_image, tmp=tmp_path, missing=tmp_path / "no-checkpoint") for a in args]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_threshold_out_of_range_is_a_usage_error(small_image, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["predict", str(small_image), "dog", "--threshold", "1.5"])
    assert e.value.code == 2
    assert "must be in [0, 1]" in capsys.readouterr().err


def test_missing_image_is_one_line_and_status_2(tmp_path, capsys):
    path = tmp_path / "photo.jpg"
    assert cli.main(["predict", str(path), "red car"]) == 2
    err = capsys.readouterr().err
    assert "sam-lite predict: error:" in err and str(path) in err and "Traceback" not in err


def test_subprocess_bad_image_exit_code(tmp_path):
    """The installed command itself (a fresh process): a file that is not an image -> one line, status 2."""
    path = tmp_path / "photo.jpg"
    path.write_text("this is not a JPEG")
    proc = subprocess.run([sys.executable, "-m", "sam_lite.cli", "predict", str(path), "red car"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "sam-lite predict: error:" in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("predict", "demo", "train", "eval", "export", "benchmark"):
        assert name in out
    assert cli.main([]) == 2  # no command: help, usage exit code


def test_delegated_commands_get_all_their_arguments(monkeypatch):
    seen = {}
    fake = types.ModuleType("fake_train")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 3
    monkeypatch.setitem(sys.modules, "fake_train", fake)
    monkeypatch.setitem(cli.DELEGATES, "train", ("fake_train", "main", "fake"))
    assert cli.main(["train", "--help", "--steps", "5"]) == 3
    assert seen["argv"] == ["--help", "--steps", "5"]  # --help is the script's own, not sam-lite's


def test_delegate_without_parameters_reads_sys_argv(monkeypatch):
    seen = []
    fake = types.ModuleType("fake_eval")
    fake.main = lambda: seen.append(list(sys.argv))  # returns None: treated as success
    monkeypatch.setitem(sys.modules, "fake_eval", fake)
    monkeypatch.setitem(cli.DELEGATES, "eval", ("fake_eval", "main", "fake"))
    argv = list(sys.argv)
    assert cli.main(["eval", "--x", "1"]) == 0
    assert seen == [["sam-lite eval", "--x", "1"]]  # the delegate parsed exactly these arguments
    assert sys.argv == argv  # and sys.argv is restored afterwards


def test_missing_delegate_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(cli.DELEGATES, "export", ("sam_lite.no_such_module", "main", "fake"))
    monkeypatch.setitem(cli.DELEGATES, "benchmark", ("sam_lite.benchmarking", "no_such_function", "fake"))
    assert cli.main(["export"]) == 2
    assert cli.main(["benchmark"]) == 2
    err = capsys.readouterr().err
    assert "not available" in err and "no_such_function" in err and "Traceback" not in err


def test_benchmark_is_imported_as_a_module(monkeypatch):
    """``sam-lite benchmark`` imports sam_lite.benchmarking.cli (no script run by file path)."""
    import sam_lite.benchmarking.cli as bench

    assert cli.DELEGATES["benchmark"][:2] == ("sam_lite.benchmarking.cli", "main")
    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["benchmark", "--quick", "--no-write"]) == 0
    assert seen == [["--quick", "--no-write"]]

