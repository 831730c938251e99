"""Input handling: prompts and uploads checked, one shared predictor with its image embedding cache, and the
decorators that turn bad input into a readable message."""

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image

from ..predictor import PredictionResult, SamLitePredictor
from ..processing import ORIGINAL_SIZE_KEY, load_image
from .events import ASK, handle_errors

log = logging.getLogger("sam_lite.demo")

DISPLAY_MAX_SIDE = 1024  # uploads are downsized to this before anything else (the model itself sees 320 px)
MAX_PROMPTS = 8
MAX_PROMPT_CHARS = 200
MAX_INSTANCES = 20  # per prompt


def parse_prompts(text: str | None) -> list[str]:
    """'red car, person' -> ['red car', 'person'] (blank entries and repeats dropped). ValueError when empty."""
    if text is None or not str(text).strip():
        raise ValueError("Please type what to segment, e.g. 'red car' (several things: 'car, person').")
    text = str(text)
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"The prompt is too long ({len(text)} characters); keep it under {MAX_PROMPT_CHARS}.")
    prompts, seen = [], set()
    for p in text.split(","):
        p = " ".join(p.split())
        if p and p.lower() not in seen:
            seen.add(p.lower())
            prompts.append(p)
    if not prompts:
        raise ValueError("Please type what to segment, e.g. 'red car' (several things: 'car, person').")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"At most {MAX_PROMPTS} comma-separated prompts at once, got {len(prompts)}.")
    return prompts


def require_image(image) -> None:
    if image is None or (isinstance(image, str) and not image):
        raise ValueError("Please upload an image (or pick one of the examples) first.")


@dataclass(frozen=True)
class Photo:
    """An upload as the demo uses it."""

    image: Image.Image  # RGB, longest side <= DISPLAY_MAX_SIDE: what the predictor sees and the results are drawn on
    key: str  # content hash of ``image`` (the embedding cache's key)
    upload_size: tuple[int, int]  # (W, H) of the upload: the pixels visual prompts are given in, as in the CLI


def load_photo(image) -> Photo:
    """Anything :func:`load_image` takes -> :class:`Photo` (downsized to DISPLAY_MAX_SIDE, hashed)."""
    require_image(image)
    pil = load_image(image)
    h, w = pil.info.get(ORIGINAL_SIZE_KEY, (pil.height, pil.width))
    if max(pil.size) > DISPLAY_MAX_SIDE:
        s = DISPLAY_MAX_SIDE / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * s)), max(1, round(pil.height * s))), Image.BILINEAR)
    # the predictor would return masks at that original size; the demo works at the size of its own copy
    pil.info.pop(ORIGINAL_SIZE_KEY, None)
    arr = np.asarray(pil)
    key = hashlib.blake2b(arr.tobytes(), digest_size=16)
    key.update(repr(arr.shape).encode())
    return Photo(pil, key.hexdigest(), (w, h))


def prepare_image(image) -> tuple[Image.Image, str]:
    """Anything :func:`load_image` takes -> (RGB image with longest side <= 1024 px, content hash)."""
    photo = load_photo(image)
    return photo.image, photo.key


class SegmentationService:
    """The shared predictor behind a lock; the last image's embedding is reused while its hash is unchanged."""

    def __init__(self, predictor: SamLitePredictor) -> None:
        self.predictor = predictor
        self._lock = threading.Lock()
        self._key: str | None = None
        self.image_encodings = 0  # how many times an image embedding was computed (tests read it)

    @contextmanager
    def _image(self, image: Image.Image, key: str) -> Iterator[bool]:
        """Hold the lock with ``image`` set on the predictor; yields whether its cached embedding was reused."""
        with self._lock:
            cached = self._key == key and self.predictor.is_image_set
            if not cached:
                self._key = None
                self.predictor.set_image(image)
                self._key = key
                self.image_encodings += 1
            yield cached

    def predict(self, image: Image.Image, key: str, prompts: list[str], threshold: float,
                return_attention: bool = False, return_concept_map: bool = False
                ) -> tuple[list[PredictionResult], bool]:
        """-> (one result per prompt, whether the cached embedding was reused)."""
        with self._image(image, key) as cached:
            results = self.predictor.predict(prompts, score_threshold=float(threshold),
                                             return_attention=return_attention, max_instances=MAX_INSTANCES,
                                             return_concept_map=return_concept_map)
        return results, cached

    def predict_visual(self, image: Image.Image, key: str, prompt: str | None, threshold: float,
                       multimask: bool = False, **visual) -> tuple[PredictionResult, bool]:
        """Points / point_labels / box / exemplars in pixels of ``image`` (see :meth:`SamLitePredictor.predict`)
        -> (the result, whether the cached embedding was reused)."""
        with self._image(image, key) as cached:
            result = self.predictor.predict(prompt, **visual, multimask_output=multimask,
                                            score_threshold=float(threshold), max_instances=MAX_INSTANCES)
        return result, cached

    def warm_up(self) -> None:
        """The first prompt of a process pays for one-off set-up (class-name embeddings); pay it at start-up."""
        blank = Image.new("RGB", (64, 48), (127, 127, 127))
        self.predict(blank, "warm-up", ["warm up"], 1.0)


def user_errors(fn):
    """Bad input -> gr.Error with the message; anything unexpected -> a short gr.Error (details in the log): the
    ``ASK`` mode of :func:`.events.handle_errors`, the one error handling of every handler of the demo."""
    return handle_errors(fn, ASK)


def readable_upload_errors(component: gr.Image) -> gr.Image:
    """Make upload decoding failures of ``component`` a readable gr.Error instead of a bare 'Error'.

    (Done on the instance: a gr.Image subclass would make Gradio write a ``.pyi`` stub next to this file.)
    """
    original = component.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception as e:
            name = getattr(payload, "orig_name", None) or "the uploaded file"
            if isinstance(e, (OSError, SyntaxError, ValueError, Image.DecompressionBombError)):
                raise gr.Error(f"Could not read {name!r} as an image: it is not a supported, intact image file "
                               f"(JPEG, PNG, WebP, ...).") from None
            log.exception("decoding an upload failed")
            raise gr.Error(f"Could not read {name!r} as an image ({type(e).__name__}).") from None

    component.preprocess = preprocess
    return component
