"""Checks around a run or a sweep, as a Hydra callback: writable output folders before, the
sweep's failed jobs after."""

import sys
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from intvae.app.runs import RESULTS_FILE, read_results


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
        require_writable("hydra.sweep.dir", Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        failed = []
        jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for job in jobs:
            try:
                results = read_results(job / RESULTS_FILE)
            except ValueError as error:
                results = {"status": "failed", "error": str(error)}
            if results.get("status") != "completed":
                failed.append(f"{job.name} ({results.get('status', 'no results.json')}"
                              f"{': ' + results['error'] if results.get('error') else ''})")
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
