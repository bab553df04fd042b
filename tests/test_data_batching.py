"""Index batching, sharding over ranks, the epoch seeds and the pixel preprocessing."""

import pytest
import torch
from data_fixtures import forbid_network

from intvae.data.batching import (
    IndexBatches,
    derive_seed,
    eval_batch_bounds,
    num_train_batches,
    train_batch_indices,
)
from intvae.data.preprocessing import (
    DynamicBinarization,
    bernoulli_levels,
    eval_binarization,
    scale_levels,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path / "data-dir")


def rows(n: int, width: int = 3) -> torch.Tensor:
    """Row ``i`` is filled with ``i``, so a batch tells which samples it holds."""
    return torch.arange(n, dtype=torch.float32)[:, None].expand(n, width).contiguous()


def sample_ids(batches) -> list[list[int]]:
    return [batch[:, 0].long().tolist() for batch in batches]


def test_derived_seeds_keep_seed_and_epoch_apart():
    assert derive_seed(0, 1, 0) != derive_seed(1, 0, 0)
    assert derive_seed(0, 1, 0) != derive_seed(0, 1, 1)
    assert derive_seed(3, 4, 0) == derive_seed(3, 4, 0)


def test_training_batches_have_equal_counts_on_every_rank():
    permutation = torch.randperm(1003, generator=torch.Generator().manual_seed(0))
    shards = [train_batch_indices(permutation, 100, rank, 3) for rank in range(3)]
    assert [tuple(s.shape) for s in shards] == [(3, 100)] * 3  # 1003 // 3 = 334 -> 3 batches
    everything = torch.cat([s.reshape(-1) for s in shards])
    assert everything.unique().numel() == 900  # disjoint shards, remainder dropped
    assert num_train_batches(1003, 100, 3) == 3
    with pytest.raises(ValueError, match="cannot fill one batch"):
        num_train_batches(150, 100, 2)


@pytest.mark.parametrize("n", [1, 7, 100, 101, 1345, 10_000])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 64, 100])
def test_evaluation_batches_cover_every_sample_once(n, world_size, batch_size):
    if n < world_size or (batch_size == 1 and n % world_size):
        with pytest.raises(ValueError, match="use a larger eval_batch_size"):
            eval_batch_bounds(n, batch_size, world_size - 1, world_size)
        return
    shards = [eval_batch_bounds(n, batch_size, r, world_size) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1  # equal batch counts on every rank
    covered = [i for shard in shards for lo, hi in shard for i in range(lo, hi)]
    assert covered == list(range(n))  # in order, no duplicates, nothing dropped
    assert all(0 < hi - lo <= batch_size for shard in shards for lo, hi in shard)


def test_single_device_evaluation_uses_full_batches():
    assert eval_batch_bounds(10_000, 100) == [(i, i + 100) for i in range(0, 10_000, 100)]


def test_train_pass_shapes_and_per_epoch_permutations():
    batches = IndexBatches(rows(1050), 100, train=True, seed=5)
    assert len(batches) == 10
    first = sample_ids(batches)
    assert len(first) == 10 and all(len(ids) == 100 for ids in first)
    assert len({i for ids in first for i in ids}) == 1000
    assert sample_ids(batches) == first  # same epoch, same order
    batches.set_epoch(1)
    second = sample_ids(batches)
    assert second != first
    batches.set_epoch(0)
    assert sample_ids(batches) == first
    other_seed = IndexBatches(rows(1050), 100, train=True, seed=6)
    assert sample_ids(other_seed) != first


def test_epoch_fn_takes_precedence_over_set_epoch():
    epoch = {"value": None}
    follows = IndexBatches(rows(300), 50, train=True, epoch_fn=lambda: epoch["value"])
    fixed = IndexBatches(rows(300), 50, train=True)
    follows.set_epoch(2)
    fixed.set_epoch(2)
    assert sample_ids(follows) == sample_ids(fixed)  # epoch_fn gave None
    epoch["value"] = 7
    fixed.set_epoch(7)
    follows.set_epoch(0)
    assert follows.current_epoch() == 7
    assert sample_ids(follows) == sample_ids(fixed)


def test_ranks_see_disjoint_training_samples_in_equal_numbers():
    shards = [IndexBatches(rows(1030), 100, train=True, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in shards] == [5, 5]
    ids = [[i for batch in sample_ids(s) for i in batch] for s in shards]
    assert [len(x) for x in ids] == [500, 500]
    assert not set(ids[0]) & set(ids[1])


def test_evaluation_pass_yields_views_in_order():
    data = rows(250)
    batches = IndexBatches(data, 100, train=False)
    out = list(batches)
    assert [len(b) for b in out] == [84, 83, 83] and len(batches) == 3
    assert torch.equal(torch.cat(out), data)
    assert out[0].data_ptr() == data.data_ptr()  # a view, no copy


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank 2 is not in"):
        IndexBatches(rows(10), 5, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        IndexBatches(rows(10), 0, train=False)


def test_scale_levels_maps_onto_eps_interval():
    levels = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    x = scale_levels(levels, 1e-3)
    assert x.dtype == torch.float32
    assert x[0].item() == pytest.approx(1e-3)
    assert x[-1].item() == pytest.approx(1 - 1e-3)
    assert x[1].item() == pytest.approx(1e-3 + (1 - 2e-3) / 255)
    assert torch.equal(scale_levels(levels, 0.0), levels / 255.0)


def test_bernoulli_draws_follow_the_grey_levels():
    levels = torch.tensor([0, 51, 255], dtype=torch.uint8).repeat(20_000, 1)
    draw = bernoulli_levels(levels, seed=1)
    assert set(draw.unique().tolist()) <= {0.0, 1.0}
    means = draw.mean(0)
    assert means[0] == 0.0 and means[2] == 1.0
    assert means[1].item() == pytest.approx(0.2, abs=0.01)


def test_dynamic_binarization_per_epoch():
    levels = torch.full((64, 10), 128, dtype=torch.uint8)
    binarized = DynamicBinarization(levels, seed=3)
    epoch0 = binarized.for_epoch(0)
    assert binarized.for_epoch(0) is epoch0  # kept within an epoch
    assert torch.equal(DynamicBinarization(levels, seed=3).for_epoch(0), epoch0)
    assert not torch.equal(binarized.for_epoch(1), epoch0)
    assert torch.equal(binarized.for_epoch(0), epoch0)  # redrawn identically
    assert not torch.equal(DynamicBinarization(levels, seed=4).for_epoch(0), epoch0)
    assert len(binarized) == 64


def test_evaluation_binarization_is_fixed_and_split_specific():
    levels = torch.full((64, 10), 128, dtype=torch.uint8)
    val = eval_binarization(levels, seed=0, split_index=1)
    assert torch.equal(eval_binarization(levels, seed=0, split_index=1), val)
    assert not torch.equal(eval_binarization(levels, seed=0, split_index=2), val)
