"""Image datasets for intvae: fetching, caching and device-resident batching.

Datasets (``DATASET_NAMES``): ``mnist`` (continuous), ``binarized_mnist`` (dynamically
binarized), ``omniglot`` (28x28 ``chardata.mat`` of the IWAE papers), ``frey`` (Frey faces),
``fashion_mnist`` and ``synthetic`` (generated, for tests). ``registry`` documents the splits,
``fetch`` the sources and the file lock, ``cache`` the cache files, ``batching`` the batches.

Command line: ``python -m intvae.data fetch NAME [--root DIR]`` and
``python -m intvae.data info NAME [--root DIR]``.

``ImageDataModule`` and ``IndexBatches`` are imported lazily, so that fetching data does not
import torch or Lightning.
"""

from typing import TYPE_CHECKING

from intvae.data.cache import data_root
from intvae.data.errors import DataError, DataUnavailableError, SourceError
from intvae.data.fetch import FetchResult, fetch, load_levels
from intvae.data.registry import DATASET_NAMES

if TYPE_CHECKING:
    from intvae.data.batching import IndexBatches
    from intvae.data.datamodule import ImageDataModule

__all__ = [
    "DATASET_NAMES",
    "DataError",
    "DataUnavailableError",
    "FetchResult",
    "ImageDataModule",
    "IndexBatches",
    "SourceError",
    "data_root",
    "fetch",
    "load_levels",
]


def __getattr__(name: str) -> object:
    if name == "ImageDataModule":
        from intvae.data.datamodule import ImageDataModule

        return ImageDataModule
    if name == "IndexBatches":
        from intvae.data.batching import IndexBatches

        return IndexBatches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
