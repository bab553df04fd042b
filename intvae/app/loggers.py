"""A CSV logger that keeps the metrics table of a resumed run.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` in its directory when it starts
writing. A run resumed with ``ckpt_path=`` writes into its own directory, so that would lose the
rows of the epochs before the resume; ``AppendingCSVLogger`` keeps them and appends.
"""

import csv
import io
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``metrics.csv`` instead of replacing it."""

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        previous = path.read_text() if path.is_file() else None
        with warnings.catch_warnings():  # "... will be deleted": not the rows we restore below
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists")
            writer = super().experiment
        if previous:
            path.write_text(previous)
            # The writer merges new columns into the header it knows (a private attribute):
            # start it from the existing header so that the old rows fit.
            writer.metrics_keys = next(csv.reader(io.StringIO(previous)))
        return writer
