"""Checks around a run or a sweep, as a Hydra callback: writable output folders before, the
sweep's failed jobs and repeated configurations after; and the notes a sweep's jobs leave for
that end (``JOBS_FILE``).

**Copies.** A sweep can name one configuration twice: ``-m bound=ielbo,irelbo alpha=0.5,2``
gives two IELBO jobs that differ only in an alpha the IELBO does not have. Each job claims its
configuration (``claim``: the digest of its record and evaluation settings,
``intvae.app.record.identity``) under the sweep's lock; a job whose configuration an earlier
job of the sweep claimed is its copy and is not trained. The claims are made afresh by every
invocation of the sweep, so a rerun finds the same copies.
"""

import json
import math
import sys
import tempfile
from pathlib import Path

from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from intvae.app.files import write_text
from intvae.app.runs import RESULTS_FILE, read_results

JOBS_FILE = "jobs.json"
"""The file of a sweep directory holding a note per job (by job number), written under the
sweep's lock (``jobs.json.lock``): ``claim`` (the configuration's digest and ``output_dir``),
``copy_of`` (the job it repeats) or ``refused`` (why the job left the run in its directory
untouched)."""


def _lock(sweep_dir: Path) -> FileLock:
    return FileLock(sweep_dir / f"{JOBS_FILE}.lock")


def read_notes(sweep_dir: str | Path) -> dict[int, dict]:
    """The jobs' notes of a sweep by job number."""
    path = Path(sweep_dir) / JOBS_FILE
    notes = json.loads(path.read_text()) if path.is_file() else {}
    return {int(job): found for job, found in notes.items()}


def _write_note(sweep_dir: Path, job: int, fields: dict) -> None:
    """Replace the note of ``job`` (the caller holds the lock)."""
    notes = {**read_notes(sweep_dir), job: {"job": job, **fields}}
    write_text(sweep_dir / JOBS_FILE, json.dumps({str(k): v for k, v in sorted(notes.items())},
                                                 indent=1))


def note(sweep_dir: str | Path, job: int, **fields) -> None:
    """Replace the note of ``job`` with ``fields``."""
    sweep_dir = Path(sweep_dir)
    with _lock(sweep_dir):
        _write_note(sweep_dir, job, fields)


def claim(sweep_dir: str | Path, job: int, key: str, output_dir: str | Path) -> dict | None:
    """The note of the job of this sweep that claimed the configuration ``key`` before ``job``
    (``job`` is its copy: noted so), else None after claiming ``key`` for ``job``, whose run is
    in ``output_dir``. Under the sweep's lock, for launchers that run jobs at once."""
    sweep_dir = Path(sweep_dir)
    with _lock(sweep_dir):
        first = next((found for found in read_notes(sweep_dir).values()
                      if found.get("claim") == key and found["job"] != job), None)
        _write_note(sweep_dir, job, {"claim": key, "output_dir": str(output_dir)}
                    if first is None else {"copy_of": first["job"]})
    return first


def objective(results: dict) -> float:
    """What a job returns to the sweeper: the run's validation bound, NaN where it has none (a
    failed run; Optuna records a failed trial instead of stopping at a None)."""
    value = results.get("val_bound")
    return math.nan if value is None else float(value)


class OutputDirectories(Callback):
    """Hydra callback of both apps (``conf/train.yaml``, ``conf/evaluate.yaml``):

    * before a run or a sweep, its output folder must be writable: else one line, ``error:
      hydra.run.dir=<dir> is invalid: ...``, and status 1, instead of the tracebacks of
      Hydra's own file logging;
    * after a sweep, the jobs whose ``results.json`` does not say ``completed`` are listed and
      the program exits with status 1 (a failing job does not stop the others,
      ``intvae.app.train.sweep_job``).
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        require_writable("hydra.run.dir", Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        require_writable("hydra.sweep.dir", sweep)
        (sweep / JOBS_FILE).unlink(missing_ok=True)  # this invocation's notes only

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        notes = read_notes(sweep)
        failed, copies = [], []
        jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for job in jobs:
            found = notes.get(int(job.name), {})
            if "copy_of" in found:
                copies.append(f"{job.name} (= job {found['copy_of']})")
                continue
            try:
                results = read_results(job / RESULTS_FILE)
            except ValueError as error:
                results = {"status": "failed", "error": str(error)}
            if "refused" in found:
                results = {"status": "refused", "error": found["refused"]}
            if results.get("status") != "completed":
                failed.append(f"{job.name} ({results.get('status', 'no results.json')}"
                              f"{': ' + results['error'] if results.get('error') else ''})")
        if copies:
            print(f"note: {len(copies)} job(s) of the sweep {sweep} repeat the configuration of "
                  f"an earlier job and were not trained: {'; '.join(copies)}", file=sys.stderr)
        if failed:
            print(f"error: {len(failed)} job(s) of the sweep {sweep} did not complete: "
                  f"{'; '.join(failed)}; run the same command again to resume them",
                  file=sys.stderr)
            sys.exit(1)


def require_writable(key: str, folder: Path) -> None:
    """Exit with one line if ``folder`` cannot be created or written into."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        print(f"error: {key}={folder} is invalid: it cannot be written into "
              f"({type(error).__name__}: {error.strerror or error}); choose another {key}",
              file=sys.stderr)
        sys.exit(1)
