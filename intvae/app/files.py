"""Writing a run's files so that they survive faults, and one owner per run directory.

**Atomic writes.** Every file a run writes (checkpoints, ``config.yaml``, ``results.json``,
figures) goes through ``write_atomic``: into a temporary file in the same directory, flushed
and fsynced, then ``os.replace``d onto its name. A kill or a full disk leaves either the old
file or the new one, never a half-written one, and nothing is staged outside the run directory.
``os.replace`` swaps the directory entry, so a symbolic link at the name is replaced, never
followed: nothing outside the run directory is written through it. The files get the mode an
ordinary ``open`` would give them (0666 less the umask).

**Checkpoints.** ``AtomicCheckpointIO`` is the Trainer's checkpoint plugin: ``torch.save``
through ``write_atomic``. A failed save (a read-only or full disk) raises
``CheckpointWriteError`` and fails the run in one line, instead of Lightning's default, which
stages the file in ``$TMPDIR`` and ignores a ``PermissionError``.

**One owner.** ``RunLock`` is an exclusive ``fcntl.flock`` on ``<run dir>/.lock``, taken before
the app writes anything into the directory and held until the process ends; a second command
into the same directory is refused in one line naming the process that holds it.
"""

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from intvae.app.errors import ConfigError


class CheckpointWriteError(ConfigError):
    """A checkpoint could not be written (permissions, a full disk): the run fails."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` by calling ``write(file)`` on a temporary file beside it, then replace
    ``path`` with it (module docstring); the temporary file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """``write_atomic`` of a text file (UTF-8)."""
    return write_atomic(path, lambda file: file.write(text.encode()))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written by ``write_atomic``; a failed write raises ``CheckpointWriteError``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        try:
            write_atomic(path, lambda file: torch.save(checkpoint, file))
        except OSError as error:
            raise CheckpointWriteError(
                f"the checkpoint {path} could not be written ({type(error).__name__}: "
                f"{error.strerror or error}); the run stops so that no epoch goes unsaved: free "
                "space or make the run directory writable, then run the same command again "
                "to resume") from error


LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run directory for the life of this process (module docstring)."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, or raise ``ConfigError`` naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"hydra.run.dir={self.path.parent} is invalid: another command is writing into "
                f"it (process {holder}, lock {self.path}); wait for it to end, or choose "
                "another hydra.run.dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def wait(self) -> None:
        """Wait until no process holds the lock (a run in the directory has ended)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
