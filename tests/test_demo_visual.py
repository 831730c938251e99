"""The demo's visual prompts (tiny random-weight checkpoints): box parsing, clicks -> state, the three pixel grids
(canvas, upload, the downsized photo the predictor sees), the Segment tab's results and its error messages."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam_lite.demo import Clicks, add_click, load_photo, parse_box, segment_any, visual_prompt
from sam_lite.demo.visual import CORNER, NEGATIVE, POSITIVE, new_photo, prompt_canvas

REPO = Path(__file__).resolve().parent.parent
DOGS = REPO / "examples" / "two_dogs.jpg"  # 640x480: the demo keeps it at that size
STREET = REPO / "examples" / "street_cars_bus.jpg"


@pytest.fixture(scope="module")
def service(tiny_geometric_checkpoint):
    from sam_lite import SamLitePredictor
    from sam_lite.demo import SegmentationService

    return SegmentationService(SamLitePredictor.from_pretrained(tiny_geometric_checkpoint))


@pytest.fixture
def spy(service):
    """The keyword arguments the predictor receives, call by call."""
    calls, original = [], service.predictor.predict

    def predict(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    service.predictor.predict = predict
    yield calls
    del service.predictor.predict


def labels(out) -> list[str]:
    (_, layers), _, _, _ = out
    return [label for _, label in layers]


@pytest.mark.parametrize("text, box", [("10,20,30,40", [10, 20, 30, 40]), (" 10 20, 30.5 ,40 ", [10, 20, 30.5, 40]),
                                       ("", None), ("  ", None), (None, None)])
def test_parse_box(text, box):
    assert parse_box(text) == box


@pytest.mark.parametrize("text", ["10,20,30", "a,b,c,d", "1,2,3,4,5", "1,2,3,nan"])
def test_malformed_box_is_a_clear_error(text):
    with pytest.raises(ValueError, match=r"four numbers x0,y0,x1,y1 \(pixels of the photo\)"):
        parse_box(text)


def test_clicks_build_points_and_boxes():
    c = new_photo(str(DOGS))
    assert c.photo.upload_size == c.photo.image.size == (640, 480)
    c, box = add_click(c, "", POSITIVE, [100, 200])
    c, box = add_click(c, box, NEGATIVE, [300, 50])
    assert c.points == ((100, 200), (300, 50)) and c.labels == (1, 0) and box == ""
    c, box = add_click(c, box, CORNER, [400, 300])
    assert c.corner == (400, 300) and box == ""
    c, box = add_click(c, box, CORNER, [50, 100])  # any two opposite corners, in any order
    assert c.corner is None and box == "50,100,400,300"
    c, box = add_click(c, box, CORNER, [10, 10])  # a third corner starts a new box
    assert c.corner == (10, 10) and box == ""
    with pytest.raises(ValueError, match=r"corners \(10, 10\) and \(10, 90\) make a box of zero area"):
        add_click(c, box, CORNER, [10, 90])
    assert len(c.points) == 2  # the points stay until 'Clear clicks' or a new photo
    assert new_photo(str(STREET)).points == () and new_photo(None) == Clicks()
    with pytest.raises(ValueError, match="upload an image"):
        add_click(Clicks(), "", POSITIVE, [1, 1])


def test_clicks_are_drawn_on_the_canvas():
    c = new_photo(str(DOGS))
    assert np.array_equal(np.asarray(prompt_canvas(c, "", False)), np.asarray(c.photo.image))  # nothing clicked yet
    c, box = add_click(c, "", POSITIVE, [100, 200])
    c, box = add_click(c, box, NEGATIVE, [300, 50])
    photo = np.asarray(c.photo.image, dtype=np.int32)
    canvas = np.asarray(prompt_canvas(c, "20,20,200,150", False), dtype=np.int32)
    assert canvas.shape == photo.shape
    green, red, yellow = canvas[200, 100], canvas[50, 300], canvas[20, 110]
    assert green[1] > 150 and green[0] < 80, green
    assert red[0] > 150 and red[1] < 80, red
    assert yellow[0] > 200 and yellow[1] > 150 and yellow[2] < 80, yellow  # the box outline
    assert np.abs(canvas[400:, 400:] - photo[400:, 400:]).max() == 0  # the rest is the photo
    assert prompt_canvas(Clicks(), "", False) is None


def test_coordinates_of_a_downsized_photo():
    """A 2048x1536 upload is shown and predicted at 1024x768: clicks on the canvas are kept (and shown, typed) in
    upload pixels and reach the predictor in pixels of its 1024 px photo."""
    big = np.zeros((1536, 2048, 3), np.uint8)
    c = new_photo(big)
    assert c.photo.image.size == (1024, 768) and c.photo.upload_size == (2048, 1536)
    c, _ = add_click(c, "", POSITIVE, [100, 50])
    assert c.points == ((200, 100),)  # the centre of canvas pixel 100 is at upload pixel 200.5
    kwargs = visual_prompt(c, "400,200,2000,1500", False, c.photo)
    np.testing.assert_allclose(kwargs["points"], [[99.75, 49.75]])
    np.testing.assert_allclose(kwargs["box"], [199.75, 99.75, 999.75, 749.75])
    assert kwargs["point_labels"] == [1]
    # a box that fits the photo the predictor sees but not the upload is refused in the user's pixels
    with pytest.raises(ValueError, match=r"outside the photo \(2048x1536 pixels\)"):
        visual_prompt(c, "0,0,2100,10", False, c.photo)
    # find all: the same box as an exemplar
    assert visual_prompt(Clicks(c.photo), "400,200,2000,1500", True, c.photo) == {
        "exemplars": [[199.75, 99.75, 999.75, 749.75]]}


def test_huge_upload_results_come_back_at_the_demo_size(service, spy):
    """Past 4096 px load_image itself downscales and records the original size: the demo's copy must not carry it,
    or the predictor would check clicks against, and return masks at, the original size."""
    from sam_lite.processing import ORIGINAL_SIZE_KEY

    big = np.zeros((1500, 5000, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "downscaled to longest side 4096"
        photo = load_photo(big)
    assert photo.upload_size == (5000, 1500) and photo.image.size == (1024, 307)
    assert ORIGINAL_SIZE_KEY not in photo.image.info
    c, _ = add_click(Clicks(photo), "", POSITIVE, [1023, 306])
    assert c.points == ((4997, 1497),)  # canvas pixel 1023 covers upload pixels 4995..4999
    r, _ = service.predict_visual(photo.image, photo.key, None, 0.5, **visual_prompt(c, "", False, photo))
    assert tuple(r.masks.shape[-2:]) == (307, 1024)
    np.testing.assert_allclose(spy[-1]["points"], [[1023.0, 306.0]], atol=0.3)


def test_positive_point_segments_one_object_and_reuses_the_embedding(service, spy):
    before = service.image_encodings
    c, box = add_click(new_photo(str(DOGS)), "", POSITIVE, [320, 240])
    out = segment_any(service, str(DOGS), "", 0.5, c, box)
    (marked, layers), colours, summary, prompts = out
    assert len(layers) == 1 and re.fullmatch(r"object #1 \(IoU \d\.\d\d\)", layers[0][1])
    assert layers[0][0].shape == (480, 640) and layers[0][0].any()
    assert set(colours) == {layers[0][1]} and prompts == []
    assert "object under the clicks" in summary and "+ (320, 240)" in summary and "image encoded" in summary
    assert spy[-1]["points"] == [[320.0, 240.0]] and spy[-1]["point_labels"] == [1]
    assert np.asarray(marked)[240, 320, 1] > 150  # the click is drawn on the result too

    c, box = add_click(c, box, NEGATIVE, [10, 10])  # a new click on the same photo: only the decoder runs
    _, _, summary, _ = segment_any(service, str(DOGS), "dog", 0.5, c, box)
    assert "reused from cache" in summary and "the text 'dog'" in summary
    assert service.image_encodings == before + 1
    assert spy[-1]["point_labels"] == [1, 0]


def test_three_alternatives_ranked_by_predicted_iou(service):
    out = segment_any(service, str(DOGS), "", 0.5, Clicks(load_photo(str(DOGS))), "100,80,500,400",
                      multimask=True)
    found = labels(out)
    assert 1 <= len(found) <= 3
    ious = [float(re.fullmatch(r"object #\d \(IoU (\d\.\d\d)\)", label).group(1)) for label in found]
    assert ious == sorted(ious, reverse=True)


def test_find_all_like_this_uses_the_threshold(service, spy):
    out = segment_any(service, str(DOGS), "", 0.0, Clicks(load_photo(str(DOGS))), "100,80,500,400", find_all=True)
    found = labels(out)
    assert found and all(re.fullmatch(r"like this #\d+ \(\d\.\d\d\)", label) for label in found)
    assert spy[-1]["exemplars"] == [[100.0, 80.0, 500.0, 400.0]] and "box" not in spy[-1]
    assert "every instance like the box" in out[2]
    strict = segment_any(service, str(DOGS), "", 1.0, Clicks(load_photo(str(DOGS))), "100,80,500,400",
                         find_all=True)
    assert labels(strict) == [] and "none above the threshold" in strict[2]


def test_text_only_still_works(service):
    out = segment_any(service, str(DOGS), "dog", 0.0, Clicks(load_photo(str(DOGS))), "")
    assert labels(out) and all(label.startswith("dog #") for label in labels(out))


@pytest.mark.parametrize("image, text, box, find_all, clicked, message", [
    (DOGS, "", "10,20,30", False, False, "four numbers"),
    (DOGS, "", "10,10,10,50", False, False, "empty or flipped"),
    (DOGS, "", "0,0,700,10", False, False, r"outside the photo \(640x480 pixels\)"),
    (DOGS, "", "", True, True, "'Find all like this' needs a box"),
    (DOGS, "car, dog", "", False, True, "one text prompt or none, got 2"),
    (STREET, "", "", False, True, "made on another photo"),
    (None, "", "", False, True, "Please upload an image"),
])
def test_bad_visual_input_is_a_clear_error(service, image, text, box, find_all, clicked, message):
    c = add_click(new_photo(str(DOGS)), "", POSITIVE, [5, 5])[0] if clicked else Clicks()
    with pytest.raises(ValueError, match=message):
        segment_any(service, str(image) if image else None, text, 0.5, c, box, find_all)


def test_one_corner_alone_asks_for_the_other():
    c, box = add_click(new_photo(str(DOGS)), "", CORNER, [5, 5])
    with pytest.raises(ValueError, match="click the opposite corner"):
        visual_prompt(c, box, False, c.photo)


def test_demo_shows_visual_prompts_only_for_geometric_checkpoints(service, tiny_checkpoint):
    import gradio as gr

    from sam_lite import SamLitePredictor
    from sam_lite.demo import SegmentationService, build_demo

    def ids(demo):
        return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}

    demo = build_demo(service)
    assert "prompt-canvas" in ids(demo) and "text-only-note" not in ids(demo)
    handler = next(f for f in demo.fns.values() if f.api_name == "segment")
    with pytest.raises(gr.Error, match="four numbers"):  # the handler turns ValueErrors into messages
        handler.fn(str(DOGS), "", 0.5, "1,2,3", False, False, Clicks())

    text_only = SegmentationService(SamLitePredictor.from_pretrained(tiny_checkpoint))
    demo = build_demo(text_only)
    assert "prompt-canvas" not in ids(demo)
    assert "text prompts only" in ids(demo)["text-only-note"].value
    handler = next(f for f in demo.fns.values() if f.api_name == "segment")
    with pytest.raises(gr.Error, match="this checkpoint takes text prompts only"):  # the page has no box field
        handler.fn(str(DOGS), "", 0.5, "10,10,50,50")


def test_api_takes_a_typed_box(geometric_demo_url):
    from gradio_client import Client, handle_file

    client = Client(geometric_demo_url, verbose=False)
    result, summary, _ = client.predict(handle_file(str(DOGS)), "", 0.5, "100,80,500,400", api_name="/segment")
    assert [a["label"][:9] for a in result["value"]["annotations"]] == ["object #1"]
    assert "box 100,80,500,400" in summary
    # the text-only call of the other tests works here too: the visual inputs have defaults
    result, summary, _ = client.predict(handle_file(str(DOGS)), "dog", 0.0, api_name="/segment")
    assert all(a["label"].startswith("dog #") for a in result["value"]["annotations"])
    assert Image.open(result["value"]["image"]).size == (640, 480)
