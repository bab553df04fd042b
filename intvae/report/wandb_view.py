"""A saved W&B workspace that compares the bounds, built from code with W&B's library for saved
views (``wandb-workspaces``, the ``wandb-views`` extra: ``pip install 'intvae[wandb-views]'``).

    python -m intvae.report.wandb_view --project ENTITY/PROJECT [--sweep NAME] [--name VIEW]

builds the view (``build_workspace``) and saves it to W&B (needs network access and an API
key), printing its address. Its runs are filtered by the config key ``sweep_name``
(``--sweep``; W&B's own ``sweep`` is a run attribute) and grouped, in the runs table and in
every panel, by their W&B group (``GROUP_BY``), which is their configuration (bound, delta,
alpha, K, likelihood, network, data, ...: ``intvae.app.wandb_names.run_group``): the seeds of
one configuration aggregate into one line or bar with a band, and configurations that differ in
anything but their seed (a delta, an alpha, a dataset) stay apart. Sections:

* bounds per epoch: ``train/bound`` and ``val/bound`` against ``epoch``;
* test: ``test/log_likelihood`` and ``test/bits_per_dim`` by configuration, and against
  ``delta``;
* parallel coordinates over ``delta``, ``alpha``, ``bound`` and bits per dimension;
* decoder std: the histograms ``decoder/log10_std`` and the figures ``figures/decoder_std``;
* images: ``figures/reconstructions`` and ``figures/prior_samples``.
"""

import argparse
import sys

GROUP_BY = "Group"
"""The run attribute the view groups by: W&B's group (``wandb-workspaces`` names it ``Group``)."""


def _library():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as error:
        raise SystemExit("error: the W&B view needs wandb-workspaces: "
                         "pip install 'intvae[wandb-views]'") from error
    return wr, ws


def sections() -> list:
    """The view's sections (module docstring)."""
    wr, ws = _library()
    per_epoch = [wr.LinePlot(title=f"{split} bound per epoch", x="epoch", y=[f"{split}/bound"],
                             groupby=GROUP_BY) for split in ("train", "val")]
    test = [wr.BarPlot(title=title, metrics=[metric], groupby=GROUP_BY)
            for title, metric in (("test log-likelihood", "test/log_likelihood"),
                                  ("bits per dimension", "test/bits_per_dim"))]
    test += [wr.ScatterPlot(title=f"{metric} against delta", x=wr.Config("delta"),
                            y=wr.SummaryMetric(metric))
             for metric in ("test/log_likelihood", "test/bits_per_dim")]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key))
               for key in ("delta", "alpha", "bound")]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("test/bits_per_dim")))
    return [
        ws.Section(name="Bounds per epoch", panels=per_epoch, is_open=True),
        ws.Section(name="Test log-likelihood", panels=test, is_open=True),
        ws.Section(name="Parameters", panels=[wr.ParallelCoordinatesPlot(
            title="delta, alpha, bound and bits/dim", columns=columns)], is_open=True),
        ws.Section(name="Decoder std", panels=[
            wr.LinePlot(title="log10 decoder std", x="epoch", y=["decoder/log10_std"]),
            wr.MediaBrowser(title="decoder std", media_keys=["figures/decoder_std"])]),
        ws.Section(name="Images", panels=[
            wr.MediaBrowser(title="reconstructions", media_keys=["figures/reconstructions"]),
            wr.MediaBrowser(title="prior samples", media_keys=["figures/prior_samples"])]),
    ]


def build_workspace(project: str, sweep: str | None = None, name: str | None = None):
    """The view of W&B project ``project`` (``ENTITY/PROJECT``), for sweep ``sweep`` (all runs
    if None), unsaved."""
    _, ws = _library()
    entity, _, project_name = project.partition("/")
    if not entity or not project_name or "/" in project_name:
        raise ValueError(f"--project {project}: expected ENTITY/PROJECT")
    settings = ws.RunsetSettings(filters=ws.And(ws.Config("sweep_name") == sweep) if sweep
                                 else [], groupby=[ws.Metric(GROUP_BY)])
    return ws.Workspace(entity=entity, project=project_name,
                        name=name or f"bounds {sweep or 'all runs'}", sections=sections(),
                        runset_settings=settings)


def main(argv: list[str] | None = None) -> int:
    """Build and save the view; print its address."""
    parser = argparse.ArgumentParser(prog="python -m intvae.report.wandb_view",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="ENTITY/PROJECT")
    parser.add_argument("--sweep", help="the sweep's name (config key sweep_name); else all")
    parser.add_argument("--name", help="the view's name")
    args = parser.parse_args(argv)
    try:
        view = build_workspace(args.project, args.sweep, args.name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(view.save().url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
