"""The Gradio demo end to end: gradio_client against the app served on 127.0.0.1 with the tiny checkpoint."""

import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOGS = REPO / "examples" / "two_dogs.jpg"
STREET = REPO / "examples" / "street_cars_bus.jpg"


@pytest.fixture(scope="module")
def client(demo_url):
    return Client(demo_url, verbose=False)


def annotations(update: dict) -> list[dict]:
    """The AnnotatedImage output arrives as an update {'value': {'image', 'annotations'}, 'color_map': ...}."""
    value = update["value"] if "value" in update else update
    return value["annotations"]


def test_prompt_returns_instances(client):
    result, summary, prompts = client.predict(handle_file(str(DOGS)), "dog", 0.0, api_name="/segment")
    layers = annotations(result)
    assert layers, summary
    for layer in layers:
        assert re.fullmatch(r"dog #\d+ \(\d\.\d\d\)", layer["label"]), layer["label"]
        mask = np.asarray(Image.open(layer["image"]))
        assert mask.shape[:2] == (480, 640)  # masks come back at the photo's size
    assert Path(result["value"]["image"]).is_file()
    assert "presence" in summary and "dog" in summary
    assert prompts["value"] == "dog"


def test_several_prompts_get_distinct_colours(client):
    result, summary, prompts = client.predict(handle_file(str(STREET)), "car, bus, car", 0.0, api_name="/segment")
    labels = [a["label"] for a in annotations(result)]
    assert any(lab.startswith("car #") for lab in labels) and any(lab.startswith("bus #") for lab in labels)
    colours = result["color_map"]
    car = {c for lab, c in colours.items() if lab.startswith("car #")}
    bus = {c for lab, c in colours.items() if lab.startswith("bus #")}
    assert car and bus and not car & bus
    assert [c[0] for c in prompts["choices"]] == ["car", "bus"]  # repeats dropped


def test_same_image_reuses_the_embedding(client):
    client.predict(handle_file(str(DOGS)), "dog", 0.5, api_name="/segment")
    _, summary, _ = client.predict(handle_file(str(DOGS)), "toilet", 0.5, api_name="/segment")
    assert "reused from cache" in summary


def test_nothing_found_is_said_plainly(client):
    result, summary, _ = client.predict(handle_file(str(DOGS)), "red car", 1.0, api_name="/segment")
    assert annotations(result) == []
    assert re.search(r"no red car found, presence \d\.\d\d", summary), summary


@pytest.mark.parametrize("image, prompt, message", [
    (DOGS, "   ", "Please type what to segment"),
    (DOGS, " , ,", "Please type what to segment"),
    (None, "dog", "Please upload an image"),
    (REPO / "pyproject.toml", "dog", "as an image"),
])
def test_bad_input_is_a_clear_error(client, image, prompt, message):
    with pytest.raises(AppError, match=message) as info:
        client.predict(handle_file(str(image)) if image else None, prompt, 0.5, api_name="/segment")
    assert "Traceback" not in str(info.value)


def test_attention_view_returns_images(client):
    out = client.predict(handle_file(str(DOGS)), "black dog", 0.0, 2, api_name="/attention")
    concept, concept_caption, gallery, chart, caption, photo, self_gallery, words, self_caption = out
    # first the prompt's concept map (the tiny checkpoint has one), drawn on the photo at its size
    assert concept["visible"] is True
    with Image.open(concept["value"]) as im:
        assert im.size == (640, 480)
    assert "concept map: where 'black dog' is, by the image encoder's concept map (P(prompt | pixel))" in concept_caption
    assert re.search(r"Max probability \d\.\d\d", concept_caption), concept_caption
    # presence token + 2 queries, for each of the tiny model's 2 decoder layers
    assert len(gallery) == 3 * 2
    assert [g["caption"] for g in gallery][:2] == ["presence token · decoder layer 1", "presence token · decoder layer 2"]
    assert all(re.match(r"query \d+ \(", g["caption"]) for g in gallery[2:])
    for item in gallery + self_gallery:
        with Image.open(item["image"]) as im:
            assert im.size[0] > 0 and im.mode in ("RGB", "RGBA")
    for path in (chart, photo, words):
        with Image.open(path) as im:
            assert min(im.size) > 50
    assert len(self_gallery) == 1  # the tiny model has one encoder layer
    assert "black dog" in caption and "presence" in caption
    assert "token grid" in self_caption


class ConceptMapService:
    """A SegmentationService whose concept map is replaced by ``concept_map(photo) -> [H, W]``; counts the calls."""

    def __init__(self, service, concept_map):
        self.service, self.concept_map, self.calls = service, concept_map, []

    def predict(self, image, key, prompts, threshold, **kwargs):
        self.calls.append(kwargs)
        results, cached = self.service.predict(image, key, prompts, threshold, **kwargs)
        for r in results:
            r.concept_map = self.concept_map(image)
        return results, cached


@pytest.fixture(scope="module")
def service(tiny_checkpoint):
    from sam_lite import SamLitePredictor
    from sam_lite.demo import SegmentationService

    return SegmentationService(SamLitePredictor.from_pretrained(tiny_checkpoint))


def test_explain_shows_the_concept_map_on_the_photo(service):
    import torch

    from sam_lite.demo import explain

    # the real concept map of the tiny checkpoint: one forward pass asked for it, the image has the photo's size
    calls = []
    original = service.predict

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    service.predict = spy
    try:
        gallery, _, view, _, concept = explain(service, str(DOGS), "dog", 0.0, 2)
    finally:
        del service.predict
    assert calls == [{"return_attention": True, "return_concept_map": True}]
    assert concept.image is not None and concept.image.size == view.photo.size == (640, 480)
    assert "concept map: where 'dog' is" in concept.caption and "Max probability" in concept.caption
    assert len(gallery) == 3 * 2

    # a map that is 0.9 on the left half and 0 on the right: bright left, dim right, on an absolute scale
    def halves(photo):
        m = torch.zeros(photo.height, photo.width)
        m[:, : photo.width // 2] = 0.9
        return m

    fake = ConceptMapService(service, halves)
    *_, concept = explain(fake, str(STREET), "bus", 0.0, 1)
    assert len(fake.calls) == 1 and fake.calls[0]["return_concept_map"] is True
    heat = np.asarray(concept.image, dtype=np.float32)
    photo = np.asarray(Image.open(STREET).convert("RGB"), dtype=np.float32)
    assert heat.shape == photo.shape
    w = heat.shape[1]
    assert heat.std() > 10  # not a constant image
    left, right = heat[:, : w // 2 - 8], heat[:, w // 2 + 8:]
    assert left.mean() > right.mean() + 40, (left.mean(), right.mean())
    # the unlit half is the photo, evenly dimmed: no per-map normalisation turns "nowhere" into heat
    assert np.abs(right - 0.7 * photo[:, w // 2 + 8:]).mean() < 3
    assert "Max probability 0.90" in concept.caption and "50% of the photo above 0.5" in concept.caption


def test_concept_map_colours_are_absolute():
    from sam_lite.demo import probability_overlay

    photo = Image.new("RGB", (64, 48), (100, 150, 200))
    faint = np.asarray(probability_overlay(photo, np.full((12, 16), 0.02, np.float32)), dtype=np.float32)
    zero = np.asarray(probability_overlay(photo, np.zeros((48, 64), np.float32)), dtype=np.float32)
    sure = np.asarray(probability_overlay(photo, np.ones((6, 8), np.float32)), dtype=np.float32)
    assert faint.shape == zero.shape == sure.shape == (48, 64, 3)  # any map size is resized to the photo
    assert np.abs(faint - zero).max() < 6  # a faint map stays faint, it is not stretched to full brightness
    assert sure[..., 0].mean() > zero[..., 0].mean() + 100  # certainty is bright (inferno's yellow)


def test_checkpoint_without_concept_map_hides_it(tmp_path):
    import gradio as gr
    import torch

    from sam_lite import SamLiteConfig, SamLiteModel, SamLitePredictor
    from sam_lite.demo import SegmentationService, build_demo, explain

    with torch.random.fork_rng():
        torch.manual_seed(0)
        SamLiteModel(SamLiteConfig.from_preset("tiny", concept_map=False)).save_pretrained(tmp_path)
    predictor = SamLitePredictor.from_pretrained(tmp_path)
    assert not predictor.model.config.concept_map
    service = SegmentationService(predictor)
    gallery, chart, view, caption, concept = explain(service, str(DOGS), "dog", 0.0, 1)
    assert concept.image is None and "no concept map" in concept.caption
    assert len(gallery) == 2 * 2 and "dog" in caption  # the attention views still work

    demo = build_demo(service)
    component = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "concept-map")
    assert component.visible is False
    handler = next(f for f in demo.fns.values() if f.api_name == "attention")
    out = handler.fn(str(DOGS), "dog", 0.0, 1)
    assert isinstance(out[0], gr.Image) and out[0].visible is False and out[0].value is None
    assert "no concept map" in out[1]
    assert len(out[2]) == 2 * 2


def test_concurrent_requests_all_answered(demo_url):
    """12 visitors at once (the demo works on 2 at a time), each with its own client and prompt: every one gets its
    own answer, none is lost."""
    n = 12
    barrier = threading.Barrier(n, timeout=60)

    def one(i: int):
        c = Client(demo_url, verbose=False)
        barrier.wait()
        t0 = time.perf_counter()
        image = DOGS if i % 2 else STREET
        result, summary, _ = c.predict(handle_file(str(image)), f"thing {i}", 0.0, api_name="/segment")
        return i, result, summary, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(one, range(n), timeout=240))
    elapsed = time.perf_counter() - t0
    assert len(answers) == n
    for i, result, summary, _ in answers:
        assert f"thing {i}" in summary  # each request got its own answer back
        assert all(a["label"].startswith(f"thing {i} #") for a in annotations(result))
    assert elapsed < 240


def test_click_on_a_patch_maps_to_the_right_token():
    """The encoder self-attention view: a click at pixel (x, y) picks the token under it (padding excluded)."""
    from sam_lite.demo import AttentionView, patch_attention
    from sam_lite.processing import ImageMeta

    photo = Image.new("RGB", (640, 480), (90, 120, 150))
    grid = (4, 4)  # 64 px input: 48x64 of it is the photo, the last token row is padding
    eye = np.eye(16, dtype=np.float32)
    view = AttentionView(photo=photo, meta=ImageMeta((480, 640), (48, 64), 64), grid=grid, tokens=["[CLS]", "a", "[SEP]"],
                         encoder=[eye], fusion=[np.full((16, 3), 1 / 3, np.float32)], prompt="a")
    marked, gallery, chart, caption = patch_attention(view, 639, 479)
    assert "row 2, column 3" in caption  # not row 3: that one covers only padding
    assert marked.size == photo.size and chart is not None
    heat = np.asarray(gallery[0][0], dtype=np.float32)
    # the attended cell (row 2, col 3) is brightest: bottom-right region of the tile vs top-left
    assert heat[-40:-20, -60:-20].mean() > heat[:20, :20].mean() + 50
    _, _, _, caption = patch_attention(view, 0, 0)
    assert "row 0, column 0" in caption


def test_missing_checkpoint_exits_cleanly(tmp_path, monkeypatch, capsys):
    """app.py, run as a script in this process: one line on stderr, exit status 2."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["app.py", "--checkpoint", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "app.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "checkpoint directory not found" in err and "Traceback" not in err


def test_uploads_are_downsized_and_hashed_by_content():
    from sam_lite.demo import DISPLAY_MAX_SIDE, prepare_image

    big = np.zeros((1500, 5000, 3), np.uint8)
    big[:, :2500] = 200
    photo, key = prepare_image(big)
    assert max(photo.size) == DISPLAY_MAX_SIDE and photo.size == (1024, 307)
    assert prepare_image(big.copy())[1] == key  # same pixels, same key: the embedding is reused
    big[0, 0] = 1
    assert prepare_image(big)[1] != key
    with pytest.raises(ValueError, match="upload an image"):
        prepare_image(None)


def test_service_encodes_each_image_once(tiny_checkpoint):
    from sam_lite import SamLitePredictor
    from sam_lite.demo import SegmentationService, prepare_image

    service = SegmentationService(SamLitePredictor.from_pretrained(tiny_checkpoint))
    dogs, street = prepare_image(str(DOGS)), prepare_image(str(STREET))
    for prompt in ("dog", "cat", "toilet"):
        _, cached = service.predict(*dogs, [prompt], 0.5)
        assert cached == (prompt != "dog")
    service.predict(*street, ["car"], 0.5)
    assert service.image_encodings == 2
