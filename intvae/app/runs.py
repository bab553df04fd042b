"""A run's record and checkpoints: ``results.json``, reading checkpoints safely, and where a
run directory keeps them.

**results.json.** Fields written by ``intvae.app.train`` (nats per image unless stated):
``bound``, ``delta``, ``alpha``, ``samples``, ``epochs``, ``steps``, ``fit_seconds``,
``wall_seconds``, ``train_bound``, ``val_bound``, ``test_bound``, ``train_std_min`` and
``test_std_min`` (the decoder's smallest standard deviation over the last training epoch and
the test set), ``non_finite_steps``, ``status``.

**The test result** (top level), an evaluation (``intvae.app.evaluate``) of the whole test
split, by the training app's final evaluation or a full re-evaluation (``intvae-evaluate``), and
by nothing else: ``test_log_likelihood`` (log P(I) estimated with ``k`` importance samples),
``log_likelihood_kind``, ``k``, ``eval_images``, ``eval_split`` (``test``),
``eval_whole_split`` (true), ``eval_interval`` (the intervals, as their repr: the bound's own,
``intvae.app.evaluate.evaluation_interval``; null for log p(x)), ``test_log_likelihood_bins``
(log P under the 8-bit bins, when those intervals are not already a discrete likelihood),
``bits_per_dim`` (of the discrete likelihood, ``docs/math.md``; null for a density-only
decoder), ``eval_seconds``; ``checkpoint`` names the weights. **Other evaluations**, of the
validation split or of part of a split (``limit_batches``), are kept apart under
``evaluations[<key>]`` with the same fields (``val_log_likelihood`` for the validation split) and
their ``checkpoint``; the key names split, K, images, intervals and checkpoint, e.g.
``"val k=100 images=10000 Fixed(delta=0.01) best.ckpt"`` (``evaluation_key``), and repeating an
evaluation replaces only its own entry. A new test result moves the one it replaces into
``evaluations`` under its key (``place_evaluation``), so no result is lost. JSON has no NaN: a
non-finite number is written as null and its key listed in ``non_finite_fields`` (an entry of
``evaluations`` has its own), so that a diverged value is visible instead of silently missing.

**Checkpoints.** Every checkpoint the apps read (``ckpt_path=``, ``resume=auto``,
``intvae-evaluate run=``, the report) goes through ``read_checkpoint``. It first checks the
file's zip structure and the CRC of every member (a truncated or bit-flipped file is refused),
then loads it with ``torch.load(..., weights_only=True)``, whose unpickler rebuilds tensors and
plain containers (dict, list, tuple, str, numbers, None) and refuses every other global
*before* calling anything: a file crafted to run code when unpickled (an object whose
``__reduce__`` names ``exec`` or ``os.system``) is refused and its payload never runs.
intvae's checkpoints hold nothing else (the hyperparameters are plain containers, the
callbacks' states numbers), so they need no allow-list; Lightning reads the checkpoint again,
also with ``weights_only=True`` (``Trainer.fit(..., weights_only=True)``). A missing, empty,
truncated, corrupt or malicious file gives a one-line ``ConfigError`` (``<key>=<file> is
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
import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
import yaml

from intvae.app.build import build_vae
from intvae.app.config import CONF_DIR, run_dir_of
from intvae.app.errors import ConfigError
from intvae.app.files import write_text
from intvae.networks import VAE

RESULTS_FILE = "results.json"


def _plain(value):
    """Tensors and numpy scalars as Python numbers."""
    return value.item() if hasattr(value, "item") else value


def _finite(record: dict) -> dict:
    """``record`` as JSON can hold it: tensors and numpy scalars as Python numbers, and each
    non-finite number as null with its key listed in ``non_finite_fields``; the same inside
    every dict it holds (each entry of ``evaluations`` keeps its own list)."""
    clean = {}
    flagged = set(record.get("non_finite_fields") or ())
    for key, value in record.items():
        value = _plain(value)
        if isinstance(value, dict):
            value = _finite(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
            flagged.add(key)
        clean[key] = value
    if flagged:
        clean["non_finite_fields"] = sorted(flagged)
    return clean


def write_results(path: str | os.PathLike[str], results: dict) -> dict:
    """Write ``results`` to ``path`` atomically (``intvae.app.files.write_atomic``), non-finite
    numbers flagged (``_finite``); return what was written."""
    clean = _finite(results)
    write_text(Path(path), json.dumps(clean, indent=2, allow_nan=False) + "\n")
    return clean


def read_results(path: str | os.PathLike[str]) -> dict:
    """The results in ``path``, or an empty dict if there are none yet; a ``ConfigError``
    naming the file if it cannot be read or holds no JSON object."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{path} cannot be read: {type(error).__name__}: "
                          f"{' '.join(str(error).split())}") from error
    if not isinstance(results, dict):
        raise ConfigError(f"{path} cannot be read: it holds no JSON object")
    return results


def update_results(path: str | os.PathLike[str], **fields) -> dict:
    """Add ``fields`` to the results in ``path`` (created if missing)."""
    return write_results(path, {**read_results(path), **fields})


EVALUATIONS = "evaluations"
"""The ``results.json`` key of the evaluations kept apart from the run's test result."""
EVALUATION_FIELDS = ("test_log_likelihood", "test_log_likelihood_bins", "val_log_likelihood",
                     "val_log_likelihood_bins", "log_likelihood_kind", "k", "eval_images",
                     "bits_per_dim", "eval_seconds", "eval_split", "eval_whole_split",
                     "eval_interval")
"""The top-level fields of the run's test result (``intvae.app.evaluate.evaluate``); ``val_*``
are there only in records of older versions, which wrote any evaluation at the top level."""


def evaluation_split(fields: dict) -> str | None:
    """The split an evaluation's fields describe: ``eval_split``, else (a record of an older
    version) the split whose ``<split>_log_likelihood`` they hold; None if neither."""
    if fields.get("eval_split"):
        return fields["eval_split"]
    return next((s for s in ("test", "val") if f"{s}_log_likelihood" in fields), None)


def evaluation_key(fields: dict) -> str:
    """An evaluation's key in ``evaluations``: its split, K, images, interval (``density`` for
    log p(x)) and checkpoint file, e.g. ``val k=100 images=10000 Fixed(delta=0.01) best.ckpt``;
    what tells two evaluations of a run apart, so that repeating one replaces only its own
    entry."""
    interval = fields.get("eval_interval") or fields.get("log_likelihood_kind")
    weights = f" {Path(fields['checkpoint']).name}" if fields.get("checkpoint") else ""
    return (f"{evaluation_split(fields)} k={fields.get('k')} images={fields.get('eval_images')} "
            f"{interval}{weights}")


def evaluation_place(fields: dict) -> str | None:
    """Where an evaluation's fields go in ``results.json``: None (the top level) for the run's
    test result, an evaluation of the whole test split; else (the validation split, or part of
    a split: ``limit_batches``) its key in ``evaluations``."""
    whole_test = evaluation_split(fields) == "test" and fields.get("eval_whole_split") is True
    return None if whole_test else evaluation_key(fields)


def place_evaluation(results: dict, fields: dict) -> tuple[dict, str | None]:
    """``results`` with an evaluation's ``fields`` in their place, and the place
    (``evaluation_place``). Under ``evaluations[<key>]`` they replace only an entry of the same
    key, and nothing at the top level. At the top level they replace the previous test result's
    ``EVALUATION_FIELDS`` (none of its fields is left over), which move with its ``checkpoint``
    and their ``non_finite_fields`` into ``evaluations`` under their own key, unless this
    evaluation repeats that one: no result is lost."""
    key = evaluation_place(fields)
    evaluations = dict(results.get(EVALUATIONS) or {})
    if key is not None:
        evaluations[key] = fields
        return {**results, EVALUATIONS: evaluations}, key
    flagged = set(results.get("non_finite_fields") or ())
    previous = {name: results[name] for name in EVALUATION_FIELDS if name in results}
    if previous:
        previous["checkpoint"] = results.get("checkpoint")
        if flagged & previous.keys():
            previous["non_finite_fields"] = sorted(flagged & previous.keys())
        evaluations[evaluation_key(previous)] = previous
    evaluations.pop(evaluation_key(fields), None)
    kept = {name: value for name, value in results.items()
            if name not in (*EVALUATION_FIELDS, EVALUATIONS, "non_finite_fields")}
    if flagged - set(EVALUATION_FIELDS):
        kept["non_finite_fields"] = sorted(flagged - set(EVALUATION_FIELDS))
    return {**kept, **fields, **({EVALUATIONS: evaluations} if evaluations else {})}, None


LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
"""Where a run directory keeps its latest checkpoint (``conf/callbacks/model_checkpoint.yaml``)."""

_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)", re.IGNORECASE)


def refused_global(error: BaseException) -> str:
    """The Python object a weights-only load refused to rebuild (e.g. ``builtins.exec``), from
    torch's message; ``an object`` if the message names none. Only the name is kept: torch's
    message goes on to suggest an unsafe reload, which would run it."""
    found = _GLOBAL.search(str(error))
    return found.group(1) if found else "an object"


def check_zip(path: Path, where: str) -> None:
    """Refuse a checkpoint that is not a complete zip archive whose every member matches its
    CRC (``torch.save``'s format): a truncated, bit-flipped or foreign file."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ConfigError(f"{where}: not a readable checkpoint, truncated or corrupt "
                          f"({type(error).__name__}: {' '.join(str(error).split())})") from error
    if damaged is not None:
        raise ConfigError(f"{where}: corrupt checkpoint, the CRC of its member {damaged} does not "
                          "match (a damaged copy or a bit flip); use another checkpoint")


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """The checkpoint in ``path`` (tensors on the CPU), verified (``check_zip``) and loaded with
    ``weights_only=True``.

    Raises ``ConfigError`` naming ``key`` and the file if it is missing, is not a checkpoint
    (empty, truncated, corrupt, not a Lightning checkpoint) or holds anything but tensors and
    plain containers (then it is refused unread: nothing in it runs)."""
    path = Path(path).expanduser()
    where = f"{key}={path} is invalid"
    if not path.is_file():
        raise ConfigError(f"{where}: no such checkpoint file")
    check_zip(path, where)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # not a pickle of allowed types at all
            raise ConfigError(f"{where}: not a readable checkpoint, truncated or corrupt "
                              f"(UnpicklingError)") from error
        raise ConfigError(f"{where}: it holds more than tensors and plain containers (it names "
                          f"{refused_global(error)}); it was refused unread and nothing in it "
                          "ran; do not load it otherwise") from error
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, UnicodeDecodeError) as error:
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


BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"
"""The run directory's best checkpoint by validation bound (the model_checkpoint callback)."""


def find_checkpoint(run: str | Path, which: str = "best") -> tuple[Path, Path]:
    """(checkpoint, run directory) for ``run=``: a run directory (its ``BEST_CHECKPOINT`` for
    ``which="best"``, else its ``LAST_CHECKPOINT``) or a checkpoint file."""
    run = Path(run).expanduser()
    ckpt = run / (BEST_CHECKPOINT if which == "best" else LAST_CHECKPOINT) if run.is_dir() else run
    if not ckpt.is_file():
        raise ConfigError(f"run={run} is invalid: no checkpoint {ckpt}")
    return ckpt, run_dir_of(ckpt)


def load_checkpoint(ckpt: Path) -> tuple[dict, dict]:
    """The checkpoint (tensors on the CPU, ``read_checkpoint``) and the run's resolved config it
    carries, admitted only if it names nothing but intvae's own classes (``run_config``)."""
    checkpoint = read_checkpoint(ckpt, "run")
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    return checkpoint, run_config(config, f"run={ckpt} is invalid")


def load_vae(checkpoint: dict, cfg, num_pixels: int) -> VAE:
    """The trained VAE of ``checkpoint``, built from ``cfg`` (the run's config)."""
    vae = build_vae(cfg, num_pixels)
    vae.load_state_dict({k.removeprefix("vae."): v for k, v in checkpoint["state_dict"].items()
                         if k.startswith("vae.")})
    return vae.eval()
