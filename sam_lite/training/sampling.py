"""The order of training photos and the learning-rate schedule: both pure functions of (seed, step), so --resume
continues exactly."""

from __future__ import annotations

import math

import torch


class EpochBatchSampler:
    """Endless batches of (image index, epoch): a fresh permutation per epoch, sharded by rank, starting at
    (epoch, batch_in_epoch) so that --resume sees exactly the batches an uninterrupted run would. With ``weights``,
    each epoch is a weighted draw without replacement (each photo at most once)."""

    def __init__(self, n: int, batch_size: int, per_epoch: int, seed: int, rank: int, world: int, epoch: int = 0,
                 batch_in_epoch: int = 0, weights: list[float] | None = None) -> None:
        self.n, self.bs, self.per_epoch, self.seed, self.rank, self.world = n, batch_size, per_epoch, seed, rank, world
        self.epoch0, self.batch0 = epoch, batch_in_epoch
        self.start = epoch * per_epoch + batch_in_epoch
        self.weights = torch.tensor(weights, dtype=torch.double) if weights is not None else None

    def __iter__(self):
        epoch, first = self.epoch0, self.batch0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
            if self.weights is None:
                order = torch.randperm(self.n, generator=g).tolist()
            else:
                k = min(self.n, self.per_epoch * self.bs * self.world)
                order = torch.multinomial(self.weights, k, replacement=False, generator=g).tolist()
            order = order[self.rank::self.world]
            for b in range(first, self.per_epoch):
                yield [(i, epoch) for i in order[b * self.bs:(b + 1) * self.bs]]
            epoch, first = epoch + 1, 0


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
