"""Loading runs for the report: run and sweep directories (``results.json``, ``config.yaml``,
``metrics.csv``, ``checkpoints/last.ckpt``) and runs logged to Weights & Biases.

A sweep directory (``multirun/<date>/``) is expanded to every run directory beneath it. Runs
are labelled by their directory names (made unique by their parents' names where needed) or by
explicit labels.
"""

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from intvae.app.errors import describe
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

    @property
    def checkpoint(self) -> Path | None:
        ckpt = None if self.path is None else self.path / LAST_CHECKPOINT
        return ckpt if ckpt is not None and ckpt.is_file() else None

    @property
    def status(self) -> str:
        if self.results.get("status"):
            return self.results["status"]
        return "no results.json" if self.path is not None else "unknown"


def _natural(path: Path) -> list:
    """Sort key: multirun jobs 0, 1, ..., 10 in numeric order."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def is_run_dir(path: Path) -> bool:
    return (path / RESULTS_FILE).is_file() or (path / METRICS_FILE).is_file()


def _run_dirs(path: Path) -> list[Path]:
    if is_run_dir(path):
        return [path]
    children = sorted((c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")
                       and c.name != "wandb"), key=_natural)
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


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a Lightning ``metrics.csv``, numbers parsed and blanks dropped (train and
    validation rows of an epoch are separate lines)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = [{key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(file)]
    for row in rows:
        row["epoch"] = int(row["epoch"]) if "epoch" in row else None
        if "step" in row:
            row["step"] = int(row["step"])
    return rows


def _read_yaml(path: Path) -> dict:
    """The mapping in a YAML file; ``{}`` if it is missing or not plain YAML."""
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError as error:
        log.warning("%s: not read: %s", path, describe(error))
        data = None
    return data if isinstance(data, dict) else {}


def load_run(path: str | Path, label: str | None = None) -> Run:
    """The run in directory ``path``: ``results.json``, ``config.yaml`` and ``metrics.csv``
    (each may be missing); ``hparams.yaml`` gives the bound's name when results are missing."""
    path = Path(path)
    results = read_results(path / RESULTS_FILE)
    hparams = _read_yaml(path / "hparams.yaml")
    if "bound" not in results and "bound" in hparams:
        results = {"bound": hparams["bound"], **results}
    config = _read_yaml(path / "config.yaml") or hparams.get("config") or {}
    return Run(label or path.name, path, results, config, read_metrics(path / METRICS_FILE))


def unique_labels(paths: list[Path]) -> list[str]:
    """Each directory's name, extended by its parents' names until the labels are unique."""
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in paths]
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
        run.label = label
    return runs


def load_runs(paths: Iterable[str | Path], labels: list[str] | None = None) -> list[Run]:
    """The runs in or beneath ``paths`` (run or sweep directories), in order."""
    dirs = [d for p in paths for d in find_run_dirs(p)]
    if not dirs:
        return []
    return relabel([load_run(d, label) for d, label in zip(dirs, unique_labels(dirs),
                                                          strict=True)], labels)


HISTORY_KEYS = ("train/bound", "val/bound", "test/bound", "train/std_min", "val/std_min",
                "train/non_finite_steps")
SUMMARY_FIELDS = {
    "train_bound": "train/bound", "val_bound": "val/bound", "test_bound": "test/bound",
    "train_std_min": "train/std_min", "test_std_min": "test/std_min",
    "non_finite_steps": "train/non_finite_steps", "test_log_likelihood": "test/log_likelihood",
    "test_log_likelihood_bins": "test/log_likelihood_bins", "bits_per_dim": "test/bits_per_dim",
    "wall_seconds": "_runtime",
}
"""``results.json`` field -> W&B summary key (what ``intvae.train`` logs)."""
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
    samples = (config.get("evaluate") or {}).get("samples")
    if isinstance(samples, int) and results["test_log_likelihood"] is not None:
        results["k"] = samples
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
