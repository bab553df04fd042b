"""One training epoch of ``IndexBatches`` versus a ``DataLoader`` over a ``TensorDataset``.

Usage: ``python benchmarks/data.py [--root DIR] [--device cpu|cuda] [--repeats 7] [--threads 1]``

Every method shuffles and serves the same in-memory float32 tensor in batches of 100: MNIST's
training split when it is cached under the data root, else 50,000 synthetic 28x28 images. The
methods run interleaved (one epoch of each per repeat, after one warm-up epoch each); the
median and minimum epoch times are printed, with the ratio of the medians.

* ``IndexBatches``: this package's batching (a seeded permutation, one gather per batch).
* ``DataLoader(shuffle=True)``: the usual loader: one ``__getitem__`` per image, then collation.
* ``DataLoader(BatchSampler)``: the loader fed whole batches of indices (one indexing per
  batch), to separate the cost of per-image fetching from the loader's own overhead.
"""

import argparse
import statistics
import time
from collections.abc import Callable, Iterable

import torch
from common import load
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from intvae.data.batching import IndexBatches
from intvae.data.cache import cache_path, data_root, read_cache
from intvae.data.preprocessing import scale_levels
from intvae.data.registry import DATASETS
from intvae.data.synthetic import synthetic_images

BATCH_SIZE = 100


def training_images(root: str | None) -> tuple[torch.Tensor, str]:
    """MNIST's training levels if cached, else 50,000 synthetic images; and what they are."""
    spec = DATASETS["mnist"]
    path = cache_path(spec, data_root(root))
    if path.exists():
        levels, what = read_cache(path, spec)[0]["train"], f"MNIST training split ({path})"
    else:
        levels, what = synthetic_images(50_000, seed=0), "50,000 synthetic images (no MNIST cache)"
    return torch.tensor(levels).reshape(len(levels), -1), what


def consume(batches: Iterable) -> int:
    """Run through one epoch, touching every batch; return the number of batches."""
    count = 0
    for batch in batches:
        batch = batch[0] if isinstance(batch, list | tuple) else batch
        batch.sum()
        count += 1
    return count


def methods(x: torch.Tensor) -> dict[str, Callable[[int], Iterable]]:
    """Each method: epoch number -> an iterable over that epoch's batches."""
    dataset = TensorDataset(x)

    def index_batches(epoch: int) -> Iterable:
        batches = IndexBatches(x, BATCH_SIZE, train=True, seed=0)
        batches.set_epoch(epoch)
        return batches

    def dataloader(epoch: int) -> Iterable:
        generator = torch.Generator().manual_seed(epoch)
        return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, generator=generator)

    def dataloader_batched(epoch: int) -> Iterable:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(epoch))
        batches = BatchSampler(sampler, batch_size=BATCH_SIZE, drop_last=True)
        return DataLoader(dataset, sampler=batches, batch_size=None)

    return {
        "IndexBatches": index_batches,
        "DataLoader(shuffle=True)": dataloader,
        "DataLoader(BatchSampler)": dataloader_batched,
    }


def timed_epoch(make_epoch: Callable[[int], Iterable], epoch: int, device: torch.device) -> float:
    start = time.perf_counter()
    consume(make_epoch(epoch))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="data directory holding mnist.npz (default: the cache)")
    parser.add_argument("--device", default="cpu", help="device holding the tensor")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the app's default: 1; with other processes on "
                             "the cores, 2 OpenMP threads made each gather about 100x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    levels, what = training_images(args.root)
    x = scale_levels(levels.to(device), eps=1e-3)
    print(f"# {load()} (before); {torch.get_num_threads()} torch threads")
    print(f"data: {what}: {tuple(x.shape)} float32 on {device}")
    print(f"batch size {BATCH_SIZE}; {args.repeats} interleaved repeats after one warm-up each")
    candidates = methods(x)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for name, make_epoch in candidates.items():
        print(f"  {name}: {consume(make_epoch(0))} batches per epoch")
    for repeat in range(args.repeats):
        for name, make_epoch in candidates.items():
            times[name].append(timed_epoch(make_epoch, repeat + 1, device))
    print(f"{'method':28s} {'median s':>10s} {'min s':>10s} {'images/s':>12s}")
    for name, values in times.items():
        median = statistics.median(values)
        rate = len(x) / median
        print(f"{name:28s} {median:10.4f} {min(values):10.4f} {rate:12,.0f}")
    reference = statistics.median(times["IndexBatches"])
    for name in list(candidates)[1:]:
        ratio = statistics.median(times[name]) / reference
        print(f"median epoch time, {name} / IndexBatches: {ratio:.1f}x")
    print(f"# {load()} (after)")


if __name__ == "__main__":
    main()
