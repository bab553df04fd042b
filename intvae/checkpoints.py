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

**No code from data.** A weights-only load still lets a file carry any *string*, and the
config a checkpoint carries names the classes that rebuild its model, data and interval
(``_target_``). ``run_config`` admits such a config only if every ``_target_`` in the groups
the apps instantiate is one of intvae's own classes, as named by the app's config-group files
(``allowed_targets``), and it carries no other instantiation key (``_args_``, ``_partial_``,
...) and no interpolation; anything else (``builtins.open``, ``numpy.save``, ``torch.load``)
is refused in one line before anything is imported, built or written.
"""

import functools
import pickle
import re
import zipfile
from pathlib import Path

import torch
import yaml

from intvae.config import CONF_DIR, ConfigError

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


INSTANTIATED_GROUPS = ("data", "interval", "likelihood", "model", "bound", "noise")
"""The config groups whose nodes the apps instantiate from a run's config."""


@functools.cache
def allowed_targets() -> dict[str, str]:
    """``_target_`` -> ``<group>/<choice>`` for every file of the config groups in
    ``INSTANTIATED_GROUPS``: the only classes a run's config may name."""
    targets = {}
    for group in INSTANTIATED_GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            node = yaml.safe_load(path.read_text()) or {}
            if "_target_" in node:
                targets[node["_target_"]] = f"{group}/{path.stem}"
    return targets


def _check_node(node, key: str, where: str) -> None:
    """Refuse, naming ``key``, anything in ``node`` that would make ``instantiate`` call code
    other than intvae's own classes."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "_target_":
                if not isinstance(value, str) or value not in allowed_targets():
                    raise ConfigError(
                        f"{where}: its config names {key}._target_={value!r}, which is not one "
                        "of intvae's own classes (those of its config groups "
                        f"{', '.join(INSTANTIATED_GROUPS)}); refused, nothing was run")
            elif not isinstance(name, str) or name.startswith("_"):
                raise ConfigError(f"{where}: its config has the key {key}.{name}, which intvae's "
                                  "configs never use; refused, nothing was run")
            else:
                _check_node(value, f"{key}.{name}", where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _check_node(value, f"{key}[{i}]", where)
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(f"{where}: its config has an interpolation in {key} ({node!r}), "
                          "which a saved (resolved) config never has; refused, nothing was run")


def run_config(config, where: str) -> dict:
    """``config`` (a run's resolved config read from a checkpoint or a run directory) after
    checking that instantiating its groups can only build intvae's own classes (module
    docstring); a ``ConfigError`` starting with ``where`` otherwise."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: it carries no intvae config")
    for group in INSTANTIATED_GROUPS:
        _check_node(config.get(group), group, where)
    return config
