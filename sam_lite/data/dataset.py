"""Training samples: one augmented image with several prompts, each with all its matching instance masks.

Augmentation (torchvision v2 on ``tv_tensors``): large-scale jitter (resize 0.3x-1.6x of the model size, then random
crop/pad), horizontal flip, brightness/contrast only (a named colour is never changed), and copy-paste: real instance
cut-outs from another training photo pasted onto this one, some recoloured by a hue shift. Colour labels are computed
by the colour rule on the final augmented pixels, so they are exact by construction.

Each item also carries the concept map's dense target at stride 4: per cell the vocabulary index of the labelled
concept covering most of it, -1 where no labelled annotation covers it (then it belongs to one of ``dense_allowed``:
the concepts this photo does not label, crowd-only or not exhaustively labelled concepts, or background) and -2 where
it is padding or a boundary between concepts.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_convert, masks_to_boxes

from ..structures import Prompt
from .coco import NO_COLOUR, CocoConcepts
from .colors import COLOURS, hsv_image, instance_colours
from .geometric import sample_geometric_prompt

MIN_AREA = 24  # px at model resolution: smaller remnants are dropped and their concept made ambiguous
DENSE_STRIDE = 4  # the concept map's target resolution (its logits are upsampled from stride 8)


class ConceptSegmentationDataset(Dataset):
    """Item: dict(image uint8 [3,S,S], prompts list[str], targets list[dict(masks bool [n,S,S], boxes [n,4]
    normalised cxcywh, has_mask bool [n])], prompt_types list[str], geometry list[dict | None], dense_labels,
    dense_allowed (:meth:`dense_target`), image_labels [C] (:meth:`image_labels`)). About
    ``negative_fraction`` of the prompts are absent concepts (verified absent, at box level at least); about
    ``geometric_fraction`` of them are geometric (a point, a box or an exemplar box on an instance with a mask, see
    :mod:`.geometric`; their text is "" or, for some exemplars, the concept), the others have geometry None.

    A box-only instance (no mask annotated, see :meth:`CocoConcepts.box_annotations`) travels through the
    augmentation as its filled box, so its target box stays exact; ``has_mask`` False tells the criterion to
    supervise its mask by the box alone (BoxInst's projections), and the concept map ignores the pixels inside it."""

    def __init__(self, coco: CocoConcepts, image_ids: list[int], image_size: int, prompts_per_image: int = 4,
                 negative_fraction: float = 0.25, colour_fraction: float = 0.35, copy_paste_prob: float = 0.5,
                 recolour_prob: float = 0.4, scale_range: tuple[float, float] = (0.3, 1.6), augment: bool = True,
                 cache_images: bool = True, seed: int = 0, geometric_fraction: float = 0.0,
                 vocabulary: list[str] | None = None) -> None:
        """``vocabulary``: the concept map's names the dense labels index (default: the dataset's own; a fine-tuned
        model's grown vocabulary: the dataset's concepts where they are, every other name only "allowed")."""
        if not image_ids:
            raise ValueError("no images to train on (empty split or all images skipped)")
        self.coco, self.image_ids, self.size = coco, list(image_ids), image_size
        self.m, self.neg_frac, self.col_frac = prompts_per_image, negative_fraction, colour_fraction
        self.cp_prob, self.recolour_prob, self.augment = copy_paste_prob, recolour_prob, augment
        self.seed, self.epoch = seed, 0
        if not 0.0 <= geometric_fraction <= 1.0:
            raise ValueError(f"geometric_fraction must be in [0, 1], got {geometric_fraction}")
        self.geo_frac = geometric_fraction
        self.vocabulary = list(vocabulary) if vocabulary else list(coco.vocabulary)
        self.vocabulary_index = {n: i for i, n in enumerate(self.vocabulary)}
        missing = sorted(set(coco.vocabulary) - set(self.vocabulary))
        if missing:
            raise ValueError(f"the concept map's vocabulary lacks the dataset's concepts {missing[:5]}")
        self.cache_images = cache_images
        self.max_side = int(image_size * scale_range[1])
        self._cache: dict[int, tuple] = {}
        self.geometric = T.Compose([
            T.ScaleJitter(target_size=(image_size, image_size), scale_range=scale_range, antialias=True),
            T.RandomCrop(image_size, pad_if_needed=True, fill=0),
            T.RandomHorizontalFlip(),
        ]) if augment else T.Compose([T.Resize(image_size - 1, max_size=image_size, antialias=True),
                                      T.CenterCrop(image_size)])
        self.photometric = T.ColorJitter(brightness=0.25, contrast=0.25) if augment else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # --- loading --------------------------------------------------------------------------------------------
    def _load(self, image_id: int):
        """(image uint8 [3,H,W], masks bool [n+1,H,W] (the last one: all True, the valid image area after padding),
        concept per mask, crowd flag per mask, has-mask flag per mask (False: a box-only instance, drawn as its
        box), ambiguous concepts: crowd-only or not exhaustively labelled)."""
        if image_id in self._cache:
            return self._cache[image_id]
        rgb = torch.from_numpy(self.coco.load_rgb(image_id).copy()).permute(2, 0, 1)
        _, ambiguous = self.coco.concepts_in_image(image_id)
        h0, w0 = rgb.shape[-2:]
        scale = min(1.0, self.max_side / max(h0, w0))
        names, crowd, masks, has_mask = [], [], [], []
        for name, ann in self.coco.dense_annotations(image_id):
            names.append(name)
            crowd.append(bool(ann.get("iscrowd", 0)))
            masks.append(torch.from_numpy(self.coco.ann_mask(ann)))
            has_mask.append(True)
        for name, ann in self.coco.box_annotations(image_id):
            x, y, w, h = ann["bbox"]
            rect = torch.zeros((h0, w0), dtype=torch.bool)
            rect[max(0, round(y)):max(0, round(y + h)), max(0, round(x)):max(0, round(x + w))] = True
            names.append(name)
            crowd.append(False)
            masks.append(rect)
            has_mask.append(False)
        masks.append(torch.ones((h0, w0), dtype=torch.bool))
        m = torch.stack(masks)
        if scale < 1.0:  # nothing larger than the biggest jitter needs is kept
            size = (max(1, round(h0 * scale)), max(1, round(w0 * scale)))
            rgb = TF.resize(rgb, list(size), antialias=True)
            m = TF.resize(tv_tensors.Mask(m), list(size)).as_subclass(torch.Tensor).bool()
        item = (rgb, m, names, crowd, has_mask, ambiguous)
        if self.cache_images:
            self._cache[image_id] = item
        return item

    def _augmented(self, image_id: int):
        rgb, masks, names, crowd, has_mask, ambiguous = self._load(image_id)
        img, msk = self.geometric(tv_tensors.Image(rgb), tv_tensors.Mask(masks))
        msk = msk.as_subclass(torch.Tensor).bool()
        return (img.as_subclass(torch.Tensor), msk[:-1], msk[-1], list(names), list(crowd), list(has_mask),
                set(ambiguous))

    def dense_target(self, image_id: int, masks: Tensor, names: list[str], valid: Tensor, ambiguous: set[str],
                     has_mask: list[bool] | None = None) -> tuple[Tensor, Tensor]:
        """Labels [S/4, S/4] (vocabulary index, -1 unannotated, -2 ignored) and allowed [C+1] bool (what an
        unannotated cell may be; background, the last entry, always). Cells inside a box-only instance are ignored;
        outside every box, a concept labelled at box level is known absent (not allowed)."""
        if has_mask is not None and not all(has_mask):
            boxes = [i for i, h in enumerate(has_mask) if not h]
            keep = [i for i, h in enumerate(has_mask) if h]
            inside = masks[boxes].any(0)
            masks, names = masks[keep], [names[i] for i in keep]
        else:
            inside = None
        vocab, index = self.vocabulary, self.vocabulary_index
        h, w = masks.shape[-2] // DENSE_STRIDE, masks.shape[-1] // DENSE_STRIDE
        pool = lambda m: F.adaptive_avg_pool2d(m.float()[None], (h, w))[0]  # noqa: E731 - coverage per cell
        concepts = sorted(set(names))
        cover = torch.zeros((len(concepts), h, w))
        for i, n in enumerate(concepts):
            cover[i] = pool(masks[[j for j, m in enumerate(names) if m == n]].any(0))
        labels = torch.full((h, w), -2, dtype=torch.long)
        total = cover.sum(0) if len(concepts) else torch.zeros((h, w))
        labels[total < 0.5] = -1
        if len(concepts):
            best, arg = cover.max(0)
            ids = torch.tensor([index[n] for n in concepts])[arg]
            labels = torch.where(best >= 0.5, ids, labels)
        labels[pool(valid[None])[0] < 0.5] = -2
        if inside is not None:
            labels[(pool(inside[None])[0] > 0) & (labels == -1)] = -2
        allowed = torch.ones(len(vocab) + 1, dtype=torch.bool)
        known = self.coco.box_labelled_concepts(image_id) - ambiguous  # (the box level includes the mask level)
        allowed[[index[n] for n in known if n in index]] = False
        return labels, allowed

    # --- one item -------------------------------------------------------------------------------------------
    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """``index`` or ``(index, epoch)``: the augmentation is a pure function of (seed, epoch, index)."""
        index, epoch = index if isinstance(index, tuple) else (index, self.epoch)
        rng = random.Random(hash((self.seed, epoch, index)))
        torch.manual_seed(rng.getrandbits(31))
        image_id = self.image_ids[index]
        img, masks, valid, names, crowd, has_mask, ambiguous = self._augmented(image_id)
        things = set(self.coco.thing_concepts)
        # (no paste over box-only instances: it would hide part of an object whose box then no longer fits it)
        if self.augment and rng.random() < self.cp_prob and len(self.image_ids) > 1 and all(has_mask):
            img, masks, names, crowd = self._copy_paste(img, masks, names, crowd, rng, things)
            has_mask = [True] * len(names)
        if self.photometric is not None:
            img = self.photometric(img)
        dense_labels, dense_allowed = self.dense_target(image_id, masks, names, valid, ambiguous, has_mask)
        # prompts: crowd regions are never instances; remnants too small to be a fair target are dropped
        area = masks.flatten(1).sum(1) if masks.numel() else torch.zeros(0)
        keep = (area >= MIN_AREA) & ~torch.tensor(crowd, dtype=torch.bool)
        ambiguous |= {n for n, k, a, c in zip(names, keep.tolist(), area.tolist(), crowd) if not k and a > 0
                      and not c}
        masks = masks[keep]
        names = [n for n, k in zip(names, keep.tolist()) if k]
        has_mask = torch.tensor([h for h, k in zip(has_mask, keep.tolist()) if k], dtype=torch.bool)
        colours = instance_colours(hsv_image(img), masks) if len(names) else []
        colours = [c if h else None for c, h in zip(colours, has_mask.tolist())]  # a box is no colour sample
        image_labels = self.image_labels(image_id, names, ambiguous)
        prompts, targets, kinds, geometry = self._prompts(image_id, masks, names, colours, ambiguous, rng, things,
                                                          valid, has_mask)
        return {"image": img, "prompts": prompts, "targets": targets, "prompt_types": kinds, "image_id": image_id,
                "dense_labels": dense_labels, "dense_allowed": dense_allowed, "image_labels": image_labels,
                "geometry": geometry}

    def image_labels(self, image_id: int, names: list[str], ambiguous: set[str]) -> Tensor:
        """[C] over the vocabulary: 1 for a concept with an instance in the augmented image, 0 for one the photo
        labels (at box level at least) that has none left in it (absent, or cropped away), -1 unknown (not labelled,
        or ambiguous: crowd-only, not exhaustive, cut to a remnant). The image-level presence target."""
        index = self.vocabulary_index
        labels = torch.full((len(self.vocabulary),), -1.0)
        known = self.coco.box_labelled_concepts(image_id) - ambiguous
        labels[[index[n] for n in known if n in index]] = 0.0
        labels[[index[n] for n in set(names) - ambiguous if n in index]] = 1.0
        return labels

    def _prompts(self, image_id, masks, names, colours, ambiguous, rng, things, valid, has_mask):
        by_concept: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            by_concept.setdefault(n, []).append(i)
        # a pasted instance of a concept this photo does not label is no target: the photo may hold unlabelled ones
        ambiguous = ambiguous | (set(by_concept) - self.coco.box_labelled_concepts(image_id))
        positives = [n for n in by_concept if n not in ambiguous]
        neg_pool = self.coco.negative_pool(image_id, set(by_concept) | ambiguous, level="box")
        # visual prompts only on instances with a mask, exemplars only for concepts whose instances all have one
        with_mask = has_mask.nonzero()[:, 0].tolist()
        mask_positives = [n for n in positives if all(has_mask[i] for i in by_concept[n])]
        colourable = {n: [colours[i] for i in idx] for n, idx in by_concept.items()
                      if n in things and n not in NO_COLOUR and n not in ambiguous
                      and all(colours[i] is not None for i in idx)}
        prompts, targets, kinds, geometry = [], [], [], []

        def add(prompt: str, idx: list[int], kind: str, geo: dict | None = None) -> None:
            m = masks[idx] if idx else torch.zeros((0, *masks.shape[-2:]), dtype=torch.bool)
            boxes = masks_to_boxes(m).float() if len(idx) else torch.zeros((0, 4))
            boxes = box_convert(boxes, "xyxy", "cxcywh") / self.size
            prompts.append(prompt)
            targets.append({"masks": m, "boxes": boxes, "has_mask": has_mask[idx] if idx else has_mask[:0]})
            kinds.append(kind)
            geometry.append(geo)

        for _ in range(self.m):
            # (the draw only happens when asked for, so runs without geometric prompts see the same random stream)
            if self.geo_frac > 0 and len(names) and rng.random() < self.geo_frac:
                if with_mask:
                    text, idx, kind, geo = sample_geometric_prompt(masks[with_mask], [names[i] for i in with_mask],
                                                                   mask_positives, valid, rng)
                    add(text, [with_mask[i] for i in idx], kind, geo)
                continue
            r = rng.random()
            if (r < self.neg_frac or not positives) and (neg_pool or colourable):
                if colourable and (not neg_pool or rng.random() < 0.4):  # a wrong colour of a present object
                    name = rng.choice(sorted(colourable))
                    wrong = [c for c in COLOURS if c not in colourable[name]]
                    add(f"{rng.choice(wrong)} {name}", [], "negative")
                else:
                    add(rng.choice(neg_pool), [], "negative")
            elif positives:
                name = rng.choice(positives)
                if name in colourable and rng.random() < self.col_frac / max(1e-6, 1 - self.neg_frac):
                    colour = rng.choice(colourable[name])
                    idx = [i for i in by_concept[name] if colours[i] == colour]
                    add(f"{colour} {name}", idx, "colour")
                else:
                    kind = "stuff" if name in self.coco.stuff_concepts and name not in things else "category"
                    add(name, by_concept[name], kind)
        # (an image with nothing usable gives no prompt: a negative is only ever a verified-absent concept)
        return prompts, targets, kinds, geometry

    def _copy_paste(self, img, masks, names, crowd, rng, things):
        """Paste 1-3 thing instances from another training photo (Ghiasi et al., 2021)."""
        other = self.image_ids[rng.randrange(len(self.image_ids))]
        o_img, o_masks, _, o_names, o_crowd, o_has_mask, _ = self._augmented(other)
        cand = [i for i, n in enumerate(o_names) if n in things and not o_crowd[i] and o_has_mask[i]
                and o_masks[i].sum() >= 4 * MIN_AREA]
        if not cand:
            return img, masks, names, crowd
        chosen = rng.sample(cand, min(len(cand), rng.randint(1, 3)))
        img = img.clone()
        pasted_union = torch.zeros(img.shape[-2:], dtype=torch.bool)
        new_masks, new_names = [], []
        for i in chosen:
            m = o_masks[i] & ~pasted_union
            src = o_img
            if rng.random() < self.recolour_prob:
                src = TF.adjust_hue(o_img, rng.uniform(-0.5, 0.5))
            img = torch.where(m[None], src, img)
            pasted_union |= m
            new_masks.append(m)
            new_names.append(o_names[i])
        masks = masks & ~pasted_union if masks.numel() else masks
        masks = torch.cat([masks, torch.stack(new_masks)]) if len(names) else torch.stack(new_masks)
        return img, masks, names + new_names, crowd + [False] * len(new_names)


def collate(items: list[dict]) -> dict:
    """Images [B,3,S,S] uint8; prompts flattened (image i has prompts image_index == i); targets aligned; prompt:
    every row as a geometric :class:`~sam_lite.structures.Prompt` (at least one point and one exemplar slot, so
    every part of the prompt encoder is in the graph; a text-only model reads ``Prompt(prompts)`` instead)."""
    prompts, targets, kinds, index, geometry = [], [], [], [], []
    for i, it in enumerate(items):
        prompts += it["prompts"]
        targets += it["targets"]
        kinds += it["prompt_types"]
        index += [i] * len(it["prompts"])
        geometry += it.get("geometry") or [None] * len(it["prompts"])
    return {"images": torch.stack([it["image"] for it in items]), "prompts": prompts, "targets": targets,
            "prompt_types": kinds, "image_index": torch.tensor(index, dtype=torch.long),
            "prompt": Prompt.from_rows(prompts, geometry, min_points=1, min_exemplars=1),
            "image_ids": [it["image_id"] for it in items],
            "dense_labels": torch.stack([it["dense_labels"] for it in items]),
            "dense_allowed": torch.stack([it["dense_allowed"] for it in items]),
            "image_labels": torch.stack([it["image_labels"] for it in items])}
