"""How well the concept map alone labels pixels: top-1 accuracy and mean IoU over the vocabulary on validation photos.

    python scripts/concept_map_eval.py --checkpoint checkpoints/sam-lite-base [--data DIR] [--out map.json]

Each fully labelled validation photo is resized and centre-cropped to the model's input (no augmentation), its dense
target built as in training (stride 4: a concept index where a labelled annotation covers most of a cell, the rest
left out), and the map's argmax over concepts + background compared with it on the annotated cells. Photos that label
stuff too (``stuff_labelled``) are also scored with background included, where every pixel is known.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam_lite import SamLiteModel  # noqa: E402
from sam_lite.data import CocoConcepts, ConceptSegmentationDataset  # noqa: E402


@torch.inference_mode()
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/sam-lite-base")
    ap.add_argument("--data", default="../shared/data/coco_mini")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    model = SamLiteModel.from_pretrained(args.checkpoint)
    if not model.config.concept_map:
        raise SystemExit(f"error: {args.checkpoint} has no concept map")
    coco = CocoConcepts(args.data)
    if coco.vocabulary != model.config.concept_names:
        raise SystemExit("error: the dataset's concept names differ from the checkpoint's vocabulary")
    ids = [i for i in coco.split("val") if coco.is_fully_labelled(i)]
    data = ConceptSegmentationDataset(coco, ids, model.config.image_size, augment=False, copy_paste_prob=0.0)
    c = len(coco.vocabulary) + 1
    inter, union = torch.zeros(c), torch.zeros(c)
    hits = cells = 0
    for k in range(len(data)):
        item = data[k]
        emb = model.encode_image(model.preprocess(item["image"][None]))
        logits = F.interpolate(model.concept_logits(emb), size=item["dense_labels"].shape, mode="bilinear",
                               align_corners=False)[0]
        pred, labels = logits.argmax(0), item["dense_labels"]
        annotated = labels >= 0
        hits += int((pred[annotated] == labels[annotated]).sum())
        cells += int(annotated.sum())
        if coco.stuff_labelled[item["image_id"]]:  # every pixel known: unannotated cells are background
            known = labels >= -1
            target = torch.where(labels == -1, torch.full_like(labels, c - 1), labels)[known]
            p = pred[known]
            inter += torch.bincount(target[p == target], minlength=c).float()
            union += torch.bincount(target, minlength=c).float() + torch.bincount(p, minlength=c).float()
    union = union - inter
    seen = union > 0
    res = {"checkpoint": args.checkpoint, "photos": len(data), "annotated_cells": cells,
           "top1_accuracy_annotated": hits / max(1, cells),
           "stuff_photos_mIoU": float((inter[seen] / union[seen]).mean()) if seen.any() else None,
           "stuff_photos_classes": int(seen.sum())}
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
