"""Compare runs: the integral bounds paper's figures and a results table for several runs.

* ``intvae.report.runs``: loading run and sweep directories and W&B runs (``load_runs``,
  ``load_wandb_runs``);
* ``intvae.report.results_table``: the results table (``table``, ``markdown``, ``write_table``);
* ``intvae.report.plots``: the figures of several runs (``plot_curves``, ``decode_runs``,
  ``plot_decoder_std``, ``plot_reconstructions``);
* ``intvae.report.figures``: the figures of one model, also drawn during training;
* ``intvae.report.__main__``: the command line, ``intvae-report`` (``python -m intvae.report``).

``notebooks/compare_bounds.ipynb`` uses these functions.
"""

from intvae.report.plots import decode_runs, plot_curves, plot_decoder_std, plot_reconstructions
from intvae.report.results_table import COLUMNS, markdown, table, write_table
from intvae.report.runs import ReportError, Run, load_run, load_runs, load_wandb_runs, relabel

__all__ = ["COLUMNS", "ReportError", "Run", "decode_runs", "load_run", "load_runs",
           "load_wandb_runs", "markdown", "plot_curves", "plot_decoder_std",
           "plot_reconstructions", "relabel", "table", "write_table"]
