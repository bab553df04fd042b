"""Readers for the raw file formats, and conversion of their values to 8-bit levels.

* IDX, gzip-compressed (MNIST, Fashion-MNIST): ``read_idx_images``.
* The classic ``mnist.pkl.gz`` (a Python 2 pickle of numpy arrays): ``read_mnist_pkl_images``,
  through ``RestrictedUnpickler``, which can build numpy arrays and nothing else.
* MATLAB ``.mat`` files (OMNIGLOT ``chardata.mat``, ``frey_rawface.mat``): ``read_mat``.

Every reader raises ``DataError`` naming the file and what was expected, for truncated,
corrupt or malformed input alike.
"""

import gzip
import io
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy.io

from intvae.data.errors import DataError

IDX_UBYTE_3D_MAGIC = 0x00000803
"""IDX magic number of an image file: unsigned bytes, three dimensions (N, rows, cols)."""

IDX_HEADER_BYTES = 16


def expect_shape(array: np.ndarray, shape: Sequence[int | None], where: str) -> None:
    """Raise ``DataError`` unless ``array.shape`` matches ``shape`` (``None`` matches any size)."""
    ok = array.ndim == len(shape) and all(
        want is None or want == got for want, got in zip(shape, array.shape, strict=False)
    )
    if not ok:
        wanted = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"{where}: array of shape {array.shape}, expected {wanted}")


def read_gzip(path: Path) -> bytes:
    """Decompress a whole gzip file, turning truncation and corruption into ``DataError``."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: not a complete gzip file, truncated or corrupt ({e})") from e


def read_idx_images(path: Path) -> np.ndarray:
    """Read a gzipped IDX image file (magic 0x00000803) as a uint8 array (N, rows, cols)."""
    raw = read_gzip(path)
    if len(raw) < IDX_HEADER_BYTES:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header (16 bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:IDX_HEADER_BYTES])
    if magic != IDX_UBYTE_3D_MAGIC:
        raise DataError(
            f"{path}: IDX magic number {magic:#010x}, expected {IDX_UBYTE_3D_MAGIC:#010x} "
            "(an image file of unsigned bytes)"
        )
    expected = IDX_HEADER_BYTES + n * rows * cols
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw)} bytes after decompression, expected {expected} "
            f"for {n} images of {rows}x{cols}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=IDX_HEADER_BYTES).reshape(n, rows, cols)


def _numpy_array_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickle of plain numpy arrays needs, under numpy 1 and 2 names."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError``
    before anything is called, so a malicious pickle cannot run code.
    """

    _ALLOWED = _numpy_array_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only numpy arrays are allowed"
            ) from None


def read_mnist_pkl_images(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the images of the classic ``mnist.pkl.gz``: flat float arrays (train, valid, test).

    The file holds ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` written by
    Python 2; the labels are dropped.
    """
    raw = read_gzip(path)
    try:
        content = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    # Untrusted bytes can fail to parse in many ways (truncation, bad opcodes, bad arguments
    # to the array constructors); all of them mean a corrupt file.
    except Exception as e:
        raise DataError(f"{path}: not a readable pickle of numpy arrays ({e})") from e
    if not (isinstance(content, tuple | list) and len(content) == 3):
        raise DataError(f"{path}: expected a tuple (train, valid, test) of (images, labels)")
    images = []
    for split, pair in zip(("train", "valid", "test"), content, strict=True):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise DataError(f"{path}: {split} split is not an (images, labels) pair")
        x = pair[0]
        if not (isinstance(x, np.ndarray) and x.dtype.kind == "f"):
            raise DataError(f"{path}: {split} images are not a float array")
        expect_shape(x, (None, None), f"{path} ({split} images)")
        images.append(x)
    return images[0], images[1], images[2]


def levels_from_multiples(x: np.ndarray, denominator: int, where: str) -> np.ndarray:
    """Exact 8-bit levels ``k`` from a 2-D array of values stored as ``k / denominator``.

    Raises ``DataError`` if a value is not (to float32 precision) such a multiple, or if a level
    falls outside [0, 255].
    """

    def convert(rows: np.ndarray) -> np.ndarray:
        scaled = rows * denominator
        levels = np.rint(scaled)
        if not np.all(np.abs(scaled - levels) <= 1e-3):
            raise DataError(f"{where}: values are not multiples of 1/{denominator}")
        return levels

    return _levels_by_chunks(x, convert, where)


def quantize_unit_interval(x: np.ndarray, where: str) -> np.ndarray:
    """8-bit levels ``round(255 x)`` from a 2-D array of values in [0, 1]."""

    def convert(rows: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(rows)) or rows.min() < 0.0 or rows.max() > 1.0:
            raise DataError(f"{where}: values must be finite and within [0, 1]")
        return np.rint(rows * 255.0)

    return _levels_by_chunks(x, convert, where)


_CHUNK_ROWS = 4096  # converting a few thousand rows at a time keeps temporaries in cache


def _levels_by_chunks(
    x: np.ndarray, convert: Callable[[np.ndarray], np.ndarray], where: str
) -> np.ndarray:
    """Apply ``convert`` to float64 chunks of rows; check the levels and return them as uint8."""
    out = np.empty(x.shape, dtype=np.uint8)
    for start in range(0, len(x), _CHUNK_ROWS):
        levels = convert(np.asarray(x[start : start + _CHUNK_ROWS], dtype=np.float64))
        if levels.size and (levels.min() < 0 or levels.max() > 255):
            raise DataError(
                f"{where}: levels range over [{levels.min():g}, {levels.max():g}], "
                "expected [0, 255]"
            )
        out[start : start + _CHUNK_ROWS] = levels
    return out


def read_mat(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the named arrays of a MATLAB (v4 to v7.2) file."""
    try:
        content = scipy.io.loadmat(path)
    # scipy's parser signals truncated or garbage input with many exception types
    # (OSError, ValueError, IndexError, ...); all of them mean a corrupt file.
    except Exception as e:
        raise DataError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from e
    missing = [key for key in keys if key not in content]
    if missing:
        raise DataError(f"{path}: missing variable(s) {missing}; expected {list(keys)}")
    arrays = {key: content[key] for key in keys}
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "uif":
            raise DataError(f"{path}: variable '{key}' is not a numeric array")
    return arrays
