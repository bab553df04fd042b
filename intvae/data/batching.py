"""Batches sliced from a tensor that already lives on the training device.

``IndexBatches`` replaces a ``DataLoader`` for data held in memory as one tensor: no per-sample
``__getitem__``, no collation, no worker processes. Training passes draw a permutation from a
CPU generator seeded by ``(seed, epoch)`` (so the order is the same on every device type and a
run resumed at epoch ``e`` sees the same order as an uninterrupted one) and gather each batch
on the device. Evaluation passes yield contiguous views, in order.

Sharding over ``world_size`` ranks (DDP):

* training: the permutation's first ``world_size * b * batch_size`` indices are cut into one
  block per rank, ``b = (n // world_size) // batch_size``; every rank gets exactly ``b`` full
  batches and the remainder of the epoch's permutation is dropped (with one rank too);
* evaluation: rank ``r`` gets the ``r``-th of ``world_size`` contiguous chunks (sizes differing
  by at most one), cut into the same number of near-equal batches on every rank (none larger
  than ``batch_size``). No sample is duplicated or dropped, so sums of per-image values over
  ranks are exact; batches may be smaller than ``batch_size``. (With ``batch_size`` 1 and a
  split size not divisible by ``world_size`` this is impossible, and a ``ValueError`` says so.)
"""

import math
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch

from intvae.checks import ParameterError

SHUFFLE_STREAM = 0
"""Stream number of the per-epoch permutations in ``derive_seed``."""


def derive_seed(*words: int) -> int:
    """A 64-bit seed mixed from non-negative ints, e.g. ``(seed, epoch, SHUFFLE_STREAM)``.

    Mixing through numpy's ``SeedSequence`` keeps tuples such as (0, 1, s) and (1, 0, s) apart,
    and the shuffling and binarization streams independent.
    """
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0])


def train_batch_indices(
    permutation: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Rank ``rank``'s training batches, shape (batches, batch_size), cut from a permutation."""
    per_rank = num_train_batches(permutation.numel(), batch_size, world_size) * batch_size
    return permutation[: world_size * per_rank].view(world_size, -1, batch_size)[rank]


def num_train_batches(n: int, batch_size: int, world_size: int = 1) -> int:
    """Full training batches per rank; ``ParameterError`` if there is not even one."""
    batches = (n // world_size) // batch_size
    if batches == 0:
        raise ParameterError(
            f"{n} training images cannot fill one batch of {batch_size} on each of "
            f"{world_size} rank(s)"
        )
    return batches


def even_bounds(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """Cut ``range(start, stop)`` into ``parts`` contiguous pieces whose sizes differ by <= 1."""
    size, extra = divmod(stop - start, parts)
    bounds, lo = [], start
    for i in range(parts):
        hi = lo + size + (i < extra)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def eval_batch_bounds(
    n: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, int]]:
    """Rank ``rank``'s evaluation batches as (start, stop) slices of the split."""
    chunks = even_bounds(0, n, world_size)
    batches = max(1, math.ceil(max(hi - lo for lo, hi in chunks) / batch_size))
    lo, hi = chunks[rank]
    if hi - lo < batches:
        raise ParameterError(
            f"{n} evaluation images cannot be cut into equally many batches of at most "
            f"{batch_size} on each of {world_size} ranks; use a larger eval_batch_size"
        )
    return even_bounds(lo, hi, batches)


class EpochData(Protocol):
    """Data that changes with the epoch (for example a fresh binarization each epoch)."""

    def __len__(self) -> int: ...

    def for_epoch(self, epoch: int) -> torch.Tensor: ...


class IndexBatches:
    """An iterable of batches sliced from ``data`` (rows are samples), with ``__len__``.

    ``data`` is a tensor, or an ``EpochData`` whose tensor is drawn per epoch. The epoch of a
    pass is ``epoch_fn()`` when that is given and returns an int (the datamodule passes the
    trainer's ``current_epoch``), else the value last given to ``set_epoch`` (0 at first).
    """

    def __init__(
        self,
        data: torch.Tensor | EpochData,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int | None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch_fn = epoch_fn
        self.epoch = 0
        self.num_samples = len(data)
        if train:
            self._len = num_train_batches(self.num_samples, batch_size, world_size)
        else:
            self._bounds = eval_batch_bounds(self.num_samples, batch_size, rank, world_size)
            self._len = len(self._bounds)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next passes (when ``epoch_fn`` gives none)."""
        self.epoch = epoch

    def current_epoch(self) -> int:
        """The epoch the next pass will use."""
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        return self.epoch if epoch is None else epoch

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch = self.current_epoch()
        data = self.data if isinstance(self.data, torch.Tensor) else self.data.for_epoch(epoch)
        if not self.train:
            for lo, hi in self._bounds:
                yield data[lo:hi]
            return
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, SHUFFLE_STREAM))
        permutation = torch.randperm(self.num_samples, generator=generator)
        batches = train_batch_indices(permutation, self.batch_size, self.rank, self.world_size)
        for indices in batches.to(data.device):
            yield data.index_select(0, indices)
