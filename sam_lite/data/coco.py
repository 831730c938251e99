"""COCO-format data as (image, concept prompt, all matching instance masks).

Works on any COCO-format dataset (``annotations.json`` + ``images/``): instance and panoptic-stuff categories become
prompts ("sky-other-merged" -> "sky"). Stuff is only trusted on images marked ``stuff_labelled`` (when the key is
absent, on images that carry any stuff annotation); elsewhere a stuff concept is never used as a negative.

Partial labels follow LVIS: ``labelled_category_ids`` (presence or absence known), ``neg_category_ids`` (verified
absent: the only source of negatives) and ``not_exhaustive_category_ids`` (present, not every instance annotated:
never a positive target). An image without these fields is labelled exhaustively, as in COCO.

Box-level labels: an annotation without ``segmentation`` but with a valid ``bbox`` is a box-only instance (a
detection dataset has only those). ``box_labelled_category_ids`` / ``box_neg_category_ids`` (coco_mini v3) say
which categories are known at box level at least; absent fields: those of the mask level, plus, without LVIS
fields, every category (COCO's exhaustive rule). The mask level never counts a category with box-only instances on
an image: masks are supervised only where they exist; presence, negatives and boxes use the box level.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .colors import hsv_image, instance_colours

# Unseen wordings for evaluation only (never used in training).
SYNONYMS = {"car": "automobile", "couch": "sofa", "cup": "mug", "motorcycle": "motorbike", "airplane": "aircraft",
            "tv": "television", "bicycle": "bike", "cell phone": "mobile phone", "person": "human",
            "dining table": "table", "dog": "puppy", "bus": "coach bus", "sky": "the sky above"}
# colour prompts are made for things except these (a "red person" is about clothes, not the person)
NO_COLOUR = {"person"}


def concept_name(category_name: str) -> str:
    """COCO category name -> natural prompt: 'sky-other-merged' -> 'sky', 'tree-merged' -> 'tree'."""
    name = category_name
    for suffix in ("-merged", "-other", "-stuff"):
        name = name.replace(suffix, "")
    return name.replace("-", " ").replace("_", " ").strip()


@dataclass
class EvalSample:
    image_id: int
    file_path: Path
    prompt: str
    prompt_type: str  # "category" | "colour" | "stuff" | "negative" | "synonym"
    ann_ids: list[int] = field(default_factory=list)


class CocoConcepts:
    """Index of a COCO-format dataset by concept. Images or annotations that cannot be used are skipped with one
    warning that gives the count (missing files, empty or invalid segmentations)."""

    def __init__(self, root: str | Path, annotation_file: str = "annotations.json", images_dir: str = "images",
                 val_percent: int = 15, partial_labels: bool = True, box_labels: bool = True) -> None:
        """``partial_labels=False`` ignores the LVIS fields (every photo counts as exhaustively labelled: an
        ablation, wrong on partially labelled data). ``box_labels=False`` ignores what is known at box level only
        (box-only instances, ``box_labelled_category_ids``, ``box_neg_category_ids``): the mask level alone, as
        version 2 of coco_mini was read (an ablation)."""
        from pycocotools.coco import COCO

        self.root = Path(root)
        ann_path = self.root / annotation_file
        if not ann_path.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {ann_path} (pass --data DIR with "
                                    f"{annotation_file} and {images_dir}/)")
        try:
            data = json.loads(ann_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{ann_path} is not valid JSON: {e}") from e
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"{ann_path} is not COCO format: missing list '{key}'")
        self.images_dir = self.root / images_dir
        self.partial_labels = partial_labels
        self.box_labels = box_labels
        self.val_percent = val_percent
        skipped = {"missing image file": 0, "invalid annotation": 0}
        images = []
        for im in data["images"]:
            if (self.images_dir / im.get("file_name", "")).is_file() and im.get("file_name"):
                images.append(im)
            else:
                skipped["missing image file"] += 1
        image_ids = {im["id"] for im in images}
        sizes = {im["id"]: (im["height"], im["width"]) for im in images}
        anns, self.box_only = [], set()
        for a in data["annotations"]:
            if a.get("image_id") not in image_ids:
                continue
            if a.get("segmentation") in (None, [], {}) and self._valid_box(a.get("bbox"), sizes[a["image_id"]]):
                self.box_only.add(a["id"])
            elif not self._valid_segmentation(a.get("segmentation"), sizes[a["image_id"]]):
                skipped["invalid annotation"] += 1
                continue
            anns.append(a)
        data = {**data, "images": images, "annotations": anns}
        if any(skipped.values()):
            warnings.warn(f"{ann_path}: skipped " + ", ".join(f"{n} x {k}" for k, n in skipped.items() if n),
                          stacklevel=2)
        self.skipped = skipped
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO()
            self.coco.dataset = data
            self.coco.createIndex()
        self.categories = {c["id"]: c for c in data["categories"]}
        self.concepts = {cid: concept_name(c["name"]) for cid, c in self.categories.items()}
        self.is_thing = {cid: bool(c.get("isthing", 1)) for cid, c in self.categories.items()}
        self.thing_concepts = sorted({self.concepts[c] for c in self.categories if self.is_thing[c]})
        self.stuff_concepts = sorted({self.concepts[c] for c in self.categories if not self.is_thing[c]})
        has_flag = any("stuff_labelled" in im for im in images)
        self.stuff_labelled = {}
        for im in images:
            if has_flag:
                self.stuff_labelled[im["id"]] = bool(im.get("stuff_labelled"))
            else:
                self.stuff_labelled[im["id"]] = any(not self.is_thing.get(a["category_id"], True)
                                                    for a in self.coco.imgToAnns[im["id"]])
        self.image_ids = sorted(image_ids)
        # the concept map's vocabulary: every distinct concept name, in category-id order
        self.vocabulary = list(dict.fromkeys(self.concepts[c] for c in sorted(self.categories)))
        self._index_labels(images)

    def _index_labels(self, images: list[dict]) -> None:
        """Per image: labelled, negative and not-exhaustive category ids at mask level, and labelled and negative
        ids at box level (LVIS fields, or COCO's exhaustive rule)."""
        things = {c for c in self.categories if self.is_thing[c]}
        stuff = set(self.categories) - things
        self.labelled: dict[int, set[int]] = {}
        self.negatives: dict[int, set[int]] = {}
        self.not_exhaustive: dict[int, set[int]] = {}
        self.box_labelled: dict[int, set[int]] = {}
        self.box_negatives: dict[int, set[int]] = {}
        for im in images:
            iid = im["id"]
            allowed = things | (stuff if self.stuff_labelled[iid] else set())  # stuff is never known elsewhere
            lvis = self.partial_labels
            anns = self.coco.imgToAnns[iid]
            annotated = {a["category_id"] for a in anns}
            boxed = {a["category_id"] for a in anns if a["id"] in self.box_only}
            labelled = set(im["labelled_category_ids"]) if lvis and "labelled_category_ids" in im \
                else set(self.categories)
            box_labelled = set(im["box_labelled_category_ids"]) if lvis and "box_labelled_category_ids" in im \
                else labelled
            self.labelled[iid] = (labelled - boxed) & allowed  # masks are only known where they exist
            if lvis and "neg_category_ids" in im:
                self.negatives[iid] = set(im["neg_category_ids"]) & self.labelled[iid]
            else:
                self.negatives[iid] = self.labelled[iid] - annotated
            self.not_exhaustive[iid] = set(im.get("not_exhaustive_category_ids", []) if lvis else []) \
                & self.labelled[iid]
            self.box_labelled[iid] = (box_labelled & allowed) | self.labelled[iid]
            if not self.box_labels:
                self.box_labelled[iid], self.box_negatives[iid] = set(self.labelled[iid]), set(self.negatives[iid])
            elif lvis and "box_neg_category_ids" in im:
                self.box_negatives[iid] = (set(im["box_neg_category_ids"]) & self.box_labelled[iid]) | \
                    self.negatives[iid]
            else:
                self.box_negatives[iid] = (self.box_labelled[iid] - annotated) | self.negatives[iid]

    def is_fully_labelled(self, image_id: int) -> bool:
        """Every thing category is labelled on this image (the COCO-style photos; stuff may or may not be)."""
        return all(c in self.labelled[image_id] for c in self.categories if self.is_thing[c])

    def has_masks(self, image_id: int) -> bool:
        """Some category is labelled at mask level on this image (not a photo labelled by boxes alone)."""
        return bool(self.labelled[image_id])

    def labelled_concepts(self, image_id: int) -> set[str]:
        return {self.concepts[c] for c in self.labelled[image_id]}

    @staticmethod
    def _valid_box(box, hw) -> bool:
        """A COCO bbox [x, y, w, h] with w, h > 0 that overlaps the image."""
        if not (isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) and np.isfinite(v) for v in box)):
            return False
        x, y, w, h = box
        return w > 0 and h > 0 and x < hw[1] and y < hw[0] and x + w > 0 and y + h > 0

    @staticmethod
    def _valid_segmentation(seg, hw) -> bool:
        if isinstance(seg, dict):
            return "counts" in seg and "size" in seg and list(seg["size"]) == [hw[0], hw[1]]
        if isinstance(seg, list) and seg:
            return all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and
                       all(isinstance(v, (int, float)) and np.isfinite(v) for v in p) for p in seg)
        return False

    # --- splits ---------------------------------------------------------------------------------------------
    def split(self, name: str) -> list[int]:
        """Deterministic split by a hash of the image id: ``val_percent`` % go to "val", never trained on."""
        if name not in ("train", "val", "all"):
            raise ValueError(f"unknown split {name!r}: use train, val or all")
        if name == "all":
            return list(self.image_ids)
        is_val = lambda i: zlib.crc32(str(i).encode()) % 100 < self.val_percent  # noqa: E731
        return [i for i in self.image_ids if is_val(i) == (name == "val")]

    # --- images and masks -----------------------------------------------------------------------------------
    def image_info(self, image_id: int) -> dict:
        return self.coco.imgs[image_id]

    def image_path(self, image_id: int) -> Path:
        return self.images_dir / self.coco.imgs[image_id]["file_name"]

    def load_rgb(self, image_id: int) -> np.ndarray:
        with Image.open(self.image_path(image_id)) as im:
            return np.asarray(im.convert("RGB"))

    def ann_mask(self, ann: dict) -> np.ndarray:
        return self.coco.annToMask(ann).astype(bool)

    def image_annotations(self, image_id: int) -> list[dict]:
        return self.coco.imgToAnns[image_id]

    def concepts_in_image(self, image_id: int) -> tuple[dict[str, list[int]], set[str]]:
        """(labelled concept -> non-crowd annotation ids, ambiguous concepts: present but not a fair target, i.e.
        only crowd regions, or not exhaustively labelled)."""
        present: dict[str, list[int]] = {}
        crowd: set[str] = set()
        labelled = self.labelled[image_id]
        for a in self.image_annotations(image_id):
            cid = a["category_id"]
            if cid not in labelled or a["id"] in self.box_only:
                continue
            name = self.concepts[cid]
            if a.get("iscrowd", 0):
                crowd.add(name)
            else:
                present.setdefault(name, []).append(a["id"])
        ambiguous = (crowd - set(present)) | {self.concepts[c] for c in self.not_exhaustive[image_id]}
        return {n: ids for n, ids in present.items() if n not in ambiguous}, ambiguous

    def negative_pool(self, image_id: int, exclude: set[str], level: str = "mask") -> list[str]:
        """Concepts safe to use as negatives on this image: verified absent (``neg_category_ids``, or for a COCO
        dataset labelled and not annotated), stuff only where stuff is labelled. ``level="box"``: also those
        verified absent by the boxes (``box_neg_category_ids``); the evaluation protocol keeps the mask level."""
        negatives = self.box_negatives[image_id] if level == "box" else self.negatives[image_id]
        pool = sorted({self.concepts[c] for c in negatives})
        return [c for c in pool if c not in exclude]

    def dense_annotations(self, image_id: int) -> list[tuple[str, dict]]:
        """(concept, annotation) for every mask annotation of a labelled category, crowd regions included: the
        pixels the concept map is trained on."""
        labelled = self.labelled[image_id]
        return [(self.concepts[a["category_id"]], a) for a in self.image_annotations(image_id)
                if a["category_id"] in labelled and a["id"] not in self.box_only]

    def box_annotations(self, image_id: int) -> list[tuple[str, dict]]:
        """(concept, annotation) for every box-only annotation of a box-labelled category that has no masks on this
        image (non-crowd): instances known by their box alone."""
        known = self.box_labelled[image_id] - self.labelled[image_id]
        return [(self.concepts[a["category_id"]], a) for a in self.image_annotations(image_id)
                if a["id"] in self.box_only and a["category_id"] in known and not a.get("iscrowd", 0)]

    def box_labelled_concepts(self, image_id: int) -> set[str]:
        """Concepts whose presence or absence is known on this image at box level at least."""
        return {self.concepts[c] for c in self.box_labelled[image_id]}

    def sample_weight(self, image_id: int, mask_share: float = 0.0) -> float:
        """Training sampling weight: photos that label few categories (person-only) count less, so they do not
        crowd out the fully labelled ones: 1 for a fully labelled photo, else min(1, categories labelled at box
        level at least / 10), at least 0.1. ``mask_share`` s: (1 - s) x that + s x the same count at mask level
        (a photo labelled by boxes alone then weighs 1 - s)."""
        if self.is_fully_labelled(image_id):
            return 1.0
        box = min(1.0, len(self.box_labelled[image_id]) / 10)
        mask = min(1.0, len(self.labelled[image_id]) / 10)
        return max(0.1, (1 - mask_share) * box + mask_share * mask)

    def instance_masks(self, sample: EvalSample) -> torch.Tensor:
        """Ground-truth masks of a sample, bool [N, H, W] at the original image size."""
        info = self.coco.imgs[sample.image_id]
        if not sample.ann_ids:
            return torch.zeros((0, info["height"], info["width"]), dtype=torch.bool)
        return torch.from_numpy(np.stack([self.ann_mask(self.coco.anns[i]) for i in sample.ann_ids]))

    # --- evaluation prompts ---------------------------------------------------------------------------------
    def eval_samples(self, image_ids: list[int], seed: int = 0, negatives_per_image: int = 2) -> list[EvalSample]:
        """Deterministic prompts per image: every present category (or stuff), colour + category where every
        instance has a colour by the rule, unseen synonyms, and absent concepts (incl. a wrong colour)."""
        rng = random.Random(seed)
        out: list[EvalSample] = []
        for iid in image_ids:
            path = self.image_path(iid)
            present, crowd = self.concepts_in_image(iid)
            for name in sorted(present):
                kind = "stuff" if name in self.stuff_concepts and name not in self.thing_concepts else "category"
                out.append(EvalSample(iid, path, name, kind, present[name]))
                if name in SYNONYMS:
                    out.append(EvalSample(iid, path, SYNONYMS[name], "synonym", present[name]))
            colour_groups = self._colour_groups(iid, present)
            for name, (colours, ids) in sorted(colour_groups.items()):
                for colour in sorted(set(colours)):
                    out.append(EvalSample(iid, path, f"{colour} {name}", "colour",
                                          [i for i, c in zip(ids, colours) if c == colour]))
                wrong = sorted({"red", "blue", "green", "yellow", "white", "black"} - set(colours))
                if wrong:
                    out.append(EvalSample(iid, path, f"{rng.choice(wrong)} {name}", "negative", []))
            pool = self.negative_pool(iid, set(present) | crowd)
            for name in rng.sample(pool, min(negatives_per_image, len(pool))):
                out.append(EvalSample(iid, path, name, "negative", []))
        return out

    def _colour_groups(self, image_id: int, present: dict[str, list[int]]) -> dict[str, tuple[list[str], list[int]]]:
        """concept -> (colour per instance, ann ids) for thing concepts whose every instance has a colour."""
        things = {n: ids for n, ids in present.items() if n in self.thing_concepts and n not in NO_COLOUR}
        if not things:
            return {}
        hsv = hsv_image(self.load_rgb(image_id))
        out = {}
        for name, ids in things.items():
            masks = torch.from_numpy(np.stack([self.ann_mask(self.coco.anns[i]) for i in ids]))
            colours = instance_colours(hsv, masks)
            if all(c is not None for c in colours):
                out[name] = (colours, ids)
        return out
