"""A CSV logger that keeps the metrics table of a resumed run, and never leaves it inconsistent.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` in its directory when it starts
writing. A run resumed with ``ckpt_path=`` writes into its own directory, so that would lose the
rows of the epochs before the resume; ``AppendingCSVLogger`` keeps them and appends. Rows that
a killed attempt wrote after the checkpoint it resumes from are dropped (``keep_rows_up_to``),
since the resumed run logs them again: no epoch appears twice.

Lightning's writer saves in steps: it records a new column in its header, rewrites the file
under the new header, then appends the rows. An exception between the first two steps (the
app's SIGTERM, ``intvae.app.errors.sigterm_raises``, raises ``Terminated`` wherever the main
thread is, and holding the signal back on the main thread does not help: the kernel hands it
to another thread, and the main thread runs the handler at its next bytecode) left the writer
sure of a header the file did not have, and its next save appended rows longer than the header.
``MetricsTable`` instead writes the whole table at each save, atomically
(``intvae.app.files.write_text``): the header is the union of the columns of all its rows, and
its state changes only once the file is replaced. Wherever an exception or a kill interrupts a
save, the file holds the table before it or after it, and the next save (Lightning's
``finalize`` of the interrupted run) writes every row once.
"""

import csv
import io
import math
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from intvae.app.errors import ConfigError
from intvae.app.files import write_text


class MetricsTable(ExperimentWriter):
    """Lightning's CSV writer holding the whole table (``rows``: those written, initially the
    kept rows of earlier attempts; Lightning's ``metrics``: those logged since), and writing it
    whole at each save (module docstring); the app logs a row per epoch and stage, so the table
    stays small (200 rows, 30 kB after 100 epochs)."""

    def __init__(self, log_dir: str, rows: list[dict]):
        super().__init__(log_dir)
        self.rows = rows

    def _check_log_dir_exists(self) -> None:
        """Keep the existing files (Lightning warns and deletes ``metrics.csv``)."""

    def save(self) -> None:
        if not self.metrics:
            return
        rows = [*self.rows, *self.metrics]
        write_table(Path(self.metrics_file_path), sorted(set().union(*rows)), rows)
        self.rows, self.metrics = rows, []  # one statement: no half-updated state


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` instead of replacing it, and
    whose table is always consistent (``MetricsTable``)."""

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
        self._fs.makedirs(self.root_dir, exist_ok=True)
        path = Path(self.log_dir) / "metrics.csv"
        header, rows = read_table(path)
        rows = [row for row in rows if self._kept(row)]
        self._experiment = MetricsTable(self.log_dir, rows)
        if header:  # without the dropped rows from now on
            write_table(path, header, rows)
        return self._experiment


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    """The header and the rows of the CSV file ``path`` (none if there is no file); a row
    longer than the header (what an interrupted save of an older intvae could leave) is refused
    in one line."""
    if not path.is_file():
        return [], []
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        rows = []
        for row in reader:
            if None in row:
                raise ConfigError(
                    f"{path} is invalid: line {reader.line_num} has more fields than its header "
                    f"({len(reader.fieldnames)}), so its columns cannot be told apart; repair or "
                    "delete the file, then run the same command again to resume")
            rows.append(row)
    return list(reader.fieldnames or []), rows


def write_table(path: Path, fieldnames: list[str], rows: list[dict]) -> None:
    """``rows`` under the header ``fieldnames`` into the CSV file ``path``, atomically."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, table.getvalue())
