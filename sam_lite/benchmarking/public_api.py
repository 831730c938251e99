"""What a user waits for: :class:`sam_lite.SamLitePredictor` with a JPEG path in and masks at the photo's size out.

``set_image(path)`` decodes the file every time; every "new prompt" is a word list never asked before in the process
(so MiniLM always runs and nothing is emptied between calls); "photo -> masks" is both. Measured at the benchmark's
thread count and at the other one (1 thread: what sam-lite gets when the second core is busy).
"""

from __future__ import annotations

import os
import random

import torch

from .common import EXAMPLE_IMAGE, log
from .timing import timeit

# short nouns and adjectives: 1-3 of them make a prompt of 3-7 MiniLM tokens, like "red car" or "dog on grass"
WORDS = ("red blue green white black yellow small big old wooden metal striped car bus truck bike dog cat horse "
         "sheep cow bird person child woman man tree sky grass road sign light cup bowl table chair sofa bed window "
         "door boat train plane kite ball bag umbrella bottle plate clock phone laptop flower field wall").split()


class NewPrompts:
    """An endless supply of prompts never produced before by this object: 1-3 random words (seeded)."""

    def __init__(self, seed: int = 0, avoid: set[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.seen: set[str] = set(avoid or ())

    def __call__(self) -> str:
        while True:
            p = " ".join(self.rng.sample(WORDS, self.rng.randint(1, 3)))
            if p not in self.seen:
                self.seen.add(p)
                return p


def bench_public_api(predictor, path, runs: int, warmup: int, threshold: float | None = None) -> dict:
    """set_image(path), predict(new prompt), photo -> masks; medians (ms) at the current thread count. Checks that the
    masks come back at the photo's size."""
    cache = getattr(predictor.model.text_encoder, "_cache", {})
    prompts = NewPrompts(seed=torch.get_num_threads(), avoid=set(cache))
    kw = {} if threshold is None else {"score_threshold": threshold}
    path = str(path)
    predictor.set_image(path)
    h, w = predictor.image_meta.original_size
    masks = predictor.predict(prompts(), **kw).masks
    if tuple(masks.shape[-2:]) != (h, w):
        raise AssertionError(f"masks {tuple(masks.shape)} are not at the photo's size {(h, w)}")

    def photo_to_masks():
        predictor.set_image(path)
        return predictor.predict(prompts(), **kw)

    return {"threads": torch.get_num_threads(), "photo_size": [h, w],
            "set_image": timeit(lambda: predictor.set_image(path), runs, warmup),
            "predict_new_prompt": timeit(lambda: predictor.predict(prompts(), **kw), runs, warmup),
            "end_to_end": timeit(photo_to_masks, runs, warmup)}


def bench_public_api_threads(predictor, args, threshold: float | None = None, path=EXAMPLE_IMAGE) -> list[dict]:
    """:func:`bench_public_api` at the current thread count, then (unless ``alt-threads`` is skipped) at the other
    one; one dict per thread count."""
    if not os.path.isfile(path):
        log(f"[ours] public API: {path} missing, not measured")
        return []
    log("[ours] public API: JPEG path -> set_image, new prompts, photo -> masks ...")
    out = [bench_public_api(predictor, path, args.runs, args.warmup, threshold)]
    n = torch.get_num_threads()
    alt = 1 if n != 1 else (os.cpu_count() or 1)
    if "alt-threads" not in args.skip and alt != n:
        torch.set_num_threads(alt)
        try:
            out.append(bench_public_api(predictor, path, args.runs, args.warmup, threshold))
        finally:
            torch.set_num_threads(n)
    return out
