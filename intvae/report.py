"""Compare runs: the integral bounds paper's figures and a results table for several runs.

    python -m intvae.report <run or sweep dir> ... --out DIR [--labels A B ...]
        [--data-root DIR] [--images N] [--wandb ENTITY/PROJECT [--wandb-filter JSON]]

A run directory is what ``python -m intvae.train`` writes (``results.json``, ``config.yaml``,
``metrics.csv``, ``checkpoints/last.ckpt``); a sweep directory (``multirun/<date>/``) is expanded
to every run directory beneath it. Runs are labelled by their directory names (made unique by
their parents' names where needed) or by ``--labels``. ``--wandb`` reads runs logged with
``logger=wandb`` from the W&B API instead of, or besides, directories (``--wandb-filter``: a
MongoDB-style JSON filter of ``wandb.Api().runs``, e.g. ``'{"group": "2024-05-01_12-00-00"}'``).

Written into ``--out``, and nowhere else (except that a dataset missing from the data cache is
fetched into it, as for training):

* ``curves.png``: train (solid) and validation (dashed) bound per epoch and the final test
  bound (a point) of every run: the paper's figures 1, 2 and 10. A diverged ELBO reaches
  -1e29 nats, so the upper panel has a symlog axis and the lower one a linear axis fitted to
  the validation and test bounds that have not diverged.
* ``decoder_std.png``: histograms of log10 of the decoder's standard deviations at the encoder's
  mean over a batch of validation images (the paper's figure 3), from each run's checkpoint;
  decoders without a standard deviation (bernoulli, continuous bernoulli) are left out.
* ``reconstructions.png``: the same validation images and their reconstructions from the
  encoder's mean by every run, one row per run (the paper's figures 4-9).
* ``table.md`` and ``table.csv``: one row per run (``COLUMNS``); a missing value is ``-`` in
  the markdown table and an empty cell in the CSV, which keeps full precision.

Runs read from W&B have no checkpoint, so they appear in the table and the curves only. The
figures and the table are also available as functions (``load_runs``, ``table``,
``plot_curves``, ``decode_runs``, ...), which ``notebooks/compare_bounds.ipynb`` uses.
"""

import argparse
import csv
import json
import logging
import math
import pickle
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from hydra.utils import instantiate
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from intvae import figures
from intvae.checkpoints import LAST_CHECKPOINT, allowed_targets
from intvae.config import USER_ERRORS, describe
from intvae.evaluate import load_checkpoint, load_vae
from intvae.results import RESULTS_FILE, read_results

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
BULK = 1e5
"""Nats per image beyond which a bound counts as diverged: left out of the clipped panel."""


class ReportError(Exception):
    """A path that does not exist or holds no run; a bad ``--labels`` or ``--wandb-filter``."""


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


# Loading runs ----------------------------------------------------------------------------------

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


# Weights & Biases --------------------------------------------------------------------------------

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
    config (``intvae.train.hyperparameters``), metric rows from its history."""
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


# The table ---------------------------------------------------------------------------------------

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


def _result(run: Run, name: str, metric: str | None = None):
    """``results.json`` field ``name``, ``nan`` if it was non-finite, else the last value of
    ``metric``."""
    if run.results.get(name) is not None:
        return run.results[name]
    if name in (run.results.get("non_finite_fields") or ()):
        return math.nan
    return None if metric is None else last(run, metric)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


def _component(node, suffix: str = "", keys: Iterable[str] = ()) -> str | None:
    """A config node as ``name (key=value, ...)``: the class name of its ``_target_`` in
    snake case, without ``suffix``, and the ``keys`` that are set and non-zero."""
    if not node or "_target_" not in node:
        return None
    name = _snake(node["_target_"].rsplit(".", 1)[-1].removesuffix(suffix))
    options = [f"{k}={node[k]:g}" for k in keys if node.get(k)]
    return f"{name} ({', '.join(options)})" if options else name


def bound_name(run: Run) -> str | None:
    if run.results.get("bound"):
        return run.results["bound"]
    target = (run.config.get("bound") or {}).get("_target_")
    choice = allowed_targets().get(target) if isinstance(target, str) else None
    if choice and choice.startswith("bound/"):
        return choice.removeprefix("bound/")  # by name: nothing a run directory names is imported
    return None if target is None else str(target).rsplit(".", 1)[-1].lower()


def epochs_done(run: Run) -> int | None:
    if run.results.get("epochs") is not None:
        return run.results["epochs"]
    epochs, _ = series(run, "train/bound")
    return int(epochs.max()) if len(epochs) else None


def log_likelihood_bins(run: Run) -> float | None:
    """log P(I) under the 8-bit bins: ``test_log_likelihood_bins``, or the run's own log P(I)
    where its intervals already form a discrete likelihood (bits per dimension reported)."""
    value = _result(run, "test_log_likelihood_bins")
    if value is None and run.results.get("bits_per_dim") is not None:
        value = run.results.get("test_log_likelihood")
    return value


def smallest_std(run: Run) -> float | None:
    """The smallest decoder standard deviation seen: ``train_std_min``, ``test_std_min`` and the
    last epoch's ``train/std_min`` and ``val/std_min``."""
    values = [run.results.get("train_std_min"), run.results.get("test_std_min"),
              last(run, "train/std_min"), last(run, "val/std_min")]
    values = [v for v in values if v is not None]
    return min(values) if values else None


COLUMNS: dict[str, Callable[[Run], object]] = {
    "run": lambda r: r.label,
    "bound": bound_name,
    "likelihood": lambda r: _component(r.config.get("likelihood"), "Head",
                                       ("sigma_min", "var_min")),
    "interval": lambda r: _component(r.config.get("interval")),
    "noise": lambda r: _component(r.config.get("noise"), "", ("std",)) or
    ("none" if r.config else None),
    "delta": lambda r: r.results.get("delta", r.config.get("delta")),
    "alpha": lambda r: r.results.get("alpha", r.config.get("alpha")),
    "samples": lambda r: r.results.get("samples", r.config.get("samples")),
    "epochs": epochs_done,
    "train bound": lambda r: _result(r, "train_bound", "train/bound"),
    "val bound": lambda r: _result(r, "val_bound", "val/bound"),
    "test bound": lambda r: _result(r, "test_bound", "test/bound"),
    "test log P(I)": lambda r: _result(r, "test_log_likelihood"),
    "K": lambda r: r.results.get("k"),
    "test log P (8-bit bins)": log_likelihood_bins,
    "bits/dim": lambda r: _result(r, "bits_per_dim"),
    "non-finite steps": lambda r: _result(r, "non_finite_steps", "train/non_finite_steps"),
    "min decoder std": smallest_std,
    "wall time (s)": lambda r: _result(r, "wall_seconds"),
    "status": lambda r: r.status,
}
"""The table's columns. ``test log P(I)`` is the importance-sampled log-likelihood with K
samples (log p(x) for likelihoods without intervals: bernoulli, beta); bounds and
log-likelihoods are nats per image. Bounds and the non-finite steps of a run without
``results.json`` are the last logged values."""


def table(runs: list[Run]) -> list[dict]:
    """One row per run: ``COLUMNS`` -> raw values (None where missing)."""
    return [{name: column(run) for name, column in COLUMNS.items()} for run in runs]


def fmt(value) -> str:
    """A cell: ``-`` for missing, 4 significant digits, tiny and huge numbers in e-notation
    (-1.9e+29, 7.92e-05), bounds to one decimal."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 1e6 or 0 < size < 1e-2:
        return f"{value:.3g}"
    return f"{value:.1f}" if size >= 100 else f"{value:.4g}"


def markdown(rows: list[dict]) -> str:
    """``rows`` as a markdown table, cells formatted by ``fmt``."""
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(row[k]).replace("|", "\\|") for k in header) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out: Path) -> list[Path]:
    """``table.md`` (formatted) and ``table.csv`` (full precision, empty cells where missing)."""
    (out / "table.md").write_text(markdown(rows))
    with (out / "table.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return [out / "table.md", out / "table.csv"]


# Figures -----------------------------------------------------------------------------------------

def colours(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _message(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def bulk_limits(runs: list[Run], keys: tuple[str, ...]) -> tuple[float, float] | None:
    """y limits of the clipped panel: the range of the values of ``keys`` within ``BULK``
    (beyond it a bound has diverged), padded by 10%; None if there are none."""
    values = np.concatenate([series(run, k)[1] for run in runs for k in keys] + [np.zeros(0)])
    values = values[np.isfinite(values) & (np.abs(values) <= BULK)]
    if not len(values):
        return None
    pad = 0.1 * (values.max() - values.min()) or 1.0
    return values.min() - pad, values.max() + pad


def plot_curves(runs: list[Run]) -> Figure:
    """Train (solid) and validation (dashed) bound per epoch and the final test bound (a point),
    one colour per run: the paper's figures 1, 2 and 10. Upper panel: symlog axis, every value
    up to a diverged -1e29; lower panel: linear axis fitted to the validation and test bounds
    that have not diverged (``bulk_limits``; the train bound if there are none)."""
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    keys = ("train/bound", "val/bound", "test/bound")
    for run, colour in zip(runs, colours(len(runs)), strict=True):
        for ax in (top, bottom):
            for key, style in zip(keys, ("-", "--", "none"), strict=True):
                epochs, values = series(run, key)
                ax.plot(epochs, values, linestyle=style, marker="o" if style == "none" else ".",
                        markersize=7 if style == "none" else 4, color=colour)
    top.set_yscale("symlog", linthresh=10)
    top.set_title("bound per epoch (symlog axis: all values)", fontsize=10)
    limits = bulk_limits(runs, keys[1:]) or bulk_limits(runs, keys[:1])
    if limits:
        bottom.set_ylim(*limits)
    bottom.set_title("the same, linear axis fitted to the validation and test bounds (train "
                     "values beyond are cut off)", fontsize=10)
    bottom.set_xlabel("epochs done")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (top, bottom):
        ax.set_ylabel("bound (nats per image)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, lw=2, label=r.label)
               for r, c in zip(runs, colours(len(runs)), strict=True)]
    handles += [Line2D([], [], color="k", linestyle="-", label="train"),
                Line2D([], [], color="k", linestyle="--", label="validation"),
                Line2D([], [], color="k", linestyle="none", marker="o", label="test (final)")]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    return fig


@dataclass
class Decoded:
    """Validation images and what each run's decoder makes of them (z at the encoder's mean):
    ``reconstructions`` (label -> images), ``log10_std`` (label -> log10 sigma over the whole
    batch; decoders with a standard deviation only), ``delta`` (label -> interval half-width),
    ``own_images`` (label -> the images of a run whose data differ from ``images``)."""

    images: torch.Tensor | None = None
    image_shape: tuple[int, int, int] = (1, 28, 28)
    reconstructions: dict[str, torch.Tensor] = field(default_factory=dict)
    log10_std: dict[str, torch.Tensor] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    own_images: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def decode_run(run: Run, data_root: str | None = None, num_images: int = 10):
    """(validation batch, image shape, reconstructions of its first ``num_images`` images,
    log10 decoder std over the batch or None) from the run's ``checkpoints/last.ckpt``, the
    data module built from the run's config (``data.root`` replaced by ``data_root``)."""
    checkpoint, config = load_checkpoint(run.checkpoint)
    cfg = OmegaConf.merge(config, {"data": {"root": data_root}} if data_root else {})
    datamodule = instantiate(cfg.data)
    vae = load_vae(checkpoint, cfg, datamodule.num_pixels)
    datamodule.setup("validate")
    x = next(iter(datamodule.val_dataloader())).cpu()
    n = min(num_images, len(x))
    drawn = figures.draw(vae, x, datamodule.image_shape, n, num_prior_samples=1)
    reconstructions = vae.decode(vae.encode(x[:n]).loc).mean
    return x[:n], datamodule.image_shape, reconstructions, drawn.log10_std


def decode_runs(runs: list[Run], data_root: str | None = None, num_images: int = 10) -> Decoded:
    """``decode_run`` for every run with a checkpoint, one log line each; a run that cannot be
    decoded (data unavailable, unreadable checkpoint) is skipped with a warning."""
    decoded = Decoded()
    for i, run in enumerate(runs, 1):
        if run.checkpoint is None:
            log.info("[%d/%d] %s: no checkpoint, not decoded", i, len(runs), run.label)
            continue
        log.info("[%d/%d] %s: decoding %s", i, len(runs), run.label, run.checkpoint)
        try:
            x, shape, reconstructions, log10_std = decode_run(run, data_root, num_images)
        except (*USER_ERRORS, OSError, RuntimeError, KeyError, EOFError,
                pickle.UnpicklingError) as error:
            log.warning("%s: skipped in the figures: %s", run.label, describe(error))
            continue
        if decoded.images is None:
            decoded.images, decoded.image_shape = x, shape
        if shape != decoded.image_shape:
            log.warning("%s: images of shape %s, not %s: no reconstructions shown", run.label,
                        shape, decoded.image_shape)
        else:
            if x.shape != decoded.images.shape or not torch.equal(x, decoded.images):
                decoded.own_images[run.label] = x
            decoded.reconstructions[run.label] = reconstructions
        if log10_std is not None:
            decoded.log10_std[run.label] = log10_std
            delta = COLUMNS["delta"](run)
            if delta and (run.config.get("bound") or {}).get("interval") is not None:
                decoded.delta[run.label] = delta
    return decoded


def plot_decoder_std(decoded: Decoded) -> Figure:
    """Histograms of log10 of the decoder standard deviations, one per run, over the same
    validation batch, z at the encoder's mean: the paper's figure 3 (the density ELBO's
    standard deviations collapse far below the interval half-width delta, dotted)."""
    fig = Figure(figsize=(8, 4.5))
    if not decoded.log10_std:
        return _message(fig, "no run with a checkpoint and a decoder standard deviation")
    ax = fig.add_subplot()
    finite = {k: v[torch.isfinite(v)].numpy() for k, v in decoded.log10_std.items()}
    pooled = np.concatenate(list(finite.values()))
    bins = np.linspace(pooled.min(), pooled.max() + 1e-9, 81) if len(pooled) else 80
    for (label, values), colour in zip(finite.items(), colours(len(finite)), strict=True):
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, color=colour,
                label=f"{label} (min {10.0 ** values.min():.2g})" if len(values) else label)
    for delta in sorted(set(decoded.delta.values())):
        ax.axvline(math.log10(delta), color="grey", linestyle=":")
        ax.annotate(f"delta = {delta:g}", (math.log10(delta), 1), xycoords=("data", "axes "
                    "fraction"), rotation=90, va="top", ha="right", fontsize=8, color="grey")
    ax.set_xlabel("log10 of the decoder's standard deviation, z = m(x)")
    ax.set_ylabel("pixels")
    ax.set_title("decoder standard deviations over a validation batch", fontsize=10)
    ax.legend(fontsize=8)
    fig.set_layout_engine("tight")
    return fig


def plot_reconstructions(decoded: Decoded) -> Figure:
    """The validation images (top row) and each run's reconstructions from the encoder's mean,
    one row per run: the paper's figures 4-9 side by side."""
    if decoded.images is None:
        return _message(Figure(figsize=(6, 2)), "no run with a checkpoint")
    rows, labels = [decoded.images], ["original"]
    for label, images in decoded.reconstructions.items():
        if label in decoded.own_images:  # a run on other data: its own originals first
            rows.append(decoded.own_images[label])
            labels.append(f"{label}: its images")
        rows.append(images)
        labels.append(label)
    n = len(decoded.images)
    rows = [torch.cat([r[:n], torch.zeros(n - len(r[:n]), r.shape[1])]) for r in rows]
    grid = figures.tile(torch.cat(rows), decoded.image_shape, n)
    return figures.image_figure(grid, "validation images and reconstructions from m(x)", labels)


# The report ------------------------------------------------------------------------------------

def write_report(runs: list[Run], out: str | Path, data_root: str | None = None,
                 num_images: int = 10) -> list[Path]:
    """All figures and tables of ``runs`` in ``out``; returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    decoded = decode_runs(runs, data_root, num_images)
    written = []
    for name, fig in (("curves", plot_curves(runs)), ("decoder_std", plot_decoder_std(decoded)),
                      ("reconstructions", plot_reconstructions(decoded))):
        fig.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
        written.append(out / f"{name}.png")
    return written + write_table(table(runs), out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m intvae.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="run or sweep directories")
    parser.add_argument("--out", required=True, type=Path, help="directory for the report")
    parser.add_argument("--labels", nargs="+", help="one label per run, in order")
    parser.add_argument("--data-root", help="data directory (replaces the runs' data.root)")
    parser.add_argument("--images", type=int, default=10, help="images per reconstruction row")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read runs from W&B")
    parser.add_argument("--wandb-filter", metavar="JSON", help="MongoDB-style run filter")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb:
        parser.error("give run or sweep directories, or --wandb ENTITY/PROJECT")
    if args.images < 1:
        parser.error(f"--images {args.images}: must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2: a bad path or argument)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        runs = load_runs(args.paths)
        if args.wandb:
            try:
                filters = json.loads(args.wandb_filter) if args.wandb_filter else None
            except json.JSONDecodeError as error:
                raise ReportError(f"--wandb-filter: not JSON: {error}") from error
            try:
                runs += load_wandb_runs(args.wandb, filters)
            except Exception as error:  # no network, no API key, no such project, ...
                raise ReportError(f"--wandb {args.wandb}: {describe(error)}") from error
        if not runs:
            raise ReportError(f"--wandb {args.wandb}: no run matches")
        relabel(runs, args.labels)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in write_report(runs, args.out, args.data_root, args.images):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
