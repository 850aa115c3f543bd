#!/usr/bin/env python
"""Data-layer numbers for docs/data.md: CROHME prepare time (first run, cached reload), padding of random vs.
bucketed batching at the same pixel budget, and augmentation throughput.

    python scripts/benchmark_data.py [--crohme-dir ../shared/data/crohme] [--num-proc 2] [--out DIR]

Without --out the first run writes to a temporary folder (deleted afterwards), so it always measures a cold build.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hmer_hf.data import (  # noqa: E402
    PixelBudgetBatchSampler,
    build_augmentation,
    dataset_sizes,
    pack_batches,
    padding_fraction,
    prepare_crohme,
)
from hmer_hf.data.prepare import DEFAULT_CROHME_DIR  # noqa: E402


def time_prepare(crohme_dir: Path, out: Path, num_proc: int, force: bool):
    """Seconds for a (forced) build and for the cached reload, plus the dataset."""
    start = time.perf_counter()
    dd, report = prepare_crohme(crohme_dir, out, force=force, num_proc=num_proc, progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    dd, report = prepare_crohme(crohme_dir, out, num_proc=num_proc, progress=False)
    cached = time.perf_counter() - start
    return first, cached, dd, report


def padding_table(sizes: np.ndarray, budgets: list[int], epochs: int = 3) -> list[dict]:
    """Padding fraction and batches/epoch for random, area-sorted and 2-D bucketed batching at each budget."""
    rows = []
    area_order = np.argsort(sizes[:, 0] * sizes[:, 1], kind="stable")
    for budget in budgets:
        row = {"budget": budget}
        for name, kwargs in (("random", {"bucket": False}), ("bucketed", {})):
            sampler = PixelBudgetBatchSampler(sizes, budget, seed=0, **kwargs)
            fracs, counts = [], []
            for epoch in range(epochs):
                batches = sampler.batches(epoch)
                fracs.append(padding_fraction(batches, sizes))
                counts.append(len(batches))
            row[name] = (float(np.mean(fracs)), float(np.mean(counts)))
        area = pack_batches(area_order, sizes, budget)  # 1-D sort by area, for comparison (no shuffling)
        row["area_sorted"] = (padding_fraction(area, sizes), float(len(area)))
        rows.append(row)
    return rows


def augmentation_rate(dataset, preset: str, n: int, batch_size: int = 16) -> float:
    """Images/s through `dataset.with_transform(augmentation)` (decode + augment, one process)."""
    aug = build_augmentation(preset, seed=0)
    ds = dataset.select(range(min(n, len(dataset)))).select_columns(["image", "height", "width"]).with_transform(aug)
    start = time.perf_counter()
    for i in range(0, len(ds), batch_size):
        ds[i : i + batch_size]
    return len(ds) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crohme-dir", type=Path, default=Path(DEFAULT_CROHME_DIR))
    parser.add_argument("--out", type=Path, default=None, help="prepared-data folder (default: a temporary one)")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--budgets", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000, 4_000_000])
    parser.add_argument("--aug-images", type=int, default=2000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "crohme"
        first, cached, dd, report = time_prepare(args.crohme_dir, out, args.num_proc, force=args.out is None)
        train = dd["train"]
        print(f"## Prepare CROHME ({args.crohme_dir}, num_proc={args.num_proc})")
        print(f"first run: {first:.1f} s{'' if args.out is None else ' (or cached, --out given)'}; "
              f"cached reload: {cached:.3f} s")
        print(f"splits: {', '.join(f'{k}={v.num_rows}' for k, v in dd.items())}; {report.summary()}")

        sizes = dataset_sizes(train)
        print(f"\n## Image sizes (train, n={len(sizes)})")
        for q in (5, 50, 95, 100):
            print(f"p{q}: height {int(np.percentile(sizes[:, 0], q))}, width {int(np.percentile(sizes[:, 1], q))}")

        print("\n## Padding fraction (padded / total batch pixels), mean over 3 epochs; batches per epoch")
        print("| max_pixels | random | area-sorted | 2-D bucketed (default) |")
        print("|---|---|---|---|")
        for row in padding_table(sizes, args.budgets):
            cells = [f"{row[k][0]:.3f} ({row[k][1]:.0f})" for k in ("random", "area_sorted", "bucketed")]
            print(f"| {row['budget']:,} | " + " | ".join(cells) + " |")

        print(f"\n## Augmentation throughput (decode + augment, 1 process, {args.aug_images} train images)")
        for preset in ("none", "comer", "san", "handwriting", "elastic"):
            print(f"{preset}: {augmentation_rate(train, preset, args.aug_images):.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
