"""Loading runs for the report: run and sweep directories (``results.json``, ``config.yaml``,
``metrics.csv``, ``checkpoints/last.ckpt``) and runs logged to Weights & Biases.

A sweep directory (``multirun/<date>/``) is expanded to every run directory beneath it. Runs
are labelled by their directory names (made unique by their parents' names where needed) or by
explicit labels.

A damaged file costs only what it damages, with one warning naming it: a ``results.json`` that
cannot be read (not JSON, not an object, nested too deeply, not UTF-8) skips its run; a field of
``results.json`` or a node of ``config.yaml`` of the wrong type, a ``config.yaml`` that cannot
be read, a cell of ``metrics.csv`` that is not a number and a line of it with too few or too many
fields (a truncated or garbled line) are left blank.
"""

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from intvae.app.errors import ConfigError, describe
from intvae.app.runs import (
    LAST_CHECKPOINT,
    RESULTS_FILE,
    read_results,
)

log = logging.getLogger(__name__)


class ReportError(Exception):
    """A path that does not exist or holds no run; a bad ``--labels`` or ``--wandb-filter``."""

METRICS_FILE = "metrics.csv"


@dataclass
class Run:
    """One run: its ``results.json`` fields (``{}`` if missing), resolved config (``{}`` if
    unknown) and metric rows (one dict per line of ``metrics.csv`` or W&B history row, blanks
    dropped; ``epoch`` is None on the evaluation row)."""

    label: str
    path: Path | None = None
    results: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    damaged: str | None = None
    """Why the run cannot be shown (its ``results.json`` cannot be read), or None."""
    blanked: set[str] = field(default_factory=set)
    """The ``results.json`` fields and config nodes left out as damaged."""

    @property
    def checkpoint(self) -> Path | None:
        """The weights the run's results describe: the checkpoint ``results.json`` names (the
        best by validation bound, by default) if it is a file of this run directory, else
        ``checkpoints/last.ckpt``; None without either."""
        if self.path is None:
            return None
        named = self.results.get("checkpoint")
        if isinstance(named, str) and Path(named).name and (
                self.path / "checkpoints" / Path(named).name).is_file():
            return self.path / "checkpoints" / Path(named).name
        ckpt = self.path / LAST_CHECKPOINT
        return ckpt if ckpt.is_file() else None

    @property
    def status(self) -> str:
        if self.results.get("status"):
            return self.results["status"]
        if self.path is not None and not (self.path / RESULTS_FILE).is_file():
            return "no results.json"
        return "unknown"


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (the bytes of a file name that is not UTF-8, as
    Python decodes them, a lone surrogate from JSON) as backslash escapes (``\\udcff``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _natural(path: Path) -> list:
    """Sort key: multirun jobs 0, 1, ..., 10 in numeric order."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def is_run_dir(path: Path) -> bool:
    return (path / RESULTS_FILE).is_file() or (path / METRICS_FILE).is_file()


def _run_dirs(path: Path) -> list[Path]:
    if is_run_dir(path):
        return [path]
    try:
        children = sorted((c for c in path.iterdir() if c.is_dir()
                           and not c.name.startswith(".") and c.name != "wandb"), key=_natural)
    except OSError as error:
        log.warning("%s: not searched for runs: %s", path, describe(error))
        return []
    return [run for child in children for run in _run_dirs(child)]


def find_run_dirs(path: str | Path) -> list[Path]:
    """``path`` if it is a run directory, else every run directory beneath it (hidden
    directories such as ``.hydra``, and ``wandb``, skipped; no descent into a run)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ReportError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise ReportError(f"{path}: not a directory (give a run or sweep directory)")
    found = _run_dirs(path)
    if not found:
        raise ReportError(f"{path}: no run in it (no {RESULTS_FILE} or {METRICS_FILE})")
    return found


MAX_WARNINGS = 5
"""Damaged lines of one ``metrics.csv`` warned about one by one; the rest are counted."""


def _shown(value, limit: int = 40) -> str:
    """``value`` for a one-line warning: a scalar's repr cut to ``limit`` characters, else its
    type (a deeply nested list is never rendered)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        text = repr(value)
        return text if len(text) <= limit else text[:limit - 3] + "..."
    return f"a {type(value).__name__}"


def _metric_row(header: list[str], fields: list[str]) -> tuple[dict, list[str]]:
    """The numbers of one line of ``metrics.csv`` (blanks dropped) and its cells that are not
    numbers (``epoch`` and ``step``: not whole numbers), which are left out."""
    row, bad = {}, []
    for key, value in zip(header, fields, strict=True):
        if value == "":
            continue
        try:
            number = float(value)
        except ValueError:
            bad.append(f"{key}={_shown(value)} is not a number")
            continue
        if key in ("epoch", "step"):
            if not number.is_integer():
                bad.append(f"{key}={_shown(value)} is not a whole number")
                continue
            number = int(number)
        row[key] = number
    return row, bad


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a Lightning ``metrics.csv``, numbers parsed and blanks dropped (train and
    validation rows of an epoch are separate lines; ``epoch`` is None where it is missing).

    Damage is left out with a warning naming the file and the line: a cell that is not a number
    (an undecodable byte too) is blank, a line with too few or too many fields (truncated or
    garbled: its cells may not be where the header says) is skipped; a file that cannot be read
    from some line on (not CSV) is kept up to that line."""
    path = Path(path)
    if not path.is_file():
        return []
    rows, damaged, header = [], [], None
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as file:
            reader = csv.reader(file)
            try:
                for fields in reader:
                    if not fields:
                        continue
                    if header is None:
                        header = fields
                        continue
                    if len(fields) != len(header):
                        damaged.append(f"line {reader.line_num}: {len(fields)} fields where the "
                                       f"header has {len(header)} (a truncated or garbled line); "
                                       "skipped")
                        continue
                    row, bad = _metric_row(header, fields)
                    if bad:
                        damaged.append(f"line {reader.line_num}: {'; '.join(bad)}; left blank")
                    row["epoch"] = row.get("epoch")
                    rows.append(row)
            except csv.Error as error:
                damaged.append(f"line {reader.line_num}: not CSV ({error}); the rest of the file "
                               "skipped")
    except OSError as error:
        log.warning("%s: not read: %s", path, describe(error))
        return []
    for message in damaged[:MAX_WARNINGS]:
        log.warning("%s, %s", path, message)
    if len(damaged) > MAX_WARNINGS:
        log.warning("%s: %d more damaged lines left blank or skipped", path,
                    len(damaged) - MAX_WARNINGS)
    return rows


def _read_yaml(path: Path) -> dict:
    """The mapping in a YAML file; ``{}`` (and a warning) if it is missing, cannot be read or is
    not plain YAML."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError, yaml.YAMLError) as error:  # UnicodeDecodeError: a ValueError
        log.warning("%s: not read: %s", path, describe(error))
        data = None
    except RecursionError:
        log.warning("%s: not read: nested too deeply", path)
        data = None
    return data if isinstance(data, dict) else {}


TEXT_FIELDS = ("bound", "status", "log_likelihood_kind")
NUMBER_FIELDS = ("delta", "alpha", "samples", "epochs", "steps", "fit_seconds", "wall_seconds",
                 "train_bound", "val_bound", "test_bound", "train_std_min", "test_std_min",
                 "non_finite_steps", "test_log_likelihood", "k", "eval_images",
                 "test_log_likelihood_bins", "bits_per_dim")
"""The ``results.json`` fields the report reads (``intvae.app.runs``), by type."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field_problem(name: str, value) -> str | None:
    """Why ``results.json`` field ``name`` cannot be shown, or None (null is always fine)."""
    if value is None:
        return None
    if name in TEXT_FIELDS and not isinstance(value, str):
        return f"{name}={_shown(value)} is not a string"
    if name in NUMBER_FIELDS and not _is_number(value):
        return f"{name}={_shown(value)} is not a number"
    if name == "non_finite_fields" and not (isinstance(value, list)
                                            and all(isinstance(v, str) for v in value)):
        return f"{name}={_shown(value)} is not a list of field names"
    return None


def _checked_results(results: dict, path: Path) -> tuple[dict, set[str]]:
    """``results`` without the fields of the wrong type (one warning naming them), and their
    names."""
    problems = {name: _field_problem(name, value) for name, value in results.items()}
    problems = {name: why for name, why in problems.items() if why}
    if problems:
        log.warning("%s: %s; left blank", path, "; ".join(problems.values()))
    return {k: v for k, v in results.items() if k not in problems}, set(problems)


CONFIG_NODES = {"likelihood": ("sigma_min", "var_min"), "interval": (),
                "noise": ("std",), "bound": ()}
"""The config nodes the table reads -> the options of each it shows."""


def _node_problem(name: str, node) -> str | None:
    """Why config node ``name`` cannot be shown, or None."""
    if name in ("delta", "alpha", "samples"):
        return None if node is None or _is_number(node) else \
            f"{name}={_shown(node)} is not a number"
    if node is None:
        return None
    if not isinstance(node, dict):
        return f"{name}={_shown(node)} is not a config node"
    if not isinstance(node.get("_target_", ""), str):
        return f"{name}._target_={_shown(node['_target_'])} is not a class name"
    for option in CONFIG_NODES[name]:
        if node.get(option) is not None and not _is_number(node[option]):
            return f"{name}.{option}={_shown(node[option])} is not a number"
    return None


def _checked_config(config: dict, path: Path) -> tuple[dict, set[str]]:
    """``config`` without the nodes the table reads that are of the wrong type (one warning
    naming them), and their names."""
    problems = {name: _node_problem(name, config.get(name))
                for name in (*CONFIG_NODES, "delta", "alpha", "samples")}
    problems = {name: why for name, why in problems.items() if why}
    if problems:
        log.warning("%s: %s; left blank", path, "; ".join(problems.values()))
    return {k: v for k, v in config.items() if k not in problems}, set(problems)


def _read_run_results(path: Path) -> dict:
    """``read_results``, a ``ConfigError`` naming the file for a file nested too deeply for the
    JSON parser too."""
    try:
        return read_results(path)
    except RecursionError as error:
        raise ConfigError(f"{path} cannot be read: nested too deeply") from error


def load_run(path: str | Path, label: str | None = None) -> Run:
    """The run in directory ``path``: ``results.json``, ``config.yaml`` and ``metrics.csv``
    (each may be missing); ``hparams.yaml`` gives the bound's name when results are missing.
    A ``results.json`` that cannot be read gives a ``damaged`` run (and a warning); damaged
    fields, config nodes and metric cells are left out (module docstring)."""
    path = Path(path)
    label = printable(label or path.name)
    try:
        results = _read_run_results(path / RESULTS_FILE)
    except ConfigError as error:
        log.warning("%s; run skipped", describe(error))
        return Run(label, path, damaged=describe(error))
    results, blanked = _checked_results(results, path / RESULTS_FILE)
    hparams = _read_yaml(path / "hparams.yaml")
    if "bound" not in results and isinstance(hparams.get("bound"), str):
        results = {"bound": hparams["bound"], **results}
    config, where = _read_yaml(path / "config.yaml"), path / "config.yaml"
    if not config and isinstance(hparams.get("config"), dict):
        config, where = hparams["config"], path / "hparams.yaml"
    config, blanked_nodes = _checked_config(config, where)
    return Run(label, path, results, config, read_metrics(path / METRICS_FILE),
               blanked=blanked | blanked_nodes)


def unique_labels(paths: list[Path]) -> list[str]:
    """Each directory's name, extended by its parents' names until the labels are unique."""
    depth = 1
    while True:
        labels = [printable("/".join(p.parts[-depth:])) for p in paths]
        if len(set(labels)) == len(labels) or depth >= max(len(p.parts) for p in paths):
            return labels
        depth += 1


def relabel(runs: list[Run], labels: list[str] | None) -> list[Run]:
    """``runs`` with ``labels`` (one per run, in order), if given."""
    if labels is None:
        return runs
    if len(labels) != len(runs):
        raise ReportError(f"--labels: {len(labels)} labels for {len(runs)} runs "
                          f"({', '.join(r.label for r in runs)})")
    for run, label in zip(runs, labels, strict=True):
        run.label = printable(label)
    return runs


def readable(runs: list[Run]) -> list[Run]:
    """``runs`` without the damaged ones."""
    return [run for run in runs if run.damaged is None]


def load_runs(paths: Iterable[str | Path], labels: list[str] | None = None,
              keep_damaged: bool = False) -> list[Run]:
    """The runs in or beneath ``paths`` (run or sweep directories), in order; ``labels`` (one
    per run directory, damaged ones included) replace their names. Runs whose ``results.json``
    cannot be read are left out (a warning each), unless ``keep_damaged``."""
    dirs = [d for p in paths for d in find_run_dirs(p)]
    if not dirs:
        return []
    runs = relabel([load_run(d, label) for d, label in zip(dirs, unique_labels(dirs),
                                                           strict=True)], labels)
    return runs if keep_damaged else readable(runs)


HISTORY_KEYS = ("train/bound", "val/bound", "test/bound", "train/std_min", "val/std_min",
                "train/non_finite_steps")
SUMMARY_FIELDS = {
    "train_bound": "train/bound", "val_bound": "val/bound_final", "test_bound": "test/bound",
    "train_std_min": "train/std_min", "test_std_min": "test/std_min",
    "non_finite_steps": "train/non_finite_steps", "test_log_likelihood": "test/log_likelihood",
    "test_log_likelihood_bins": "test/log_likelihood_bins", "bits_per_dim": "test/bits_per_dim",
    "k": "test/k", "wall_seconds": "wall_seconds",
}
"""``results.json`` field -> W&B summary key (``intvae.app.wandb_run.summary``; ``val/bound``
itself is the best epoch's)."""
HISTORY_SAMPLES = 2000


def wandb_run(api_run) -> Run:
    """A run logged by ``logger=wandb``: results from its summary, the resolved config from its
    config (``intvae.app.train.hyperparameters``), metric rows from its history."""
    summary = api_run.summary
    hparams = dict(api_run.config)
    config = hparams.get("config") or {}
    results = {key: summary.get(name) for key, name in SUMMARY_FIELDS.items()}
    results.update({key: hparams.get(key) for key in ("bound", "delta", "alpha", "samples")},
                   status=api_run.state)
    metrics = [{"epoch": row.get("epoch"), key: row[key]}
               for key in HISTORY_KEYS
               for row in api_run.history(samples=HISTORY_SAMPLES, keys=["epoch", key],
                                          pandas=False)
               if row.get(key) is not None]
    return Run(api_run.name, None, {k: v for k, v in results.items() if v is not None},
               config, metrics)


def load_wandb_runs(path: str, filters: dict | None = None, api=None) -> list[Run]:
    """The runs of W&B project ``path`` (``entity/project``) that match ``filters``, read
    through ``api`` (default ``wandb.Api()``: needs network access and an API key)."""
    if api is None:
        import wandb

        api = wandb.Api()
    return [wandb_run(r) for r in api.runs(path, filters=filters)]


def series(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of metric ``key``. Train and validation values logged at the end of
    0-based epoch e are placed at e + 1 (epochs done); the test row's epoch is already the
    number of epochs done."""
    shift = 0 if key.startswith("test/") else 1
    rows = [(row["epoch"] + shift, row[key]) for row in run.metrics
            if key in row and row.get("epoch") is not None]
    pairs = np.asarray(rows, dtype=float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def last(run: Run, key: str) -> float | None:
    """The last logged value of metric ``key``."""
    values = [row[key] for row in run.metrics if key in row]
    return values[-1] if values else None
