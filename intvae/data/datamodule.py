"""``ImageDataModule``: the image datasets as float32 tensors resident on the training device."""

import math
import os
from collections.abc import Mapping

import lightning as L
import torch

from intvae.checks import finite_float, integer, require
from intvae.data.batching import EpochData, IndexBatches
from intvae.data.fetch import fetch, load_levels
from intvae.data.preprocessing import DynamicBinarization, eval_binarization, scale_levels
from intvae.data.registry import SPLITS, lookup

STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


class ImageDataModule(L.LightningDataModule):
    """Serves one dataset (``conf/data/<name>.yaml``) as batches of flattened images.

    Each split is converted once, in ``setup``, to a float32 tensor of shape
    ``(N, C * H * W)`` and moved to the trainer's root device (the CPU without a trainer);
    the dataloaders are ``IndexBatches`` that slice that tensor, so Lightning's own batch
    transfer finds every batch already in place. Under DDP each rank gets its own shard
    (see ``intvae.data.batching``); exact evaluation runs on one device, or sums per-image
    values over ranks (no sample is duplicated).

    Values: a pixel of level ``k`` is ``eps + (1 - 2 eps) k / (levels - 1)``, see
    ``intvae.data.preprocessing``.

    Args:
        name: one of ``intvae.data.DATASET_NAMES``.
        root: data directory; ``None`` uses ``INTVAE_DATA_DIR`` or the per-user cache.
        batch_size: training batch size (the remainder of each epoch is dropped).
        eval_batch_size: largest validation and test batch (default: ``batch_size``).
        eps: rescaling of [0, 1] to [eps, 1 - eps] (not applied to binarized sets).
        seed: seeds each epoch's shuffle (and binarization) as ``(seed, epoch)``.
        offline: skip network sources when fetching (``None``: the ``INTVAE_OFFLINE`` variable).
        sizes: images per split, for the generated ``synthetic`` set only.
        eval_binarization_seed: seed of the fixed validation/test binarization (binarized sets).

    Attributes:
        image_shape: ``(C, H, W)``.
        num_pixels: ``C * H * W``.
        levels: number of pixel levels: 256, or 2 for binarized sets.
        eps: the rescaling applied (0.0 for binarized sets).
        binarized: whether the images are dynamically binarized.
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str] | None = None,
        batch_size: int = 100,
        eval_batch_size: int | None = None,
        eps: float = 1e-3,
        seed: int = 0,
        offline: bool | None = None,
        sizes: Mapping[str, int] | None = None,
        eval_binarization_seed: int = 0,
    ) -> None:
        super().__init__()
        spec, binarized = lookup(name)
        eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        integer("batch_size", batch_size, 1)
        integer("eval_batch_size", eval_batch_size, 1)
        require("eps", eps, 0.0 <= finite_float("eps", eps, "a number in [0, 0.5)") < 0.5,
                "a number in [0, 0.5)")
        integer("seed", seed, 0)
        integer("eval_binarization_seed", eval_binarization_seed, 0)
        require("sizes", sizes, sizes is None or spec.generate is not None,
                f"null for {name!r}: sizes can be chosen for generated datasets only")
        self.name = name
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.offline = offline
        self.sizes = None if sizes is None else {k: int(v) for k, v in sizes.items()}
        self.eval_binarization_seed = eval_binarization_seed
        self.generated = spec.generate is not None
        self.image_shape: tuple[int, int, int] = spec.image_shape
        self.num_pixels = math.prod(spec.image_shape)
        self.binarized = binarized
        self.levels = 2 if binarized else 256
        self.eps = 0.0 if binarized else float(eps)
        self._splits: dict[str, torch.Tensor | EpochData] = {}

    def prepare_data(self) -> None:
        """Fetch the dataset into the cache (Lightning runs this on one process per node)."""
        if not self.generated:
            fetch(self.name, self.root, offline=self.offline)

    def setup(self, stage: str | None = None) -> None:
        """Load the splits ``stage`` needs (all for ``None``) onto the device."""
        missing = [s for s in STAGE_SPLITS.get(stage or "", SPLITS) if s not in self._splits]
        if not missing:
            return
        levels = load_levels(self.name, self.root, offline=self.offline, sizes=self.sizes)
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        for split in missing:
            flat = torch.tensor(levels[split]).reshape(len(levels[split]), self.num_pixels)
            if not self.binarized:
                self._splits[split] = scale_levels(flat.to(device), self.eps)
            elif split == "train":
                self._splits[split] = DynamicBinarization(flat.to(device), self.seed)
            else:
                seed = self.eval_binarization_seed
                self._splits[split] = eval_binarization(flat, seed, SPLITS.index(split)).to(device)

    def teardown(self, stage: str | None = None) -> None:
        """Release the splits of ``stage`` (all for ``None``)."""
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            self._splits.pop(split, None)

    def train_dataloader(self) -> IndexBatches:
        return self._batches("train", self.batch_size, train=True)

    def val_dataloader(self) -> IndexBatches:
        return self._batches("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> IndexBatches:
        return self._batches("test", self.eval_batch_size, train=False)

    def whole_split(self, split: str) -> IndexBatches:
        """All of ``split`` (``val`` or ``test``) in order, never sharded over DDP ranks: for the
        exact evaluation on one device (``intvae.evaluate``), also on rank 0 of a DDP run."""
        return IndexBatches(self._loaded(split), self.eval_batch_size, train=False,
                            seed=self.seed)

    def _loaded(self, split: str) -> torch.Tensor | EpochData:
        if split not in self._splits:
            raise RuntimeError(f"the {split} split is not loaded: call setup() first")
        return self._splits[split]

    def _batches(self, split: str, batch_size: int, *, train: bool) -> IndexBatches:
        rank, world_size = self._rank_and_world_size()
        return IndexBatches(
            self._loaded(split),
            batch_size,
            train=train,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            epoch_fn=self._trainer_epoch,
        )

    def _trainer_epoch(self) -> int | None:
        return None if self.trainer is None else self.trainer.current_epoch

    def _rank_and_world_size(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
