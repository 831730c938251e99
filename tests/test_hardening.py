"""Hostile inputs: broken images, odd prompts, broken checkpoints. Every failure must be a ValueError or a
FileNotFoundError whose message says what is wrong (and names the file where there is one); never a raw traceback
from PIL, safetensors or torch, and never a crash."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from sam_lite import SamLiteConfig, SamLiteModel, SamLitePredictor
from sam_lite.processing import MAX_IMAGE_SIDE, load_image


# --- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny model gains nothing from a second thread, and on a shared 2-core machine a second OpenMP thread
    waiting for a busy core makes every op slow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return SamLiteModel(SamLiteConfig.from_preset("tiny"))


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return SamLitePredictor(tiny_model)


@pytest.fixture(scope="module")
def good_ckpt(tiny_model, tmp_path_factory):
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "good")


@pytest.fixture
def ckpt(good_ckpt, tmp_path):
    """A fresh copy of a valid tiny checkpoint, to be broken by the test."""
    return shutil.copytree(good_ckpt, tmp_path / "ckpt")


@pytest.fixture(autouse=True)
def _pil_defaults(monkeypatch):
    # other libraries in the same process may flip these globals; the documented behaviour is for PIL's defaults
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS or 89_478_485)


def _jpeg_bytes(w=80, h=60, **save_kw) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(buf, "JPEG", **save_kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming ``width`` x ``height`` RGB, with one row of pixel data: a few hundred
    bytes that a naive decoder would expand to width*height*3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * width)))
            + chunk(b"IEND", b""))


def _masks_shape(predictor, prompt="car", mask_threshold=0.0):
    result = predictor.predict(prompt, score_threshold=0.0, max_instances=2, mask_threshold=mask_threshold)
    assert len(result) >= 1 and result.masks.dtype == torch.bool
    assert torch.isfinite(result.scores).all() and torch.isfinite(result.boxes).all()
    return tuple(result.masks.shape[1:])


# --- bad images ----------------------------------------------------------------------------------------------------
def test_corrupt_bytes(predictor, tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    with pytest.raises(ValueError, match="cannot read image") as e:
        predictor.set_image(path)
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match="cannot read image"):
        predictor.set_image(path.read_bytes())
    text = tmp_path / "text.jpg"
    text.write_text("hello, I am not a JPEG")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(text)


def test_zero_byte_file(predictor, tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty") as e:
        predictor.set_image(path)
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match="empty"):
        predictor.set_image(b"")


def test_missing_file(predictor, tmp_path):
    with pytest.raises(ValueError, match="not found"):
        predictor.set_image(tmp_path / "nope.jpg")


def test_truncated_jpeg_is_refused(predictor, tmp_path):
    """Documented behaviour: with PIL's default (ImageFile.LOAD_TRUNCATED_IMAGES = False) a truncated JPEG is a
    ValueError; nothing is cached."""
    data = _jpeg_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    predictor.reset_image()
    with pytest.raises(ValueError, match="truncated") as e:
        predictor.set_image(path)
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match="truncated"):
        predictor.set_image(data[: len(data) // 2])
    assert not predictor.is_image_set


def test_truncated_jpeg_when_pil_allows_it(predictor, tmp_path, monkeypatch):
    """If some library in the process sets LOAD_TRUNCATED_IMAGES, the partial image is used: no crash, masks at the
    image size."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _jpeg_bytes(80, 60)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    predictor.set_image(path)
    assert _masks_shape(predictor) == (60, 80)


@pytest.mark.parametrize("image", [Image.new("RGB", (1, 1), "red"), np.zeros((1, 1, 3), np.uint8)],
                         ids=["pil", "numpy"])
def test_one_pixel_image(predictor, image):
    predictor.set_image(image)
    # a random-weight model's masks may all miss the one pixel: a mask threshold far below any logit keeps them
    assert _masks_shape(predictor, mask_threshold=-1e4) == (1, 1)


def test_huge_image_is_downscaled(predictor):
    """8000 x 6000 is downscaled to longest side MAX_IMAGE_SIDE with a warning for the model; masks and boxes come back
    at the size the user gave, 8000 x 6000."""
    with pytest.warns(UserWarning, match="downscaled"):
        predictor.set_image(Image.new("RGB", (8000, 6000), (90, 120, 200)))
    assert predictor.image.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE * 3 // 4)
    result = predictor.predict("sky", score_threshold=0.0, max_instances=1)
    assert tuple(result.masks.shape) == (1, 6000, 8000)
    assert (result.boxes[:, 2] <= 8000).all() and (result.boxes[:, 3] <= 6000).all()


def test_decompression_bomb_header_is_refused(predictor, tmp_path):
    """A 300-byte PNG whose header claims 30000 x 30000 (900 MP): PIL's guard fires before any decoding."""
    data = _png_header_only(30000, 30000)
    assert len(data) < 100_000
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="decompression bomb") as e:
        predictor.set_image(path)
    assert str(path) in str(e.value)
    with pytest.raises(ValueError, match="decompression bomb"):
        predictor.set_image(data)


def test_decompression_bomb_guard_with_lowered_limit(predictor, tmp_path, monkeypatch):
    """PIL refuses images above 2 x Image.MAX_IMAGE_PIXELS; lower the limit so a real 200 x 100 PNG trips it."""
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    with pytest.raises(ValueError, match="decompression bomb"):
        predictor.set_image(path)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1", "CMYK"])
def test_image_modes(predictor, tmp_path, mode):
    img = Image.new(mode, (30, 20))
    path = tmp_path / f"img_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path)
    for source in (img, path):
        predictor.set_image(source)
        assert predictor.image.mode == "RGB" and predictor.image.size == (30, 20)
        assert _masks_shape(predictor) == (20, 30)


def test_rgba_transparent_becomes_white(predictor):
    predictor.set_image(Image.new("RGBA", (30, 20), (0, 0, 0, 0)))
    assert np.asarray(predictor.image).min() == 255


def test_16_bit_png(predictor, tmp_path):
    a = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I")
    predictor.set_image(path)
    rgb = np.asarray(predictor.image)
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3)
    assert rgb[..., 0].max() == 255 and rgb[..., 0].min() == 0  # full range kept (>> 8), not clipped
    assert (rgb[..., 0] == rgb[..., 1]).all()
    assert _masks_shape(predictor) == (20, 30)
    predictor.set_image(a)  # the same as a uint16 numpy array
    assert np.array_equal(np.asarray(predictor.image), rgb)


@pytest.mark.parametrize("source", ["path", "pil", "bytes"])
def test_exif_rotated_jpeg(predictor, tmp_path, source):
    """Stored 60 wide x 40 high with a red left column, EXIF orientation 6 (rotate 90 deg clockwise to view):
    the predictor sees 40 x 60 with the red band at the top, and masks come back 60 high x 40 wide."""
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :12] = (255, 0, 0)
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    src = {"path": path, "pil": Image.open(path), "bytes": path.read_bytes()}[source]
    predictor.set_image(src)
    assert predictor.image.size == (40, 60)
    rgb = np.asarray(predictor.image).astype(int)
    assert rgb[:8, :, 0].mean() > 200 and rgb[-20:, :, 0].mean() < 50
    assert _masks_shape(predictor) == (60, 40)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 5, 3), np.uint8), "zero size"),
    (np.zeros((5, 5, 2), np.uint8), "shape"),
    (np.full((5, 5, 3), np.nan, np.float32), "NaN"),
    (np.zeros((5, 5, 3), np.int64), "dtype"),
    (None, "unsupported image type"),
    ("", "not found"),
], ids=["empty-array", "two-channels", "nan", "int64", "none", "empty-path"])
def test_bad_arrays_and_types(predictor, bad, match):
    with pytest.raises(ValueError, match=match):
        predictor.set_image(bad)


# --- bad prompts ---------------------------------------------------------------------------------------------------
@pytest.fixture
def image_set(predictor):
    predictor.set_image((np.random.default_rng(1).random((24, 32, 3)) * 255).astype(np.uint8))
    return predictor


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t  \r"], ids=["empty", "spaces", "whitespace"])
def test_empty_prompt(image_set, prompt):
    with pytest.raises(ValueError, match="empty"):
        image_set.predict(prompt)
    with pytest.raises(ValueError, match="empty"):
        image_set.predict(["car", prompt])


@pytest.mark.parametrize("prompt", [None, 123, b"car"], ids=["none", "int", "bytes"])
def test_prompt_of_wrong_type(image_set, prompt):
    with pytest.raises(ValueError, match="string"):
        image_set.predict(prompt)


def test_no_prompts(image_set):
    with pytest.raises(ValueError, match="no prompt"):
        image_set.predict([])


def test_very_long_prompt_is_truncated(image_set):
    prompt = ("the red car parked " * 600)[:10_000]
    assert len(prompt) == 10_000
    with pytest.warns(UserWarning, match="truncated"):
        result = image_set.predict(prompt, score_threshold=0.0)
    assert result.masks.shape[1:] == (24, 32) and len(result) >= 1


@pytest.mark.parametrize("prompt", ["🚗", "🐶 dog 🐶", "красная машина", "赤い車", "سيارة حمراء", "कुत्ता", "e\u0301",
                                    "\u200b", "\x00", "a" * 500],
                         ids=["emoji", "emoji-mixed", "cyrillic", "japanese", "arabic", "devanagari", "combining",
                              "zero-width", "nul", "one-long-word"])
def test_unusual_scripts(image_set, prompt):
    result = image_set.predict(prompt, score_threshold=0.0)
    assert result.masks.shape[1:] == (24, 32) and 0.0 <= result.presence <= 1.0


@pytest.mark.parametrize("prompt", ["!!!", "...???", "#$%&*()", "-"], ids=["bang", "dots", "symbols", "dash"])
def test_punctuation_prompt(image_set, prompt):
    result = image_set.predict(prompt, score_threshold=0.0)
    assert result.masks.shape[1:] == (24, 32)


def test_predict_before_set_image(tiny_model):
    with pytest.raises(ValueError, match="set_image"):
        SamLitePredictor(tiny_model).predict("car")


# --- bad checkpoints -----------------------------------------------------------------------------------------------
def _edit_config(ckpt, **changes):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(changes)
    (ckpt / "config.json").write_text(json.dumps(cfg))


def test_good_checkpoint_loads(good_ckpt):
    assert isinstance(SamLiteModel.from_pretrained(good_ckpt), SamLiteModel)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found") as e:
        SamLiteModel.from_pretrained(tmp_path / "does-not-exist")
    assert "does-not-exist" in str(e.value)


def test_missing_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SamLiteModel.from_pretrained(ckpt)


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        SamLiteModel.from_pretrained(ckpt)


@pytest.mark.parametrize("keep", [0, 20, 0.5], ids=["empty", "header-cut", "half"])
def test_truncated_safetensors(ckpt, keep):
    w = ckpt / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match="safetensors") as e:
        SamLiteModel.from_pretrained(ckpt)
    assert str(w) in str(e.value)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '"tiny"'], ids=["syntax", "empty", "list", "string"])
def test_bad_config_json(ckpt, text):
    (ckpt / "config.json").write_text(text)
    with pytest.raises(ValueError) as e:
        SamLiteModel.from_pretrained(ckpt)
    assert "config.json" in str(e.value)


def test_unknown_config_field(ckpt):
    _edit_config(ckpt, hidden_size=768)
    with pytest.raises(ValueError, match="unknown config field.*hidden_size") as e:
        SamLiteModel.from_pretrained(ckpt)
    assert "config.json" in str(e.value)


def test_invalid_config_value(ckpt):
    _edit_config(ckpt, num_heads=3)  # 32 is not divisible by 3
    with pytest.raises(ValueError, match="num_heads") as e:
        SamLiteModel.from_pretrained(ckpt)
    assert "config.json" in str(e.value)


def test_config_shapes_do_not_match_weights(ckpt):
    _edit_config(ckpt, d_model=64, num_heads=2)
    with pytest.raises(ValueError, match="does not match") as e:
        SamLiteModel.from_pretrained(ckpt)
    assert "model.safetensors" in str(e.value) and "config.json" in str(e.value) and "shape" in str(e.value)


def test_config_layers_do_not_match_weights(ckpt):
    _edit_config(ckpt, decoder_layers=3)
    with pytest.raises(ValueError, match="missing tensors") as e:
        SamLiteModel.from_pretrained(ckpt)
    assert "model.safetensors" in str(e.value)


def test_pickle_renamed_to_safetensors_is_refused(ckpt, tmp_path):
    """A torch.save'd dict named model.safetensors is rejected by the safetensors parser: nothing is unpickled."""
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    w = ckpt / "model.safetensors"
    torch.save({"x": torch.zeros(2), "boom": Boom()}, w)
    with pytest.raises(ValueError, match="not a readable safetensors file") as e:
        SamLiteModel.from_pretrained(ckpt)
    assert str(w) in str(e.value)
    assert not marker.exists()


def test_pickle_only_checkpoint_mentions_pickle(ckpt, tiny_model):
    (ckpt / "model.safetensors").unlink()
    torch.save(tiny_model.trainable_state_dict(), ckpt / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle") as e:
        SamLiteModel.from_pretrained(ckpt)
    assert "pytorch_model.bin" in str(e.value) and "model.safetensors" in str(e.value)


def test_predictor_from_pretrained_errors_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SamLitePredictor.from_pretrained(tmp_path / "nothing-here")
