"""GeometricPromptEncoder: token layout, padding, positional codes, roi_align appearance; the config flag."""

from pathlib import Path

import pytest
import torch

from sam_lite import SamLiteConfig, SamLiteModel
from sam_lite.modeling.attention import sine_position_encoding_2d, sine_position_encoding_points
from sam_lite.modeling.prompt_encoder import NOT_A_POINT, GeometricPromptEncoder
from sam_lite.structures import Prompt

ROOT = Path(__file__).resolve().parent.parent


def pad_geometry(rows):
    """The geometry tensors of rows of visual prompts (no text)."""
    return Prompt.from_rows([""] * len(rows), rows).geometry()


@pytest.fixture(scope="module")
def encoder() -> GeometricPromptEncoder:
    torch.manual_seed(0)
    return GeometricPromptEncoder(32, 64).eval()


def _geometry():
    return pad_geometry([
        {"points": [[10.0, 20.0], [40.0, 5.0]], "point_labels": [1, 0]},
        {"box": [4.0, 8.0, 30.0, 40.0]},
        {"exemplars": [[0.0, 0.0, 15.0, 15.0]], "points": [[3.0, 3.0]]},
    ])


def test_token_layout_and_padding(encoder):
    geo = _geometry()
    assert geo["points"].shape == (3, 2, 2) and geo["point_labels"].tolist() == [[1, 0], [-1, -1], [1, -1]]
    assert geo["box_valid"].tolist() == [False, True, False]
    assert geo["exemplars"].shape == (3, 1, 4) and geo["exemplar_valid"].tolist() == [[False], [False], [True]]
    tokens, pad = encoder(geo, torch.randn(3, 32, 4, 4))
    assert tokens.shape == (3, 2 + 2 + 3, 32) and pad.shape == (3, 7)
    assert pad.tolist() == [[False, False, True, True, True, True, True],
                            [True, True, False, False, True, True, True],
                            [False, True, True, True, False, False, False]]
    # padding carries only the "not a point" embedding
    not_a_point = encoder.type_embed.weight[NOT_A_POINT]
    torch.testing.assert_close(tokens[pad], not_a_point.expand(int(pad.sum()), -1))


def test_positive_and_negative_points_differ_only_by_type(encoder):
    geo = pad_geometry([{"points": [[10.0, 20.0]], "point_labels": [1]},
                        {"points": [[10.0, 20.0]], "point_labels": [0]}])
    tokens, _ = encoder(geo, torch.zeros(2, 32, 4, 4))
    w = encoder.type_embed.weight
    torch.testing.assert_close(tokens[0, 0] - tokens[1, 0], w[0] - w[1])


def test_padded_values_do_not_leak(encoder):
    geo = _geometry()
    grid = torch.randn(3, 32, 4, 4)
    ref, pad = encoder(geo, grid)
    geo["points"][1] = 1e6  # row 1 has no points: whatever sits there is padding
    geo["exemplars"][0] = float("nan")
    got, _ = encoder(geo, grid)
    torch.testing.assert_close(got, ref)


def test_point_sine_code_equals_the_image_grid_code():
    h = w = 4
    grid = sine_position_encoding_2d(h, w, 32)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centres = torch.stack([(xs + 0.5) / w, (ys + 0.5) / h], -1).reshape(-1, 2)
    torch.testing.assert_close(sine_position_encoding_points(centres, 32), grid)


def test_exemplar_appearance_pools_inside_the_box(encoder):
    geo = pad_geometry([{"exemplars": [[0.0, 0.0, 31.0, 31.0]]}])  # the top-left 2x2 cells of a 4x4 grid
    grid = torch.randn(1, 32, 4, 4)
    ref, _ = encoder(geo, grid)
    outside = grid.clone()  # bilinear sampling reaches the next cell's centre, not the one after it
    outside[..., 3, :] += 5
    outside[..., :, 3] += 5
    got, _ = encoder(geo, outside)
    torch.testing.assert_close(got, ref)
    inside = grid.clone()
    inside[..., 0, 0] += 5
    got, _ = encoder(geo, inside)
    assert not torch.allclose(got[0, 4], ref[0, 4])  # the appearance token (after 2 box corners + 2 exemplar corners)
    torch.testing.assert_close(got[0, 2:4], ref[0, 2:4])  # the corners only know where the box is


def test_config_flag_and_state_dict(tmp_path):
    with pytest.raises(ValueError, match="geometric_prompts"):
        SamLiteConfig(geometric_prompts="yes")
    plain = SamLiteModel(SamLiteConfig.from_preset("tiny"), load_pretrained=False)
    geo = SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True), load_pretrained=False)
    extra = set(geo.trainable_state_dict()) - set(plain.trainable_state_dict())
    assert not hasattr(plain, "prompt_encoder")
    assert extra and all(k.startswith(("prompt_encoder.", "heads.iou")) for k in extra)
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in extra  # saved: it is random
    geo.save_pretrained(tmp_path)
    SamLiteModel.from_pretrained(tmp_path)


def test_shipped_checkpoint_loads_with_visual_prompts():
    model = SamLiteModel.from_pretrained(ROOT / "checkpoints" / "sam-lite-base")
    assert model.config.geometric_prompts and model.config.geometry_prior and hasattr(model, "prompt_encoder")
    assert model.priors["geometry"].pixel_proj.weight.abs().sum() > 0  # the dense prior was trained, not left at zero
