"""Helpers for the data tests: small files in each real format, and small dataset specs.

Also used by the child processes of the concurrent-fetch test (``child_fetch``), which is why
it is a plain module rather than a conftest.
"""

import gzip
import hashlib
import json
import pickle
import socket
import struct
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import scipy.io

from intvae.data import registry
from intvae.data.registry import DatasetSpec, idx_train_test
from intvae.data.sources import LocalDir, RawFile, Source

SMALL_MNIST_SIZES = {"train": 40, "val": 10, "test": 20}
IDX_NAMES = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def forbid_network(monkeypatch, data_dir: Path) -> None:
    """Offline mode, a private data directory, and sockets that refuse to connect."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the data tests")

    monkeypatch.setenv("INTVAE_OFFLINE", "1")
    monkeypatch.setenv("INTVAE_DATA_DIR", str(data_dir))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_levels(n: int, shape: tuple[int, int] = (28, 28), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_idx_images(path: Path, images: np.ndarray, magic: int = 0x00000803) -> Path:
    n, rows, cols = images.shape
    path.write_bytes(gzip.compress(struct.pack(">IIII", magic, n, rows, cols) + images.tobytes()))
    return path


def write_mnist_pkl(path: Path, splits: list[np.ndarray]) -> Path:
    """The classic layout: ((x, y), (x, y), (x, y)), images flat float32 ``k / 256``.

    Written with protocol 4: Python 3's protocol 2 routes bytes through ``_codecs.encode``,
    which the real (Python 2) file does not use and the restricted unpickler refuses.
    """
    content = tuple(
        ((levels.reshape(len(levels), -1) / 256.0).astype(np.float32), np.zeros(len(levels)))
        for levels in splits
    )
    path.write_bytes(gzip.compress(pickle.dumps(content, protocol=4)))
    return path


def column_major_columns(images: np.ndarray) -> np.ndarray:
    """Images as MATLAB stores them in the .mat files: one column-major image per column."""
    return np.stack([image.reshape(-1, order="F") for image in images], axis=1)


def write_chardata(path: Path, train: np.ndarray, test: np.ndarray) -> Path:
    """An OMNIGLOT ``chardata.mat`` with float values ``levels / 255``."""
    scipy.io.savemat(
        path,
        {
            "data": column_major_columns(train) / 255.0,
            "testdata": column_major_columns(test) / 255.0,
        },
    )
    return path


def write_frey(path: Path, faces: np.ndarray) -> Path:
    """A ``frey_rawface.mat``: key ``ff``, uint8 (560, N), one 28x20 face per column."""
    scipy.io.savemat(path, {"ff": faces.reshape(len(faces), -1).T.copy()})
    return path


def make_mnist_idx_files(directory: Path) -> dict[str, np.ndarray]:
    """Small IDX files in ``directory``; returns the splits they should give."""
    directory.mkdir(parents=True, exist_ok=True)
    n_train = SMALL_MNIST_SIZES["train"] + SMALL_MNIST_SIZES["val"]
    train, test = random_levels(n_train, seed=1), random_levels(SMALL_MNIST_SIZES["test"], seed=2)
    write_idx_images(directory / IDX_NAMES[0], train)
    write_idx_images(directory / IDX_NAMES[1], test)
    n_val = SMALL_MNIST_SIZES["val"]
    return {"train": train[:-n_val], "val": train[-n_val:], "test": test}


def idx_files(directory: Path, checksums: bool = True) -> tuple[RawFile, ...]:
    """RawFile entries for the IDX files in ``directory`` (with their real sha256 or none)."""
    return tuple(
        RawFile(name, (f"sha256:{sha256_of(directory / name)}",) if checksums else ())
        for name in IDX_NAMES
    )


SMALL_IDX_CONVERT = partial(idx_train_test, n_val=SMALL_MNIST_SIZES["val"])


def small_mnist_spec(*sources: Source) -> DatasetSpec:
    """MNIST's spec with small split sizes and the given sources."""
    return replace(registry.MNIST, split_sizes=SMALL_MNIST_SIZES, sources=sources)


def local_idx_source(directory: Path, label: str = "test files", **kwargs) -> LocalDir:
    return LocalDir(
        directory=directory,
        label=label,
        files=kwargs.pop("files", None) or idx_files(directory),
        convert=kwargs.pop("convert", SMALL_IDX_CONVERT),
    )


def counting_convert(counter: Path, delay: float):
    """``SMALL_IDX_CONVERT`` that appends a line to ``counter`` and takes ``delay`` seconds."""

    def convert(files):
        with open(counter, "a") as f:
            f.write("converted\n")
        time.sleep(delay)
        return SMALL_IDX_CONVERT(files)

    return convert


def child_fetch(source_dir: str, root: str, counter: str, delay: str) -> None:
    """Entry point of a child process: fetch small MNIST, print the result and timing as JSON."""
    from intvae.data.fetch import fetch

    spec = small_mnist_spec(
        local_idx_source(Path(source_dir), convert=counting_convert(Path(counter), float(delay)))
    )
    registry.DATASETS["mnist"] = spec
    started = time.time()
    result = fetch("mnist", root)
    finished = time.time()
    print(
        json.dumps(
            {"path": str(result.path), "source": result.source, "during": [started, finished]}
        )
    )


if __name__ == "__main__":
    child_fetch(*sys.argv[1:])
