"""Pixel-budget batching: group images of similar size so that padding to the largest one in a batch wastes little.

A batch of images is padded to `max_h x max_w` of its members, so its cost is `max_h * max_w * count` pixels, not the
sum of the image areas. [`PixelBudgetBatchSampler`] packs batches greedily under that padded cost (`max_pixels`),
after ordering the samples by size (log-height bins, then width; with per-epoch noise so batches differ between
epochs), then shuffles the batch order. Sizes come from the `height`/`width` columns the builders store, so no image
is decoded.

With accelerate, give the sampler to a DataLoader as `batch_sampler`; `accelerator.prepare` wraps it in
`BatchSamplerShard`, which hands batch `i` to process `i % num_processes`. Every process builds the same batch list
(same seed, same epoch), and `num_replicas` makes its length a multiple of the process count so every process gets
the same number of batches without accelerate having to repeat samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler


def dataset_sizes(dataset: Any, height_column: str = "height", width_column: str = "width") -> np.ndarray:
    """(N, 2) int array of (height, width) read from a dataset's size columns, without decoding any image."""
    missing = [c for c in (height_column, width_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"dataset has no {missing} column(s); build it with hmer_hf.data builders (they store image sizes) "
            "or pass sizes explicitly"
        )
    # Selecting the two columns first keeps datasets from touching (and decoding) the image column.
    table = dataset.select_columns([height_column, width_column]).with_format("numpy")[:]
    return np.stack([np.asarray(table[height_column]), np.asarray(table[width_column])], axis=1).astype(np.int64)


def padding_fraction(batches: Sequence[Sequence[int]], sizes: np.ndarray) -> float:
    """Padded pixels / total pixels over all batches, each batch padded to its members' max height x max width."""
    sizes = np.asarray(sizes)
    padded = content = 0
    for batch in batches:
        hw = sizes[list(batch)]
        padded += int(hw[:, 0].max()) * int(hw[:, 1].max()) * len(batch)
        content += int((hw[:, 0] * hw[:, 1]).sum())
    return 1.0 - content / padded if padded else 0.0


def pack_batches(
    order: Sequence[int], sizes: np.ndarray, max_pixels: int, max_batch_size: int | None = None
) -> list[list[int]]:
    """Greedily cut `order` into consecutive batches whose padded cost (max_h * max_w * count) stays <= max_pixels."""
    batches: list[list[int]] = []
    batch: list[int] = []
    max_h = max_w = 0
    for idx in order:
        h, w = int(sizes[idx][0]), int(sizes[idx][1])
        new_h, new_w = max(max_h, h), max(max_w, w)
        full = max_batch_size is not None and len(batch) >= max_batch_size
        if batch and (full or new_h * new_w * (len(batch) + 1) > max_pixels):
            batches.append(batch)
            batch, new_h, new_w = [], h, w
        batch.append(int(idx))
        max_h, max_w = new_h, new_w
    if batch:
        batches.append(batch)
    return batches


class PixelBudgetBatchSampler(Sampler[list[int]]):
    """
    Batch sampler that caps the padded pixel count of every batch and groups images of similar size.

    Args:
        sizes (`(N, 2)` array-like): (height, width) of each sample, e.g. from [`dataset_sizes`].
        max_pixels (`int`): budget per batch, `max_h * max_w * batch_size` after padding. A sample larger than the
            budget on its own still gets a batch of one (never dropped); `num_oversized` counts them.
        max_batch_size (`int`, *optional*): cap on the number of samples per batch as well.
        shuffle (`bool`, defaults to `True`): randomise batches per epoch; `False` gives a fixed size-sorted order
            (evaluation).
        bucket (`bool`, defaults to `True`): order samples by size before packing; `False` packs them in random
            order (the baseline that shows what bucketing saves).
        height_bucket (`float`, defaults to 0.2): width of the log-height bins (0.2 = heights within ~22% of each
            other share a bin); inside a bin samples are sorted by width.
        size_noise (`float`, defaults to 0.1): noise on the log-width sort key each epoch (and the bin edges shift
            randomly), so neighbouring sizes mix and batches are not the same every epoch.
        seed (`int`, defaults to 0): base seed; epoch `e` uses `(seed, e)`, identical on every process.
        num_replicas (`int`, defaults to 1): number of data-parallel processes; the batch count is made a multiple
            of it by splitting the largest batches, and batches are shuffled in groups of `num_replicas` so the
            processes of one step get batches of similar size.

    `len()` is the batch count of the current epoch; it may differ by a few batches between epochs.
    """

    # accelerate's BatchSamplerShard treats `batch_size=None` as "batches of varying length" (it shards whole batches
    # and, if needed, repeats whole batches); a number here would make it drop every batch not of that exact size.
    batch_size = None
    drop_last = False

    def __init__(
        self,
        sizes: Sequence[Sequence[int]] | np.ndarray,
        max_pixels: int,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        bucket: bool = True,
        height_bucket: float = 0.2,
        size_noise: float = 0.1,
        seed: int = 0,
        num_replicas: int = 1,
    ):
        sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        if max_batch_size is not None and max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        if height_bucket <= 0:
            raise ValueError(f"height_bucket must be positive, got {height_bucket}")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        self.sizes = sizes
        self.max_pixels = int(max_pixels)
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.bucket = bucket
        self.height_bucket = height_bucket
        self.size_noise = size_noise
        self.seed = seed
        self.num_replicas = num_replicas
        self.epoch = 0
        self.num_oversized = int((sizes[:, 0] * sizes[:, 1] > self.max_pixels).sum())
        self._cache: tuple[int, list[list[int]]] | None = None

    @classmethod
    def from_dataset(cls, dataset: Any, max_pixels: int, **kwargs) -> "PixelBudgetBatchSampler":
        """Build from a dataset with `height`/`width` columns (see [`dataset_sizes`])."""
        return cls(dataset_sizes(dataset), max_pixels, **kwargs)

    @property
    def sampler(self) -> "PixelBudgetBatchSampler":
        """Self; lets accelerate's `DataLoaderShard.set_epoch` find `set_epoch` through `BatchSamplerShard`."""
        # accelerate looks for `batch_sampler.batch_sampler.sampler.set_epoch` on a sharded loader.
        return self

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) batches the next iteration yields."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        """Everything needed to rebuild the same batches: seed and epoch."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore seed and epoch saved by [`state_dict`]."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The list of batches (lists of indices) for an epoch, the current one by default."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._make_batches(epoch))
        return self._cache[1]

    def _make_batches(self, epoch: int) -> list[list[int]]:
        n = len(self.sizes)
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        if rng is not None and not self.bucket:
            order = rng.permutation(n)
        else:
            # 2-D buckets: images padded together must agree in height *and* width, and sorting by area alone mixes
            # tall-narrow with short-wide ones. Bin by log-height (bins `height_bucket` wide, i.e. a constant height
            # ratio), then sort by width inside a bin; on CROHME this halves the padding of an area sort.
            log_h, log_w = np.log(np.maximum(self.sizes[:, 0], 1)), np.log(np.maximum(self.sizes[:, 1], 1))
            if rng is None:
                order = np.lexsort((log_w, np.floor(log_h / self.height_bucket)))
            else:
                # Per epoch: shift the bin edges and jitter the width key, so batches differ between epochs;
                # a random permutation first breaks remaining ties differently too.
                perm = rng.permutation(n)
                shift = rng.uniform(0.0, self.height_bucket)
                h_bin = np.floor((log_h[perm] + shift) / self.height_bucket)
                w_key = log_w[perm] + rng.uniform(-self.size_noise, self.size_noise, n)
                order = perm[np.lexsort((w_key, h_bin))]
        batches = pack_batches(order, self.sizes, self.max_pixels, self.max_batch_size)
        batches = _split_to_multiple(batches, self.num_replicas)
        if rng is not None:
            # Shuffle groups of `num_replicas` neighbouring batches: one optimizer step sees similar-size batches on
            # all processes (no process waits long for the others), while steps come in random order.
            groups = [batches[i : i + self.num_replicas] for i in range(0, len(batches), self.num_replicas)]
            batches = [b for g in rng.permutation(len(groups)) for b in groups[g]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def __len__(self) -> int:
        return len(self.batches())


def _split_to_multiple(batches: list[list[int]], multiple: int) -> list[list[int]]:
    """Split the largest batches in two until the count is a multiple of `multiple` (budget still holds)."""
    if multiple <= 1 or len(batches) % multiple == 0:
        return batches
    need = multiple - len(batches) % multiple
    batches = list(batches)
    for _ in range(need):
        i = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[i]) < 2:
            break  # fewer samples than processes: accelerate's even_batches repeats some batches instead
        half = math.ceil(len(batches[i]) / 2)
        # Keep neighbours adjacent so the split halves stay in the same size bucket.
        batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    return batches
