"""Compare runs: the integral bounds paper's figures and a results table for several runs.

    python -m intvae.report <run or sweep dir> ... --out DIR [--labels A B ...]
        [--data-root DIR] [--images N] [--wandb ENTITY/PROJECT [--wandb-filter JSON]]
        [--reference NAME ...]

A run directory is what ``python -m intvae.train`` writes (``results.json``, ``config.yaml``,
``metrics.csv``, ``checkpoints/last.ckpt``); a sweep directory (``multirun/<date>/``) is expanded
to every run directory beneath it. Runs are labelled by their directory names (made unique by
their parents' names where needed) or by ``--labels``. ``--wandb`` reads runs logged with
``logger=wandb`` from the W&B API instead of, or besides, directories (``--wandb-filter``: a
MongoDB-style JSON filter of ``wandb.Api().runs``, e.g. ``'{"config.sweep_name": "<sweep>"}'``
for the runs of one sweep, ``<sweep>`` its directory's name such as ``2024-05-01_12-00-00``).

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
  the markdown table and an empty cell in the CSV, which keeps full precision and raw strings
  (the markdown table shows a line break as a space and escapes ``|``, ``&``, ``<``, ``>``).
* ``seeds.md``, where some configuration has several runs differing only in their seed
  (``plots.seed_groups``; the curves then show each configuration's band over its seeds): per
  configuration, mean +- standard deviation over the seeds and the paired comparison with a
  reference configuration (``intvae.report.seed_table``), one table per ``--reference``
  (default: the first configuration by name).

A damaged file in a run directory costs only what it damages, with one warning naming it (and
the line of ``metrics.csv``): a run whose ``results.json`` cannot be read is left out (it still
takes its place in ``--labels``), a damaged field, config node or metric cell is left blank.

Runs read from W&B have no checkpoint, so they appear in the table and the curves only. The
figures and the table are also available as functions (``load_runs``, ``table``,
``plot_curves``, ``decode_runs``, ...), which ``notebooks/compare_bounds.ipynb`` uses.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from intvae.app.errors import describe
from intvae.report import seed_table
from intvae.report.plots import (
    decode_runs,
    plot_curves,
    plot_decoder_std,
    plot_reconstructions,
    seed_groups,
)
from intvae.report.results_table import table, write_table
from intvae.report.runs import (
    ReportError,
    Run,
    load_runs,
    load_wandb_runs,
    readable,
    relabel,
)


def write_seed_tables(runs: list[Run], out: Path, references: list[str] | None) -> list[Path]:
    """``seeds.md`` (one table per reference) if a configuration has several seeds."""
    groups = seed_groups(runs)
    if all(len(g.runs) == 1 for g in groups):
        return []
    names = sorted(g.name for g in groups)
    for name in references or []:
        if name not in names:
            raise ReportError(f"--reference {name}: no such configuration; "
                              f"the configurations are {', '.join(names)}")
    tables = [seed_table.table(groups, name) for name in references or names[:1]]
    (out / "seeds.md").write_text("\n".join(tables), encoding="utf-8")
    return [out / "seeds.md"]


def write_report(runs: list[Run], out: str | Path, data_root: str | None = None,
                 num_images: int = 10, references: list[str] | None = None) -> list[Path]:
    """All figures and tables of ``runs`` in ``out``; returns the files written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    decoded = decode_runs(runs, data_root, num_images)
    written = []
    for name, fig in (("curves", plot_curves(runs)), ("decoder_std", plot_decoder_std(decoded)),
                      ("reconstructions", plot_reconstructions(decoded))):
        fig.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
        written.append(out / f"{name}.png")
    return written + write_table(table(runs), out) + write_seed_tables(runs, out, references)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m intvae.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="run or sweep directories")
    parser.add_argument("--out", required=True, type=Path, help="directory for the report")
    parser.add_argument("--labels", nargs="+", help="one label per run, in order")
    parser.add_argument("--data-root", help="data directory (replaces the runs' data.root)")
    parser.add_argument("--images", type=int, default=10, help="images per reconstruction row")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read runs from W&B")
    parser.add_argument("--wandb-filter", metavar="JSON", help="MongoDB-style run filter, "
                        "e.g. '{\"config.sweep_name\": \"<sweep>\"}'")
    parser.add_argument("--reference", nargs="+", metavar="NAME",
                        help="configurations to compare the others with in seeds.md")
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
        runs = load_runs(args.paths, keep_damaged=True)
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
        if not readable(runs):
            raise ReportError(f"no run could be read ({len(runs)} damaged, see the warnings)")
        written = write_report(readable(runs), args.out, args.data_root, args.images,
                               args.reference)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
