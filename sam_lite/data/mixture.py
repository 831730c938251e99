"""Training on several datasets at once (detectron2's ``DATASETS.TRAIN`` as a tuple): e.g. a new concept's photos
plus a replay of the data the model was trained on, so a fine-tune does not forget what it knew.

Each dataset keeps its own labels, splits and copy-paste partners; the concept map's dense labels index one shared
vocabulary (a pixel says nothing about the concepts of another dataset: they stay "allowed"). ``weights`` are the
share of each epoch's photos drawn from each dataset.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from .dataset import ConceptSegmentationDataset


class DatasetMixture(Dataset):
    """Items of several :class:`ConceptSegmentationDataset` s under one index ``(global_index, epoch)``."""

    def __init__(self, datasets: list[ConceptSegmentationDataset], weights: list[float] | None = None) -> None:
        if not datasets:
            raise ValueError("no dataset to train on")
        weights = [1.0] * len(datasets) if weights is None else list(weights)
        if len(weights) != len(datasets) or any(w < 0 for w in weights) or not sum(weights) > 0:
            raise ValueError(f"need one mixing weight >= 0 per dataset ({len(datasets)}), not all 0; got {weights}")
        self.datasets, self.weights = datasets, [w / sum(weights) for w in weights]
        self.offsets = [0]
        for d in datasets:
            self.offsets.append(self.offsets[-1] + len(d))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (dataset, index inside it)."""
        for k in range(len(self.datasets)):
            if index < self.offsets[k + 1]:
                return k, index - self.offsets[k]
        raise IndexError(f"index {index} out of range for a mixture of {len(self)} photos")

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        index, epoch = index if isinstance(index, tuple) else (index, None)
        k, i = self.locate(index)
        return self.datasets[k][(i, epoch) if epoch is not None else i]

    def sample_weights(self, per_photo: list[list[float]]) -> list[float]:
        """Per-photo sampling weights of every dataset (``per_photo[k]``: dataset k's, e.g. the labelled-sampling
        weights) scaled so that dataset k gets its mixing share of each epoch."""
        out = []
        for share, ws in zip(self.weights, per_photo):
            total = sum(ws) or 1.0
            out += [share * w / total for w in ws]
        return out
