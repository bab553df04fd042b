"""The on-disk cache: one ``<root>/<name>.npz`` per dataset, uint8 images per split.

A cache file holds arrays ``train``, ``val`` and ``test`` of shape (N, H, W), dtype uint8 (the
8-bit levels), and ``meta``, a JSON string: format version, dataset name, the source that
served it, the sha256 of each raw file and the sha256 of each split's bytes. Files are written
atomically (temporary file in the same directory, fsync, ``os.replace``) and fully checked
when read; an invalid file raises ``DataError`` telling the user to delete it.

The data directory is, in order: the ``root`` argument (``data.root`` in the config), the
``INTVAE_DATA_DIR`` environment variable, ``$XDG_CACHE_HOME/intvae``, ``~/.cache/intvae``.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from intvae.data.errors import DataError
from intvae.data.formats import expect_shape
from intvae.data.registry import SPLITS, DatasetSpec
from intvae.data.sources import Splits

CACHE_FORMAT = 1
ENV_DATA_DIR = "INTVAE_DATA_DIR"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data directory (see the module docstring for the order of precedence)."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "intvae"


def cache_path(spec: DatasetSpec, root: Path) -> Path:
    """Where ``spec``'s cache file lives under ``root``."""
    return root / f"{spec.name}.npz"


def split_sha256(images: np.ndarray) -> str:
    """sha256 of a split's bytes in C order."""
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def check_splits(splits: Splits, spec: DatasetSpec, where: str) -> Splits:
    """Check split names, dtype and shapes against ``spec``; return C-contiguous copies."""
    if set(splits) != set(SPLITS):
        raise DataError(f"{where}: splits {sorted(splits)}, expected {list(SPLITS)}")
    _, height, width = spec.image_shape
    checked = {}
    for split in SPLITS:
        images = splits[split]
        if images.dtype != np.uint8:
            raise DataError(f"{where}: {split} images have dtype {images.dtype}, expected uint8")
        expect_shape(images, (spec.split_sizes[split], height, width), f"{where} ({split} split)")
        checked[split] = np.ascontiguousarray(images)
    return checked


def write_cache(path: Path, splits: Splits, meta: dict) -> dict:
    """Write a cache file atomically (a crash leaves no file or a complete one).

    Returns the metadata written: ``meta`` plus the sha256 of each split.
    """
    meta = {**meta, "splits": {split: {"sha256": split_sha256(a)} for split, a in splits.items()}}
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)), **splits)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp creates 0600; others may share the cache
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return meta


def read_cache(path: Path, spec: DatasetSpec) -> tuple[Splits, dict]:
    """Read and fully check a cache file: (splits of uint8 images, metadata)."""

    def invalid(why: str) -> DataError:
        return DataError(
            f"cache file {path} is invalid: {why}. Delete it and run "
            f"`python -m intvae.data fetch {spec.name} --root {path.parent}` to rebuild it."
        )

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    # A damaged zip or .npy member fails in many ways (BadZipFile, ValueError, OSError, ...).
    except Exception as e:
        raise invalid(f"unreadable ({type(e).__name__}: {e})") from e
    try:
        meta = json.loads(str(arrays.pop("meta")))
        expected_sha = {split: meta["splits"][split]["sha256"] for split in SPLITS}
    except (KeyError, TypeError, ValueError) as e:
        raise invalid(f"missing or malformed metadata ({e})") from e
    if meta.get("format") != CACHE_FORMAT or meta.get("dataset") != spec.name:
        raise invalid(
            f"format {meta.get('format')} of dataset {meta.get('dataset')!r}, "
            f"expected format {CACHE_FORMAT} of {spec.name!r}"
        )
    try:
        splits = check_splits(arrays, spec, str(path))
    except DataError as e:
        raise invalid(str(e)) from e
    for split, images in splits.items():
        if split_sha256(images) != expected_sha[split]:
            raise invalid(f"the {split} split does not match its recorded sha256")
    return splits, meta
