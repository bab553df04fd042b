"""``results.json``: a run's summary, written atomically and never with a silent NaN.

Fields written by ``intvae.train`` (nats per image unless stated): ``bound``, ``delta``,
``alpha``, ``samples``, ``epochs``, ``steps``, ``fit_seconds``, ``wall_seconds``,
``train_bound``, ``val_bound``, ``test_bound``, ``train_std_min`` and ``test_std_min`` (the
decoder's smallest standard deviation over the last training epoch and the test set),
``non_finite_steps``, ``status``; after the evaluation (``intvae.evaluate``):
``test_log_likelihood`` (log P(I) estimated with ``k`` importance samples),
``log_likelihood_kind``, ``k``, ``eval_images``, ``test_log_likelihood_bins`` (log P under the
8-bit bins, when the run's own intervals are not already a discrete likelihood) and
``bits_per_dim`` (of the discrete likelihood, ``../shared/spec/bounds.md`` section 8; null for
a density-only decoder).

JSON has no NaN: a non-finite number is written as null and its key listed in
``non_finite_fields``, so that a diverged value is visible instead of silently missing.
"""

import json
import math
import os
import tempfile
from pathlib import Path

RESULTS_FILE = "results.json"


def _plain(value):
    """Tensors and numpy scalars as Python numbers."""
    return value.item() if hasattr(value, "item") else value


def write_results(path: str | os.PathLike[str], results: dict) -> dict:
    """Write ``results`` to ``path`` atomically (temporary file, fsync, rename); return what
    was written."""
    path = Path(path)
    clean = {key: _plain(value) for key, value in results.items()}
    flagged = set(clean.get("non_finite_fields") or ())
    for key, value in clean.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key] = None
            flagged.add(key)
    if flagged:
        clean["non_finite_fields"] = sorted(flagged)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(clean, file, indent=2, allow_nan=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return clean


def read_results(path: str | os.PathLike[str]) -> dict:
    """The results in ``path``, or an empty dict if there are none yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def update_results(path: str | os.PathLike[str], **fields) -> dict:
    """Add ``fields`` to the results in ``path`` (created if missing)."""
    return write_results(path, {**read_results(path), **fields})
