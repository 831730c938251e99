"""The training data order (EpochBatchSampler) and learning-rate schedule (lr_factor), against hand-made values."""

import math

import pytest

from sam_lite.training.sampling import EpochBatchSampler, lr_factor


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_sampler_visits_each_image_once_per_epoch_and_resumes_mid_epoch():
    batches = _take(EpochBatchSampler(6, 2, per_epoch=3, seed=0, rank=0, world=1), 6)
    for e in (0, 1):
        epoch = batches[3 * e:3 * e + 3]
        assert sorted(i for b in epoch for i, _ in b) == list(range(6))
        assert {ep for b in epoch for _, ep in b} == {e}
    assert batches[:3] != batches[3:]  # a fresh permutation each epoch
    resumed = EpochBatchSampler(6, 2, per_epoch=3, seed=0, rank=0, world=1, epoch=1, batch_in_epoch=1)
    assert resumed.start == 4
    assert _take(resumed, 2) == batches[4:6]


def test_sampler_shards_by_rank():
    a = _take(EpochBatchSampler(8, 2, per_epoch=2, seed=3, rank=0, world=2), 2)
    b = _take(EpochBatchSampler(8, 2, per_epoch=2, seed=3, rank=1, world=2), 2)
    ia, ib = {i for x in a for i, _ in x}, {i for x in b for i, _ in x}
    assert not ia & ib and ia | ib == set(range(8))


def test_weighted_sampler_never_draws_a_zero_weight_photo_or_one_twice():
    s = EpochBatchSampler(5, 1, per_epoch=3, seed=0, rank=0, world=1, weights=[1.0, 0.0, 1.0, 1.0, 0.0])
    epoch = [i for b in _take(s, 3) for i, _ in b]
    assert sorted(epoch) == [0, 2, 3]


@pytest.mark.parametrize("step, expected", [(0, 0.25), (3, 1.0), (4, 1.0), (9, 0.5 * (1 + math.cos(math.pi * 5 / 10))),
                                            (14, 0.0), (20, 0.0)])
def test_lr_factor_warms_up_linearly_then_follows_the_cosine(step, expected):
    assert lr_factor(step, warmup=4, total=14) == pytest.approx(expected)
