"""sam-lite predict with --point / --box / --exemplar on a tiny geometric checkpoint; bad coordinates exit 2."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sam_lite import SamLiteConfig, SamLiteModel, cli


@pytest.fixture(scope="module")
def geo_checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("geo-ckpt")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _run(capsys, *args):
    rc = cli.main(["predict", *map(str, args)])
    return rc, capsys.readouterr()


def test_point_json_and_overlay(geo_checkpoint, photo, tmp_path, capsys):
    out = tmp_path / "overlay.png"
    rc, cap = _run(capsys, photo, "--point", "40,30", "--point", "100,80,0", "--checkpoint", geo_checkpoint,
                   "--json", "-o", out)
    assert rc == 0, cap.err
    result = json.loads(cap.out)
    assert result["prompt"] == "" and len(result["instances"]) == 1
    assert result["visual_prompt"] == {"points": [[40.0, 30.0], [100.0, 80.0]], "point_labels": [1, 0]}
    assert 0 <= result["instances"][0]["predicted_iou"] <= 1
    with Image.open(out) as im:
        assert im.size == (120, 90)
        assert tuple(im.getpixel((40, 30))) == (0, 224, 0)  # the positive click is drawn green


def test_box_multimask_and_exemplars_plain_output(geo_checkpoint, photo, capsys):
    rc, cap = _run(capsys, photo, "--box", "10,10,60,50", "--multimask", "--checkpoint", geo_checkpoint)
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert lines[0].startswith("object: ") and 1 <= len(lines) - 1 <= 3 and "predicted IoU" in lines[1]
    rc, cap = _run(capsys, photo, "car", "--exemplar", "10,10,30,30", "--exemplar", "50,40,80,70", "--threshold", "0",
                   "--checkpoint", geo_checkpoint, "--json")
    assert rc == 0, cap.err
    result = json.loads(cap.out)
    assert result["prompt"] == "car" and len(result["instances"]) > 1
    assert result["visual_prompt"]["exemplars"] == [[10.0, 10.0, 30.0, 30.0], [50.0, 40.0, 80.0, 70.0]]


@pytest.mark.parametrize("args, message", [
    (["--point", "1,2,3,4"], "--point needs X,Y or X,Y,LABEL"),
    (["--point", "a,b"], "--point needs X,Y or X,Y,LABEL"),
    (["--point", "5,5,2"], "--point LABEL must be 1 (positive) or 0 (negative)"),
    (["--point", "500,5"], "point 0 (500, 5) is outside the photo (120x90 pixels)"),
    (["--point", "nan,5"], "points contains NaN"),
    (["--box", "1,2,3"], "--box needs X0,Y0,X1,Y1"),
    (["--box", "10,10,5,20"], "is empty or flipped"),
    (["--exemplar", "10,10,200,20"], "exemplar 0 corner (x1, y1) (200, 20) is outside the photo"),
    (["dog, cat", "--point", "5,5"], "go with one prompt"),
    (["--multimask"], "nothing to segment"),
    (["car", "--multimask"], "--multimask goes with --point or --box"),
])
def test_bad_coordinates_exit_2_with_one_line(geo_checkpoint, photo, capsys, args, message):
    rc, cap = _run(capsys, photo, *args, "--checkpoint", geo_checkpoint)
    assert rc == 2
    assert message in cap.err and len(cap.err.strip().splitlines()) == 1 and "Traceback" not in cap.err


def test_text_only_checkpoint_says_so(tiny_checkpoint, photo, capsys):
    rc, cap = _run(capsys, photo, "--point", "5,5", "--checkpoint", tiny_checkpoint)
    assert rc == 2 and "geometric_prompts" in cap.err and len(cap.err.strip().splitlines()) == 1
