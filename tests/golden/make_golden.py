"""Write tests/golden/shipped_examples.json: what the shipped checkpoint answers on the example photos.

    python tests/golden/make_golden.py

Run once on a code version whose behaviour is the reference; tests/test_golden.py then pins every later version to
it (same instances, scores within 1e-4, masks equal but for a few boundary pixels).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# photo -> (text prompts, visual prompts as predict() keyword arguments)
CASES = {
    "street_cars_bus.jpg": (["car", "bus", "red car", "horse"],
                            [{"box": [125, 290, 265, 400]}, {"points": [[195, 345]], "multimask_output": True},
                             {"exemplars": [[125, 290, 265, 400]]}]),
    "two_dogs.jpg": (["dog", "grass"], [{"points": [[200, 250], [50, 50]], "point_labels": [1, 0]}]),
    "man_with_dog.jpg": (["person", "dog"], []),
    "dinner_table.jpg": (["cup", "dining table"], []),
    "girls_goats_meadow.jpg": (["person", "sky", "sheep"], []),
}
SCORE_FLOOR = 0.05


def encode(masks) -> list[dict]:
    out = []
    for m in masks.numpy().astype(np.uint8):
        rle = mask_utils.encode(np.asfortranarray(m))
        out.append({"size": rle["size"], "counts": rle["counts"].decode()})
    return out


def result_record(r) -> dict:
    return {"prompt": r.prompt, "presence": r.presence, "scores": r.scores.tolist(), "boxes": r.boxes.tolist(),
            "masks": encode(r.masks),
            "iou_predictions": None if r.iou_predictions is None else r.iou_predictions.tolist()}


def run_cases(predictor) -> list[dict]:
    records = []
    for name, (texts, visuals) in CASES.items():
        predictor.set_image(ROOT / "examples" / name)
        for r in predictor.predict(texts, score_threshold=SCORE_FLOOR):
            records.append({"photo": name, "kind": "text", "kwargs": None, **result_record(r)})
        for kw in visuals:
            r = predictor.predict(**kw, score_threshold=SCORE_FLOOR)
            records.append({"photo": name, "kind": "visual", "kwargs": kw, **result_record(r)})
    return records


if __name__ == "__main__":
    import torch

    from sam_lite import SamLitePredictor

    torch.set_num_threads(2)
    records = run_cases(SamLitePredictor.from_pretrained())
    path = Path(__file__).with_name("shipped_examples.json")
    path.write_text(json.dumps({"score_floor": SCORE_FLOOR, "records": records}) + "\n")
    print(f"{len(records)} results -> {path} ({path.stat().st_size / 1e3:.0f} kB)")
