"""A CSV logger that keeps the metrics table of a resumed run.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` in its directory when it starts
writing. A run resumed with ``ckpt_path=`` writes into its own directory, so that would lose the
rows of the epochs before the resume; ``AppendingCSVLogger`` keeps them and appends. Rows that
a killed attempt wrote after the checkpoint it resumes from are dropped (``keep_rows_up_to``),
since the resumed run logs them again: no epoch appears twice. Every rewrite of the table is
atomic (``intvae.app.files.write_text``), so a kill never leaves it empty or cut.
"""

import csv
import functools
import io
import math
import signal
import threading
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from intvae.app.files import write_text


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` instead of replacing it, and
    saves with SIGTERM and SIGINT held back: the app turns SIGTERM into an exception
    (``intvae.app.errors.sigterm_raises``), and one raised inside Lightning's save, after it
    recorded a new column but before it rewrote the header, would leave rows longer than the
    header on disk."""

    @rank_zero_only
    def save(self) -> None:
        held = {signal.SIGTERM, signal.SIGINT}
        if threading.current_thread() is not threading.main_thread():
            return super().save()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            super().save()
        finally:  # a signal that arrived meanwhile is delivered here
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    _last_step, _last_epoch = math.inf, math.inf

    def keep_rows_up_to(self, step: int, epoch: int) -> None:
        """Keep only the existing rows of the training up to a checkpoint at ``step`` after
        0-based ``epoch``: rows of earlier steps, and rows at ``step`` of epochs up to
        ``epoch`` (not the test and evaluation rows, which run again)."""
        self._last_step, self._last_epoch = step, epoch

    def _kept(self, row: dict) -> bool:
        step = int(row.get("step") or 0)
        epoch = row.get("epoch")
        return step < self._last_step or (
            step == self._last_step and epoch not in (None, "") and int(epoch) <= self._last_epoch)

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        if rank_zero_only.rank != 0:  # Lightning writes the table on rank 0 only
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        previous = path.read_text() if path.is_file() else None
        with warnings.catch_warnings():  # "... will be deleted": not the rows we restore below
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists")
            writer = super().experiment
        if previous:
            reader = csv.DictReader(io.StringIO(previous))
            write_table(path, reader.fieldnames, [row for row in reader if self._kept(row)])
            # The writer merges new columns into the header it knows (a private attribute):
            # start it from the existing header so that the old rows fit.
            writer.metrics_keys = list(reader.fieldnames)
        # When a column appears, Lightning rewrites the whole table in place (truncate, then
        # write): a kill in between would leave it empty. Rewrite it atomically instead.
        writer._rewrite_with_new_header = functools.partial(rewrite_table, path)
        return writer


def write_table(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    """``rows`` under the header ``fieldnames`` into the CSV file ``path``, atomically."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, table.getvalue())


def rewrite_table(path: Path, fieldnames: list[str]) -> None:
    """The CSV file ``path`` with the header ``fieldnames`` (new columns empty), atomically."""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    write_table(path, fieldnames, rows)
