"""PixelBudgetBatchSampler: budget, coverage, per-epoch shuffling, accelerate sharding and mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from hmer_hf.data.sampler import PixelBudgetBatchSampler, dataset_sizes, pack_batches, padding_fraction


def _sizes(n=500, seed=0):
    rng = np.random.default_rng(seed)
    # CROHME-like: heights 40..250, widths 40..1100, wide images more common than tall ones.
    return np.stack([rng.integers(40, 250, n), rng.integers(40, 1100, n)], axis=1)


def _padded_cost(batch, sizes):
    hw = sizes[batch]
    return hw[:, 0].max() * hw[:, 1].max() * len(batch)


def test_budget_and_max_batch_size_respected():
    sizes = _sizes()
    sampler = PixelBudgetBatchSampler(sizes, max_pixels=400_000, max_batch_size=6, seed=1)
    batches = list(sampler)
    assert batches and sampler.num_oversized == 0
    assert all(_padded_cost(b, sizes) <= 400_000 for b in batches)
    assert max(len(b) for b in batches) <= 6
    assert len(batches) == len(sampler)


def test_every_index_exactly_once_per_epoch():
    sizes = _sizes()
    sampler = PixelBudgetBatchSampler(sizes, max_pixels=300_000, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        flat = [i for b in sampler for i in b]
        assert sorted(flat) == list(range(len(sizes)))


def test_shuffling_differs_by_epoch_and_is_deterministic():
    sizes = _sizes()
    a = PixelBudgetBatchSampler(sizes, max_pixels=300_000, seed=7)
    b = PixelBudgetBatchSampler(sizes, max_pixels=300_000, seed=7)
    assert a.batches(0) == b.batches(0)  # same seed, same epoch -> same batches on every process
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != PixelBudgetBatchSampler(sizes, max_pixels=300_000, seed=8).batches(0)
    a.set_epoch(1)
    assert list(a) == b.batches(1)


def test_bucketing_pads_less_than_random_batching():
    sizes = _sizes(2000)
    bucketed = PixelBudgetBatchSampler(sizes, max_pixels=1_000_000, seed=0)
    random_ = PixelBudgetBatchSampler(sizes, max_pixels=1_000_000, bucket=False, seed=0)
    pad_b, pad_r = padding_fraction(list(bucketed), sizes), padding_fraction(list(random_), sizes)
    assert pad_b < 0.6 * pad_r
    assert len(bucketed) < len(random_)  # less padding -> more samples fit in each batch


def test_unshuffled_order_is_fixed_and_sorted():
    sizes = _sizes(100)
    sampler = PixelBudgetBatchSampler(sizes, max_pixels=300_000, shuffle=False)
    assert sampler.batches(0) == sampler.batches(5)


def test_oversized_sample_gets_its_own_batch():
    sizes = np.array([[100, 100], [1000, 1000], [100, 120]])
    sampler = PixelBudgetBatchSampler(sizes, max_pixels=50_000, shuffle=False)
    assert sampler.num_oversized == 1
    assert [1] in list(sampler)
    assert sorted(i for b in sampler for i in b) == [0, 1, 2]


def test_pack_batches_and_padding_fraction():
    sizes = np.array([[10, 10], [10, 20], [10, 20]])
    assert pack_batches([0, 1, 2], sizes, max_pixels=600) == [[0, 1, 2]]
    assert pack_batches([0, 1, 2], sizes, max_pixels=400) == [[0, 1], [2]]
    # [0,1] padded to 10x20 twice = 400 px of which 300 are content; [2] has none.
    assert padding_fraction([[0, 1], [2]], sizes) == pytest.approx(1 - 500 / 600)


def test_num_replicas_makes_batch_count_a_multiple():
    sizes = _sizes(301)
    for replicas in (2, 3, 4):
        sampler = PixelBudgetBatchSampler(sizes, max_pixels=350_000, num_replicas=replicas, seed=2)
        for epoch in range(3):
            batches = sampler.batches(epoch)
            assert len(batches) % replicas == 0
            assert sorted(i for b in batches for i in b) == list(range(301))
            assert all(_padded_cost(b, sizes) <= 350_000 for b in batches)


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_accelerate_batch_sampler_shard_equal_lengths(num_replicas):
    from accelerate.data_loader import BatchSamplerShard

    sizes = _sizes(301)
    shards = []
    for rank in range(2):
        sampler = PixelBudgetBatchSampler(sizes, max_pixels=350_000, seed=4, num_replicas=num_replicas)
        shards.append(BatchSamplerShard(sampler, num_processes=2, process_index=rank))
    lists = [list(s) for s in shards]
    assert len(lists[0]) == len(lists[1]) == len(shards[0]) == len(shards[1])
    flat = [i for lst in lists for b in lst for i in b]
    assert set(flat) == set(range(301))
    if num_replicas == 2:
        # The sampler already gives an even batch count: nothing repeated, every sample exactly once.
        assert sorted(flat) == list(range(301))
        # and in one step both processes get batches from the same size bucket.
        heights = [[sizes[b].max(0) for b in lst] for lst in lists]
        assert np.mean([abs(int(a[0]) - int(b[0])) for a, b in zip(*heights)]) < 60


def _prepared_loader(sampler, rank):
    from accelerate.data_loader import prepare_data_loader

    dataset = list(range(len(sampler.sizes)))
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=lambda b: b)
    return prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)


def test_accelerate_prepare_set_epoch_and_skip_first_batches():
    from accelerate.data_loader import skip_first_batches

    sizes = _sizes(200)
    sampler = PixelBudgetBatchSampler(sizes, max_pixels=350_000, seed=5, num_replicas=2)
    loader = _prepared_loader(sampler, rank=1)
    loader.set_epoch(3)  # accelerate's set_epoch reaches the sampler through BatchSamplerShard
    assert sampler.epoch == 3
    full = list(loader)
    assert full == sampler.batches(3)[1::2]

    # Resume mid-epoch: same epoch, skip what was already done -> exactly the rest.
    resumed_sampler = PixelBudgetBatchSampler(sizes, max_pixels=350_000, seed=5, num_replicas=2)
    resumed_sampler.load_state_dict(sampler.state_dict())
    resumed = skip_first_batches(_prepared_loader(resumed_sampler, rank=1), 4)
    assert len(resumed) == len(full) - 4
    assert list(resumed) == full[4:]


def test_dataset_sizes_reads_columns_without_images():
    import datasets

    ds = datasets.Dataset.from_dict({"height": [3, 4], "width": [5, 6], "latex": ["a", "b"]})
    assert dataset_sizes(ds).tolist() == [[3, 5], [4, 6]]
    with pytest.raises(ValueError, match="height"):
        dataset_sizes(ds.remove_columns("height"))
    sampler = PixelBudgetBatchSampler.from_dataset(ds, max_pixels=100)
    assert sorted(i for b in sampler for i in b) == [0, 1]
