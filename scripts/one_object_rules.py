"""Which score should pick the one object a click or a box asks for? Measured on fully labelled TRAINING photos.

    python scripts/one_object_rules.py --checkpoint runs/geo-prior/final --photos 15

For each instance (a click at the centre of its largest inscribed region, and its tight box) the model decodes the
prompt once; every rule ranks the queries whose mask agrees with the prompt first (as the predictor does) and the
IoU of its pick with the instance is averaged, next to the oracle (the best query). Photos: every 7th fully labelled
training photo, so the rule the predictor uses is not chosen on validation data.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam_lite.data import CocoConcepts  # noqa: E402
from sam_lite.evaluation.geometric import click_point, mask_box  # noqa: E402
from sam_lite.evaluation.instance_matching import mask_iou_matrix  # noqa: E402
from sam_lite.postprocessing import agrees_with_prompt, instance_scores, mask_confidence  # noqa: E402
from sam_lite.predictor import SamLitePredictor  # noqa: E402
from sam_lite.structures import Prompt  # noqa: E402
from sam_lite.visual_prompts import check_visual_prompt, to_model_pixels  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="../shared/data/coco_mini")
    ap.add_argument("--photos", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    coco = CocoConcepts(args.data)
    ids = [i for i in coco.split("train") if coco.is_fully_labelled(i)][::7][: args.photos]
    pred = SamLitePredictor.from_pretrained(args.checkpoint)
    ious = {}
    with torch.inference_mode():
        for iid in ids:
            present, _ = coco.concepts_in_image(iid)
            pred.set_image(coco.image_path(iid))
            for anns in present.values():
                for a in anns:
                    gt = torch.from_numpy(coco.ann_mask(coco.coco.anns[a])).bool()
                    prompts = {"click": ([list(click_point(gt.numpy()))], None), "box": (None, mask_box(gt.numpy()))}
                    for kind, (points, box) in prompts.items():
                        meta = pred.image_meta
                        row = to_model_pixels(check_visual_prompt(points, None, box, None, meta.original_size), meta)
                        out = pred.predict_torch(Prompt.from_rows([""], [row]))
                        logits = out["pred_masks"][0].float()
                        iou = mask_iou_matrix(pred.processor.postprocess_masks(logits, meta) > 0, gt[None])[:, 0]
                        score = instance_scores(out)[0][0]
                        piou, conf = out["pred_iou"][0].float(), mask_confidence(logits)
                        first = 2 * agrees_with_prompt(logits, row, pred.processor.image_size).float() + \
                            4 * (logits > 0).flatten(1).any(1).float()  # non-empty, agreeing masks first
                        rules = {"score": score, "pred_iou": piou, "score x pred_iou": score * piou,
                                 "mask confidence": conf, "score x mask confidence": score * conf}
                        for name, v in rules.items():
                            ious.setdefault((kind, name), []).append(float(iou[int((v + first).argmax())]))
                        ious.setdefault((kind, "oracle"), []).append(float(iou.max()))
    for (kind, name), v in sorted(ious.items()):
        print(f"{kind:5s} {name:25s} mIoU {np.mean(v):.3f}  (n={len(v)})")


if __name__ == "__main__":
    main()
