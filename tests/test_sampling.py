"""The training data order (EpochBatchSampler) and learning-rate schedule (lr_factor), against hand-made values."""

import itertools
import math

import pytest
import torch

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


# --- weighted epoch sampling (CocoConcepts.sample_weight) ----------------------------------------------------------
def _batches(sampler, k):
    return list(itertools.islice(iter(sampler), k))


def test_weighted_sampler_is_deterministic_and_skips_near_zero_weights():
    weights = [1.0] * 9 + [1e-9]
    args = dict(n=10, batch_size=3, per_epoch=3, seed=5, rank=0, world=1)
    a = _batches(EpochBatchSampler(**args, weights=weights), 60)
    assert a == _batches(EpochBatchSampler(**args, weights=weights), 60)
    assert a != _batches(EpochBatchSampler(**{**args, "seed": 6}, weights=weights), 60)
    for epoch in range(20):
        batches = a[epoch * 3:(epoch + 1) * 3]
        assert all(len(b) == 3 and all(e == epoch for _, e in b) for b in batches)
        idx = [i for b in batches for i, _ in b]
        assert sorted(idx) == list(range(9)), idx  # each weight-1 photo exactly once, never the ~0 one
    # epochs differ in order
    assert len({tuple(i for b in a[e * 3:(e + 1) * 3] for i, _ in b) for e in range(20)}) > 1


def test_weighted_sampler_prefers_heavy_photos():
    weights = [1.0] * 5 + [0.1] * 5
    batches = _batches(EpochBatchSampler(10, 2, 2, seed=0, rank=0, world=1, weights=weights), 400)
    counts = torch.zeros(10)
    for e in range(200):  # 2 batches of 2 per epoch
        idx = [i for b in batches[2 * e:2 * e + 2] for i, _ in b]
        assert len(idx) == 4 and len(set(idx)) == 4  # without replacement within an epoch
        for i in idx:
            counts[i] += 1
    assert counts[:5].sum() > 4 * counts[5:].sum()


def test_weighted_sampler_resumes_exactly():
    weights = [0.2, 1.0, 0.5, 1.0, 0.9, 0.1, 1.0, 0.3]
    full = _batches(EpochBatchSampler(8, 2, 2, seed=1, rank=0, world=1, weights=weights), 12)
    for epoch, b in [(0, 1), (1, 0), (2, 1), (3, 1)]:
        resumed = EpochBatchSampler(8, 2, 2, seed=1, rank=0, world=1, epoch=epoch, batch_in_epoch=b,
                                    weights=weights)
        assert resumed.start == epoch * 2 + b
        assert _batches(resumed, 12 - resumed.start) == full[resumed.start:]


def test_weighted_sampler_shards_ranks_disjointly():
    weights = [1.0] * 8
    r0 = _batches(EpochBatchSampler(8, 2, 2, seed=3, rank=0, world=2, weights=weights), 4)
    r1 = _batches(EpochBatchSampler(8, 2, 2, seed=3, rank=1, world=2, weights=weights), 4)
    for e in range(2):
        i0 = [i for b in r0[2 * e:2 * e + 2] for i, _ in b]
        i1 = [i for b in r1[2 * e:2 * e + 2] for i, _ in b]
        assert sorted(i0 + i1) == list(range(8))


def test_weighted_sampler_with_fewer_photos_than_a_batch():
    # train.py: per_epoch = max(1, round(sum(weights)) // batch_size) = 1 for 3 photos at --batch-size 4
    uniform = _batches(EpochBatchSampler(3, 4, 1, seed=0, rank=0, world=1), 2)
    assert [sorted(i for i, _ in b) for b in uniform] == [[0, 1, 2]] * 2
    try:
        weighted = _batches(EpochBatchSampler(3, 4, 1, seed=0, rank=0, world=1, weights=[1.0, 1.0, 1.0]), 2)
    except RuntimeError as e:
        pytest.fail(f"LIBRARY BUG (sam_lite/training/sampling.py EpochBatchSampler.__iter__): with weights and "
                    f"per_epoch * batch_size * world (4) > n (3) torch.multinomial(..., replacement=False) raises "
                    f"{e!r}; the uniform sampler yields the 3 photos as one short batch")
    assert [sorted(i for i, _ in b) for b in weighted] == [[0, 1, 2]] * 2
