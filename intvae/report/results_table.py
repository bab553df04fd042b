"""The results table of the report: one row per run (``COLUMNS``), as markdown and CSV."""

import csv
import logging
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from intvae.app.runs import (
    allowed_targets,
)
from intvae.report.runs import Run, last, printable, series

log = logging.getLogger(__name__)


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


def bound_parameter(run: Run, key: str):
    """The bound's ``key`` (delta, alpha, samples) as the run recorded it (``results.json``,
    null where the bound has none), else as the run's config built the bound (its ``bound``
    node; the root knobs such as ``delta`` may differ from what ran)."""
    if key in run.results:
        return run.results[key]
    node = run.config.get("bound")
    if key == "delta" and isinstance(node, dict):
        node = node.get("interval")
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


COLUMNS: dict[str, Callable[[Run], object]] = {
    "run": lambda r: r.label,
    "bound": bound_name,
    "likelihood": lambda r: _component(r.config.get("likelihood"), "Head",
                                       ("sigma_min", "var_min")),
    "interval": lambda r: _component(r.config.get("interval")),
    "noise": lambda r: _component(r.config.get("noise"), "", ("std",)) or
    ("none" if r.config and "noise" not in r.blanked else None),
    "delta": lambda r: bound_parameter(r, "delta"),
    "alpha": lambda r: bound_parameter(r, "alpha"),
    "samples": lambda r: bound_parameter(r, "samples"),
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


CELL_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
               RecursionError)
"""What a column raises on values of an unexpected type (a damaged file the loader let through)."""


def _cell(run: Run, name: str):
    """``COLUMNS[name]`` of ``run``; None, with a warning, if its values cannot give one."""
    try:
        return COLUMNS[name](run)
    except CELL_ERRORS as error:
        where = run.path if run.path is not None else run.label
        log.warning("%s: column %r cannot be computed (%s: %s); left blank", where, name,
                    type(error).__name__, " ".join(str(error).split())[:200])
        return None


def table(runs: list[Run]) -> list[dict]:
    """One row per run: ``COLUMNS`` -> raw values (None where missing)."""
    return [{name: _cell(run, name) for name in COLUMNS} for run in runs]


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


_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Control characters, line breaks among them (``str.splitlines`` breaks at all of these)."""


def escape(text: str) -> str:
    """``text`` as the text of one markdown table cell: line breaks and other control characters
    as spaces (runs of white space as one), ``&``, ``<`` and ``>`` as HTML entities (no markup
    gets through), backslashes and pipes escaped by a backslash (no cell is split); what UTF-8
    cannot encode as a backslash escape (``printable``)."""
    text = " ".join(_BREAKS.sub(" ", printable(text)).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown(rows: list[dict]) -> str:
    """``rows`` as a markdown table, cells formatted by ``fmt`` and escaped (``escape``): one
    line per row whatever the strings of a run directory hold."""
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(escape(str(k)) for k in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(fmt(row[k])) for k in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out: Path) -> list[Path]:
    """``table.md`` (formatted and escaped) and ``table.csv`` (full precision, raw strings: CSV
    quoting keeps a line break in a cell; empty cells where missing)."""
    # backslashreplace: a lone surrogate in a string of results.json (printable)
    (out / "table.md").write_text(markdown(rows), encoding="utf-8", errors="backslashreplace")
    with (out / "table.csv").open("w", newline="", encoding="utf-8",
                                  errors="backslashreplace") as file:
        writer = csv.DictWriter(file, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return [out / "table.md", out / "table.csv"]
