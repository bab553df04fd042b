"""Checks around a run or a sweep, as a Hydra callback: writable output folders before, the
sweep's failed jobs and repeated configurations after; and the notes a sweep's jobs leave for
that end (``JOBS_FILE``).

**Copies.** A sweep can name one configuration twice: ``-m bound=ielbo,irelbo alpha=0.5,2``
gives two IELBO jobs that differ only in an alpha the IELBO does not have. Each job claims its
settings (``claim``: their digest, ``intvae.app.settings``) under the sweep's lock; a job whose
settings another job of the sweep claimed first is its copy: it is not trained, and returns
that job's result once that job has ended. The claims are made afresh by every invocation of
the sweep (a rerun finds the same copies, and a job whose directory holds no run is the copy of
the one whose directory holds it).
"""

import json
import math
import sys
import tempfile
from pathlib import Path

from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from intvae.app.errors import ConfigError, describe
from intvae.app.files import write_text
from intvae.app.runs import RESULTS_FILE, read_results

JOBS_FILE = "jobs.json"
"""The file of a sweep directory where its jobs leave notes, written under the sweep's lock
(``jobs.json.lock``): ``notes``, one per job of the current invocation of the sweep (its
``output_dir``, and ``claim``: the digest of its settings, ``copy_of``: the job whose run it
repeats, or ``refused``: why it left the run in its directory untouched), and ``runs``, the
digest of the settings each job's directory was last claimed for, kept across invocations."""


def _lock(sweep_dir: Path) -> FileLock:
    return FileLock(sweep_dir / f"{JOBS_FILE}.lock")


def _read(sweep_dir: Path) -> dict:
    path = sweep_dir / JOBS_FILE
    try:
        found = json.loads(path.read_text()) if path.is_file() else {}
        return {part: {int(job): value for job, value in found.get(part, {}).items()}
                for part in ("notes", "runs")}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as error:
        raise ConfigError(f"{path} cannot be read ({type(error).__name__}: {error}); remove it "
                          "and run the sweep again") from error


def _write(sweep_dir: Path, jobs: dict) -> None:
    write_text(sweep_dir / JOBS_FILE, json.dumps(
        {part: {str(job): value for job, value in sorted(jobs[part].items())}
         for part in ("notes", "runs")}, indent=1))


def read_notes(sweep_dir: str | Path) -> dict[int, dict]:
    """The notes of the jobs of the sweep's current invocation, by job number (a
    ``ConfigError`` naming the file if it cannot be read)."""
    return _read(Path(sweep_dir))["notes"]


def start_notes(sweep_dir: str | Path) -> None:
    """Forget the notes of an earlier invocation of the sweep (its ``runs`` are kept)."""
    sweep_dir = Path(sweep_dir)
    with _lock(sweep_dir):
        _write(sweep_dir, {**_read(sweep_dir), "notes": {}})


def note(sweep_dir: str | Path, job: int, output_dir: str | Path, **fields) -> None:
    """Replace the note of ``job``, whose run is in ``output_dir``, with ``fields``."""
    sweep_dir = Path(sweep_dir)
    with _lock(sweep_dir):
        jobs = _read(sweep_dir)
        jobs["notes"][job] = {"job": job, "output_dir": str(output_dir), **fields}
        if "refused" in fields:  # its directory holds a run of other settings than it claimed
            jobs["runs"].pop(job, None)
        _write(sweep_dir, jobs)


def claim(sweep_dir: str | Path, job: int, key: str, output_dir: str | Path) -> dict | None:
    """The note of the job whose run ``job`` repeats, with the settings digest ``key``: a job of
    this invocation that claimed ``key`` first, or one whose directory holds a run claimed for
    ``key`` while ``job``'s holds none (a sweep rerun after a parallel one, whose copies were
    decided by which job came first). Then ``job`` is noted as its copy; else None, after
    claiming ``key`` for ``job``. Under the sweep's lock, for launchers that run jobs at once."""
    sweep_dir = Path(sweep_dir)
    with _lock(sweep_dir):
        jobs = _read(sweep_dir)
        first = next((found for found in jobs["notes"].values()
                      if found.get("claim") == key and found["job"] != job), None)
        if first is None and not (Path(output_dir) / RESULTS_FILE).is_file():
            held = [other for other, runs in jobs["runs"].items()
                    if other != job and runs.get("claim") == key
                    and (Path(runs["output_dir"]) / RESULTS_FILE).is_file()]
            first = {"job": held[0], **jobs["runs"][held[0]]} if held else None
        if first is None:
            jobs["notes"][job] = jobs["runs"][job] = {"job": job, "claim": key,
                                                      "output_dir": str(output_dir)}
        else:
            jobs["notes"][job] = {"job": job, "copy_of": first["job"],
                                  "output_dir": str(output_dir)}
        _write(sweep_dir, jobs)
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
        start_notes(sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            notes = read_notes(sweep)
        except ConfigError as error:
            print(f"error: {describe(error)}", file=sys.stderr)
            sys.exit(1)
        failed, copies = [], []
        for job, found in sorted(notes.items()):  # the jobs of this invocation only
            if "copy_of" in found:
                copies.append(f"{job} (= job {found['copy_of']})")
                continue
            try:
                results = read_results(Path(found["output_dir"]) / RESULTS_FILE)
            except ValueError as error:
                results = {"status": "failed", "error": str(error)}
            if "refused" in found:
                results = {"status": "refused", "error": found["refused"]}
            if results.get("status") != "completed":
                failed.append(f"{job} ({results.get('status', 'no results.json')}"
                              f"{': ' + results['error'] if results.get('error') else ''})")
        if copies:
            print(f"note: {len(copies)} job(s) of the sweep {sweep} repeat the settings of "
                  f"another job and were not trained: {'; '.join(copies)}", file=sys.stderr)
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
