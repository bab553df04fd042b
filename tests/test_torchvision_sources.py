"""The torchvision source of MNIST and Fashion-MNIST: a torchvision root read in place, offline."""

import re
import struct
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torchvision
from data_fixtures import (
    SMALL_MNIST_SIZES,
    forbid_network,
    random_levels,
    write_idx_images,
)

from intvae.data import registry
from intvae.data.errors import DataError, DataUnavailableError, SourceError
from intvae.data.fetch import fetch, load_levels
from intvae.data.registry import idx_train_test, torchvision_train_test
from intvae.data.sources import ENV_TORCHVISION_ROOT, TorchvisionRoot

N_VAL = SMALL_MNIST_SIZES["val"]
DATASETS = [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path / "data-dir")


def write_uncompressed_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """An IDX file as torchvision extracts it: big-endian header, then the bytes, no gzip."""
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes())


def make_torchvision_root(root: Path, dataset_class: str) -> tuple[Path, dict[str, np.ndarray]]:
    """What ``torchvision.datasets.<dataset_class>(root, download=True)`` leaves in
    ``root/<dataset_class>/raw``, with a few random images: the gzipped files it downloaded and
    the image and label files it extracted. Returns the raw folder and the images by file."""
    raw = root / dataset_class / "raw"
    raw.mkdir(parents=True)
    n_train = SMALL_MNIST_SIZES["train"] + SMALL_MNIST_SIZES["val"]
    images = {"train": random_levels(n_train, seed=3), "t10k": random_levels(20, seed=4)}
    for prefix, levels in images.items():
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte.gz", levels)
        write_uncompressed_idx(raw / f"{prefix}-images-idx3-ubyte", levels, 0x00000803)
        labels = np.arange(len(levels), dtype=np.uint8) % 10
        write_uncompressed_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x00000801)
    return raw, images


def small_torchvision_source(name: str) -> TorchvisionRoot:
    """The registry's torchvision source of dataset ``name``, splitting off ``N_VAL`` images."""
    (source,) = [s for s in registry.DATASETS[name].sources if isinstance(s, TorchvisionRoot)]
    return replace(source, convert=partial(torchvision_train_test, n_val=N_VAL))


def delivered_splits(source: TorchvisionRoot, workdir: Path) -> dict[str, np.ndarray]:
    return source.convert(source.fetch(workdir).paths)


@pytest.mark.parametrize("name, dataset_class", DATASETS)
def test_the_test_layout_is_what_torchvision_reads(tmp_path, name, dataset_class):
    _, images = make_torchvision_root(tmp_path, dataset_class)
    for train, prefix in ((True, "train"), (False, "t10k")):
        dataset = getattr(torchvision.datasets, dataset_class)(tmp_path, train=train)
        np.testing.assert_array_equal(dataset.data.numpy(), images[prefix])


@pytest.mark.parametrize("name, dataset_class", DATASETS)
def test_the_source_gives_the_arrays_of_the_idx_reader(monkeypatch, tmp_path, name, dataset_class):
    raw, _ = make_torchvision_root(tmp_path / "torchvision", dataset_class)
    monkeypatch.setenv(ENV_TORCHVISION_ROOT, str(tmp_path / "torchvision"))
    source = small_torchvision_source(name)
    assert source.describe() == f"torchvision {dataset_class} files in {raw}"
    got = delivered_splits(source, tmp_path)
    gzipped = {f: raw / f for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")}
    want = idx_train_test(gzipped, n_val=N_VAL)
    assert list(got) == list(want) == ["train", "val", "test"]
    for split in want:
        assert got[split].dtype == np.uint8
        np.testing.assert_array_equal(got[split], want[split])


def test_the_registry_reads_torchvision_roots_before_downloading():
    for spec, local_before in ((registry.MNIST, 0), (registry.FASHION_MNIST, 1)):
        kinds = [type(source).__name__ for source in spec.sources]
        assert kinds.index("TorchvisionRoot") == local_before, kinds
        assert not any(source.network for source in spec.sources[: local_before + 1])
        assert all(source.network for source in spec.sources[local_before + 1 :])


def test_fetch_caches_the_torchvision_copy_offline(monkeypatch, tmp_path):
    raw, images = make_torchvision_root(tmp_path / "torchvision", "MNIST")
    monkeypatch.setenv(ENV_TORCHVISION_ROOT, str(tmp_path / "torchvision"))
    network = [s for s in registry.MNIST.sources if s.network]
    spec = replace(registry.MNIST, split_sizes=SMALL_MNIST_SIZES,
                   sources=(small_torchvision_source("mnist"), *network))
    monkeypatch.setitem(registry.DATASETS, "mnist", spec)
    before = sorted(p.name for p in raw.iterdir())
    result = fetch("mnist", tmp_path / "cache")
    assert result.source == f"torchvision MNIST files in {raw}"
    levels = load_levels("mnist", tmp_path / "cache")
    np.testing.assert_array_equal(levels["val"], images["train"][-N_VAL:])
    np.testing.assert_array_equal(levels["test"], images["t10k"])
    assert sorted(p.name for p in raw.iterdir()) == before  # read in place, nothing added


def test_offline_nothing_is_downloaded_into_an_empty_torchvision_root(monkeypatch, tmp_path):
    """The real MNIST sources offline: the torchvision root is read, every other source is
    skipped, and the root stays empty (torchvision is never asked to download)."""
    downloads = []
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive",
                        lambda *args, **kwargs: downloads.append(args))
    root = tmp_path / "torchvision"
    (root / "MNIST" / "raw").mkdir(parents=True)
    monkeypatch.setenv(ENV_TORCHVISION_ROOT, str(root))
    with pytest.raises(DataUnavailableError) as error:
        fetch("mnist", tmp_path / "cache")
    message = str(error.value)
    raw = root / "MNIST" / "raw"
    reason = f"train-images-idx3-ubyte not found in {raw}"
    assert f"torchvision MNIST files in {raw}: {reason}" in message
    skipped = message.count("skipped, offline mode")
    assert skipped == sum(source.network for source in registry.MNIST.sources) == 3
    assert list(raw.iterdir()) == [] and downloads == []


@pytest.mark.parametrize("missing", ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"])
def test_a_missing_file_is_named(monkeypatch, tmp_path, missing):
    raw, _ = make_torchvision_root(tmp_path / "torchvision", "MNIST")
    (raw / missing).unlink()
    monkeypatch.setenv(ENV_TORCHVISION_ROOT, str(tmp_path / "torchvision"))
    with pytest.raises(SourceError, match=f"^{missing} not found in {re.escape(str(raw))}$"):
        small_torchvision_source("mnist").fetch(tmp_path)


def truncated(data: bytes) -> bytes:
    return data[:-5]


def label_file(data: bytes) -> bytes:
    """The header of a one-dimensional file (labels) followed by the images' bytes."""
    return struct.pack(">II", 0x00000801, len(data) - 16) + data[16:]


def empty(data: bytes) -> bytes:
    return b""


def extra_bytes(data: bytes) -> bytes:
    return data + b"\0"


@pytest.mark.parametrize("corrupt", [truncated, label_file, empty, extra_bytes])
def test_a_corrupt_file_is_named(monkeypatch, tmp_path, corrupt):
    raw, _ = make_torchvision_root(tmp_path / "torchvision", "MNIST")
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    monkeypatch.setenv(ENV_TORCHVISION_ROOT, str(tmp_path / "torchvision"))
    not_idx = f"^{re.escape(str(path))}: not an IDX file of unsigned-byte images"
    with pytest.raises(DataError, match=not_idx):
        delivered_splits(small_torchvision_source("mnist"), tmp_path)


def test_without_a_torchvision_root_the_source_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_TORCHVISION_ROOT, raising=False)
    source = small_torchvision_source("fashion_mnist")
    folder = "$TORCHVISION_DATA_DIR/FashionMNIST/raw"
    assert source.describe() == f"torchvision FashionMNIST files in {folder}"
    with pytest.raises(SourceError, match="^TORCHVISION_DATA_DIR is not set"):
        source.fetch(tmp_path)
    monkeypatch.setenv(ENV_TORCHVISION_ROOT, str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match="does not exist"):
        source.fetch(tmp_path)
