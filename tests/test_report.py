"""The report (``intvae.report``) on tiny runs of the training app: the table against each run's
``results.json`` and ``metrics.csv`` (read here independently), the figures, the command line,
and the W&B path on the real offline files of a run trained with ``logger=wandb`` (read back as
``wandb.Api`` would serve them: ``OfflineRun``)."""

import csv
import json
import logging
import math
import shutil

import pytest
import wandb
from conftest import TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from wandb_files import OfflineRun

from intvae.app.config import CONF_DIR
from intvae.app.train import train
from intvae.report import __main__ as cli
from intvae.report import plots
from intvae.report import results_table as table
from intvae.report import runs as run_io

RUNS = {
    "elbo": ["bound=elbo", "trainer.max_epochs=2"],
    "ielbo": ["bound=ielbo", "noise=gaussian", "likelihood.sigma_min=0.001", "logger=wandb"],
    "cbern": ["bound=elbo", "likelihood=continuous_bernoulli"],  # a decoder without a std
}
DIVERGED = [  # a hand-made metrics.csv: the ELBO diverging to -1e29 in its second epoch
    "epoch,step,train/bound,train/non_finite_steps,train/std_min,val/bound,val/std_min",
    "0,1,,,,-880.5,0.4",
    "0,1,-881.25,0.0,0.3,,",
    "1,3,,,,-1.9e+29,1e-30",
    "1,3,-2.5e+29,3.0,2e-31,,",
]
FILES = ["curves.png", "decoder_std.png", "reconstructions.png", "table.md", "table.csv"]


def train_run(output_dir, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg["hydra"]
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep directory: three trained tiny runs and a diverged one that has a config and a
    metrics.csv but neither results.json nor a checkpoint (as a killed run leaves it). The
    "ielbo" run also logs to W&B, offline (``<run>/wandb/offline-run-*/run-<id>.wandb``)."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("INTVAE_OFFLINE", "1")
        env.setenv("INTVAE_DATA_DIR", str(root / "data"))
        env.setenv("WANDB_MODE", "offline")
        for name, overrides in RUNS.items():
            train_run(root / "sweep" / name, *TINY, *overrides)
    diverged = root / "sweep" / "diverged"
    diverged.mkdir()
    shutil.copy(root / "sweep" / "elbo" / "config.yaml", diverged)
    (diverged / "metrics.csv").write_text("\n".join(DIVERGED) + "\n")
    return root / "sweep"


@pytest.fixture
def runs(sweep):
    return run_io.load_runs([sweep])


def csv_column(path, key) -> list[float]:
    with open(path, newline="") as file:
        return [float(row[key]) for row in csv.DictReader(file) if row.get(key)]


def test_sweep_is_expanded_to_its_runs_labelled_by_directory(runs):
    assert [r.label for r in runs] == ["cbern", "diverged", "elbo", "ielbo"]
    assert [r.status for r in runs] == ["completed", "no results.json", "completed",
                                        "completed"]


def test_table_matches_results_json_and_metrics_csv(sweep, runs):
    rows = {row["run"]: row for row in table.table(runs)}
    for name in RUNS:
        results = json.loads((sweep / name / "results.json").read_text())
        row = rows[name]
        for column, key in [("bound", "bound"), ("delta", "delta"), ("alpha", "alpha"),
                            ("samples", "samples"), ("epochs", "epochs"),
                            ("train bound", "train_bound"), ("val bound", "val_bound"),
                            ("test bound", "test_bound"), ("test log P(I)", "test_log_likelihood"),
                            ("K", "k"), ("test log P (8-bit bins)", "test_log_likelihood_bins"),
                            ("bits/dim", "bits_per_dim"), ("non-finite steps", "non_finite_steps"),
                            ("wall time (s)", "wall_seconds"), ("status", "status")]:
            assert row[column] == results[key], (name, column)
        metrics = sweep / name / "metrics.csv"
        assert row["train bound"] == pytest.approx(csv_column(metrics, "train/bound")[-1])
        stds = [results["train_std_min"], results["test_std_min"]]
        stds += [csv_column(metrics, k)[-1] for k in ("train/std_min", "val/std_min")
                 if csv_column(metrics, k)]
        stds = [s for s in stds if s is not None]
        assert row["min decoder std"] == (min(stds) if stds else None)
    assert rows["cbern"]["min decoder std"] is None
    assert rows["cbern"]["likelihood"] == "continuous_bernoulli"
    assert rows["ielbo"]["likelihood"] == "gaussian (sigma_min=0.001)"
    assert rows["ielbo"]["noise"] == "gaussian_noise (std=0.01)"
    assert rows["elbo"]["noise"] == "none" and rows["elbo"]["interval"] == "fixed"


def test_a_run_without_results_shows_its_last_metrics(runs):
    row = next(r for r in table.table(runs) if r["run"] == "diverged")
    assert row["bound"] == "elbo"  # from config.yaml's bound._target_
    assert row["status"] == "no results.json" and row["epochs"] == 2
    assert row["train bound"] == -2.5e29 and row["val bound"] == -1.9e29
    assert row["non-finite steps"] == 3 and row["min decoder std"] == 2e-31
    assert row["test bound"] is None and row["test log P(I)"] is None
    line = next(line for line in table.markdown([row]).splitlines() if "diverged" in line)
    assert "| -2.5e+29 | -1.9e+29 | - |" in line and "| 2e-31 |" in line


def test_number_formatting():
    assert [table.fmt(v) for v in (None, -1.9e29, -1699.53, 0.01, 7.918e-5, 2.3553, 4, math.nan,
                                    "completed")] == \
        ["-", "-1.9e+29", "-1699.5", "0.01", "7.92e-05", "2.355", "4", "nan", "completed"]


def test_curves_keep_stable_and_diverged_runs_readable(runs):
    diverged = next(r for r in runs if r.label == "diverged")
    epochs, values = run_io.series(diverged, "train/bound")
    assert epochs.tolist() == [1, 2] and values.tolist() == [-881.25, -2.5e29]
    fig = plots.plot_curves(runs)
    symlog, clipped = fig.axes[:2]
    assert symlog.get_yscale() == "symlog" and symlog.get_ylim()[0] < -1e29
    low, high = clipped.get_ylim()
    assert -1e5 < low < -3900 and high > -880  # the tiny runs' bounds, not -1e29


def test_decoded_figures_skip_runs_without_std_or_checkpoint(runs):
    decoded = plots.decode_runs(runs, num_images=4)
    assert list(decoded.reconstructions) == ["cbern", "elbo", "ielbo"]
    assert list(decoded.log10_std) == ["elbo", "ielbo"]  # continuous Bernoulli: no std
    assert decoded.delta == {"ielbo": 0.01} and not decoded.own_images
    assert decoded.images.shape == (4, 784) and decoded.log10_std["elbo"].numel() == 32 * 784


def test_command_line_writes_the_report_and_nothing_else(sweep, tmp_path, capsys, caplog):
    before = sorted((p, p.stat().st_mtime_ns) for p in sweep.rglob("*"))
    caplog.set_level(logging.INFO, logger="intvae.report")
    out = tmp_path / "report"
    assert cli.main([str(sweep), "--out", str(out), "--labels", "C", "D", "E", "I"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (out / name).stat().st_size > 0
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out.split() == [str(out / name) for name in FILES]
    assert sum("decoding" in m for m in caplog.messages) == 3
    table = (out / "table.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["C", "D", "E", "I"]
    with open(out / "table.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["run"] for r in rows] == ["C", "D", "E", "I"] and rows[1]["test bound"] == ""
    assert float(rows[1]["train bound"]) == -2.5e29
    assert sorted((p, p.stat().st_mtime_ns) for p in sweep.rglob("*")) == before


def test_bad_paths_and_labels_end_with_one_error_line(sweep, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for args, message in [
        ([str(tmp_path / "empty")], f"{tmp_path / 'empty'}: no run in it"),
        ([str(sweep), "--labels", "a"], "--labels: 1 labels for 4 runs"),
    ]:
        assert cli.main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_sweeps_expand_in_numeric_order_without_hidden_or_wandb_directories(tmp_path):
    for job in ("10", "2", "1", "1/.hydra", "2/wandb", "3/figures"):
        (tmp_path / job).mkdir(parents=True)
        (tmp_path / job / "metrics.csv").write_text("epoch,step\n")
    assert run_io.find_run_dirs(tmp_path) == [tmp_path / j for j in ("1", "2", "3/figures", "10")]
    assert run_io.unique_labels([tmp_path / "a" / "0", tmp_path / "b" / "0"]) == ["a/0", "b/0"]


def test_missing_path_exits_2_in_a_subprocess(cli, tmp_path):
    result = cli("intvae.report", "nowhere", "--out", "out", timeout=120)
    assert result.returncode == 2
    assert result.stderr == "error: nowhere: no such file or directory\n"
    assert not (tmp_path / "out").exists()


class OfflineApi:
    """``wandb.Api()`` with the given runs: ``runs(path, filters)`` records its arguments."""

    def __init__(self, runs):
        self.calls, self._runs = [], runs

    def runs(self, path, filters=None, **kwargs):
        self.calls.append((path, filters))
        return self._runs


@pytest.fixture
def wandb_run(sweep) -> OfflineRun:
    """The "ielbo" run as W&B holds it: from its offline run file."""
    (path,) = (sweep / "ielbo" / "wandb").glob("offline-run-*/run-*.wandb")
    return OfflineRun(path)


def test_a_wandb_run_reads_as_its_run_directory(sweep, wandb_run):
    """What the report reads from the W&B run (``load_wandb_runs``) is what the run directory
    holds: its results.json values (from the summary the app logged), its config and its
    metric series (metrics.csv, logged by the CSV logger beside W&B)."""
    api = OfflineApi([wandb_run])
    (run,) = run_io.load_wandb_runs("me/intvae", {"group": "g"}, api=api)
    assert api.calls == [("me/intvae", {"group": "g"})]
    local = run_io.load_run(sweep / "ielbo")
    assert wandb_run.state == "finished" and run.status == "finished"
    for key in ("bound", "delta", "alpha", "samples", "train_bound", "val_bound", "test_bound",
                "train_std_min", "test_std_min", "non_finite_steps", "test_log_likelihood",
                "test_log_likelihood_bins", "bits_per_dim", "k"):
        want = local.results.get(key)
        if isinstance(want, float):  # pytest.approx refuses strings and None in recent pytest
            want = pytest.approx(want, rel=1e-6)
        assert run.results.get(key) == want, key
    # W&B's _runtime: whole seconds from wandb.init, inside the fit, to wandb.finish, after
    # results.json; the app's wall time starts before the fit.
    assert 0 <= run.results["wall_seconds"] <= local.results["wall_seconds"] + 2
    assert run.config == local.config
    for key in ("train/bound", "val/bound", "test/bound", "train/std_min", "val/std_min"):
        epochs, values = run_io.series(run, key)
        local_epochs, local_values = run_io.series(local, key)
        assert epochs.tolist() == local_epochs.tolist() and len(epochs) > 0, key
        assert values == pytest.approx(local_values, rel=1e-6), key


def test_wandb_runs_join_the_table_and_curves(sweep, wandb_run, tmp_path, monkeypatch):
    """``--wandb`` beside a directory: the W&B run's row equals the same run's row read from
    its directory, except its label, status and wall time."""
    api = OfflineApi([wandb_run])
    monkeypatch.setattr(wandb, "Api", lambda: api)
    out = tmp_path / "report"
    assert cli.main([str(sweep / "ielbo"), "--wandb", "me/intvae", "--wandb-filter",
                     '{"group": "g"}', "--out", str(out)]) == 0
    assert api.calls == [("me/intvae", {"group": "g"})]
    with open(out / "table.csv", newline="") as file:
        local, remote = csv.DictReader(file)
    assert (local["run"], remote["run"]) == ("ielbo", wandb_run.name)
    assert (local["status"], remote["status"]) == ("completed", "finished")
    different = {"run", "status", "wall time (s)"}
    assert {k: v for k, v in remote.items() if k not in different} == \
        {k: v for k, v in local.items() if k not in different}
    assert all((out / name).stat().st_size > 0 for name in FILES)


def test_wandb_errors_end_with_one_error_line(tmp_path, monkeypatch, capsys):
    """The real ``wandb.Api()`` without an API key (a fresh home), a project without a matching
    run, and a filter that is not JSON."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    for api, args, message in [
        (None, [], "--wandb me/p: No API key configured"),
        (lambda: OfflineApi([]), [], "--wandb me/p: no run matches"),
        (None, ["--wandb-filter", "{group"], "--wandb-filter: not JSON"),
    ]:
        with monkeypatch.context() as patch:
            if api is not None:
                patch.setattr(wandb, "Api", api)
            assert cli.main(["--wandb", "me/p", *args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
