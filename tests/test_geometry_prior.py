"""The dense geometry prior: the maps it draws, the "like this" similarity, and that text rows never see it."""

import torch
import torch.nn.functional as F

from sam_lite import SamLiteConfig, SamLiteModel
from sam_lite.modeling.geometry_prior import geometry_prior, like_this
from sam_lite.structures import Prompt


def pad_geometry(rows):
    """The geometry tensors of rows of visual prompts (no text)."""
    return Prompt.from_rows([""] * len(rows), rows).geometry()


def _rows():
    return [None, {"points": torch.tensor([[10.0, 20.0], [50.0, 50.0]]), "point_labels": torch.tensor([1, 0])},
            {"box": torch.tensor([0.0, 0.0, 31.0, 15.0])}, {"exemplars": torch.tensor([[32.0, 32.0, 63.0, 63.0]])}]


def test_maps_draw_clicks_boxes_and_exemplars_where_they_are():
    maps = geometry_prior(pad_geometry(_rows()), size=16, image_size=64)  # stride 4
    assert maps.shape == (4, 5, 16, 16)
    assert maps[0].abs().sum() == 0  # a text row: nothing
    pos, neg = maps[1, 0], maps[1, 1]
    assert divmod(int(pos.argmax()), 16) == (20 // 4, 10 // 4) and pos.max() > 0.7  # the positive click's cell
    assert divmod(int(neg.argmax()), 16) == (50 // 4, 50 // 4)
    assert pos[15, 15] < 1e-3 and maps[1, 2:4].abs().sum() == 0
    box = maps[2, 2]
    assert box[:4, :8].eq(1).all() and box.sum() == 32  # pixels 0..31 x 0..15 = 8 x 4 cells
    assert maps[3, 3][8:, 8:].eq(1).all() and maps[3, 3].sum() == 64
    assert maps[:, 4].abs().sum() == 0  # no concept map given: no "like this"


def test_like_this_finds_cells_with_the_exemplar_concept():
    a, b = F.one_hot(torch.tensor(0), 4).float(), F.one_hot(torch.tensor(1), 4).float()
    concept = torch.zeros(1, 4, 8, 8)
    concept[0, :, :, :4] = a[:, None, None]
    concept[0, :, :, 4:] = b[:, None, None]
    small = torch.zeros(1, 4, 8, 8)
    small[0, 3, 2:4, 0:2] = 1  # an exemplar on the left half
    sim = like_this(concept, small)[0]
    assert torch.allclose(sim[:, :4], torch.ones(8, 4)) and torch.allclose(sim[:, 4:], torch.zeros(8, 4))
    assert like_this(concept, torch.zeros(1, 4, 8, 8)).abs().sum() == 0


def test_text_rows_are_independent_of_the_geometry_prior():
    """A text row decoded next to visual-prompt rows equals the same row decoded without any geometry, even with
    non-zero (trained) prior projections; a visual row does change when they change."""
    torch.manual_seed(0)
    model = SamLiteModel(SamLiteConfig.from_preset("tiny", geometric_prompts=True, geometry_prior=True)).eval()
    with torch.no_grad():
        model.priors["geometry"].token_proj.weight.normal_()
        model.priors["geometry"].pixel_proj.weight.normal_()
    s = model.config.image_size
    emb = model.encode_image(torch.randn(1, 3, s, s))
    rows = [None, {"points": torch.tensor([[10.0, 12.0]])}, {"exemplars": torch.tensor([[4.0, 4.0, 30.0, 30.0]])}]
    prompt = Prompt.from_rows(["dog", "", "cat"], rows)
    text, dog = model.encode_prompt(prompt), Prompt(["dog"])
    with torch.no_grad():
        both = model.decode(emb, prompt, text, torch.zeros(3, dtype=torch.long))
        alone = model.decode(emb, dog, model.encode_prompt(dog), torch.zeros(1, dtype=torch.long))
        torch.testing.assert_close(both["pred_masks"][0], alone["pred_masks"][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(both["pred_logits"][0], alone["pred_logits"][0], atol=1e-5, rtol=1e-4)
        model.priors["geometry"].pixel_proj.weight.zero_()
        model.priors["geometry"].token_proj.weight.zero_()
        off = model.decode(emb, prompt, text, torch.zeros(3, dtype=torch.long))
    assert not torch.allclose(both["pred_masks"][1], off["pred_masks"][1])
    torch.testing.assert_close(both["pred_masks"][0], off["pred_masks"][0])


def test_config_needs_geometric_prompts_for_the_prior():
    import pytest

    with pytest.raises(ValueError, match="geometry_prior needs geometric_prompts"):
        SamLiteConfig.from_preset("tiny", geometry_prior=True)
