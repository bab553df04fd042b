"""Reading checkpoints safely: a weights-only load and a one-line error naming the file.

Every checkpoint the apps read (``ckpt_path=``, ``resume=auto``, ``python -m intvae.evaluate
run=``) goes through ``read_checkpoint``: ``torch.load(..., weights_only=True)``, whose
unpickler rebuilds tensors and plain containers (dict, list, tuple, str, numbers, None) and
refuses every other global *before* calling anything, so a file crafted to run code when
unpickled (an object whose ``__reduce__`` names ``exec`` or ``os.system``) is refused and its
payload never runs. intvae's checkpoints hold nothing else: the hyperparameters are the resolved
config as plain containers (``intvae.train.hyperparameters``), the callbacks' states are numbers,
so they need no allow-list (``torch.serialization.add_safe_globals``). Lightning reads the
checkpoint again, also with ``weights_only=True`` (``Trainer.fit(..., weights_only=True)``).

A missing, empty, truncated or corrupt file gives a ``ConfigError`` (one line: ``<key>=<file> is
invalid: ...``) and nothing is written or deleted.
"""

import pickle
import re
import zipfile
from pathlib import Path

import torch

from intvae.config import ConfigError

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
"""Where a run directory keeps its latest checkpoint (``conf/callbacks/model_checkpoint.yaml``)."""

_REFUSED = re.compile(r"WeightsUnpickler error:\s*(.*?)(?:\. Please use|\n\n|$)", re.S)


def refused_global(error: BaseException) -> str:
    """What a weights-only load refused, from torch's message: e.g. ``Unsupported global: GLOBAL
    exec was not an allowed global by default``."""
    found = _REFUSED.search(str(error))
    reason = found.group(1) if found else str(error).splitlines()[0]
    return " ".join(reason.split())


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """The checkpoint in ``path`` (tensors on the CPU), loaded with ``weights_only=True``.

    Raises ``ConfigError`` naming ``key`` and the file if it is missing, is not a checkpoint
    (empty, truncated, corrupt, not a Lightning checkpoint) or holds anything but tensors and
    plain containers (then it is refused unread: nothing in it runs)."""
    path = Path(path).expanduser()
    where = f"{key}={path} is invalid"
    if not path.is_file():
        raise ConfigError(f"{where}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):  # not a pickle of allowed types at all
            raise ConfigError(f"{where}: not a readable checkpoint, truncated or corrupt "
                              f"({' '.join(str(error).split())[:200]})") from error
        raise ConfigError(f"{where}: it holds more than tensors and plain containers "
                          f"({refused_global(error)}); it was refused unread, nothing in it ran "
                          "(intvae loads checkpoints with weights_only=True)") from error
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile,
            UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise ConfigError(f"{where}: not a readable checkpoint, truncated or corrupt "
                          f"({type(error).__name__}: {reason})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{where}: not a Lightning checkpoint (no state_dict)")
    return checkpoint
