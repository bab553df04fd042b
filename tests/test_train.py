"""The training app end to end on tiny generated data: every bound under fast_dev_run, the
outputs of a run, the literal multirun command and a sweep as subprocesses, W&B offline,
resuming from last.ckpt, and one-line errors for bad overrides."""

import json
import re
import sys

import pytest
import torch
from conftest import TINY
from hydra.utils import instantiate

from intvae.app.train import main, train
from intvae.bounds import REGISTRY

INTERVAL_BOUNDS = {"ielbo", "iw_ielbo", "irelbo"}


def results_of(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# ------------------------------------------------------------------------- in process


@pytest.mark.parametrize("bound", sorted(REGISTRY))
def test_fast_dev_run_of_every_bound(bound, compose_train, tmp_path):
    """Each bound trains with its likelihood (gaussian: the interval bounds need it, and the
    density bounds are the paper's baselines with the same decoder)."""
    cfg = compose_train(*TINY, f"bound={bound}", "likelihood=gaussian", "debug=fdr")
    results = train(cfg)
    assert results["status"] == "completed" and results["bound"] == bound
    for key in ("train_bound", "val_bound", "test_bound", "test_log_likelihood"):
        assert isinstance(results[key], float) and results[key] < 0, (key, results)
    assert results["non_finite_steps"] == 0 and results["k"] == 4
    assert results["log_likelihood_kind"] == "interval"  # log P(I): a gaussian decoder
    assert results_of(tmp_path / "run") == results


def test_a_run_writes_its_outputs(compose_train, tmp_path):
    """The default configuration (the recommended IRELBO, alpha 0.5) on tiny data."""
    cfg = compose_train(*TINY, "trainer.max_epochs=2")
    results = train(cfg)
    run = tmp_path / "run"
    expected = {"bound": "irelbo", "delta": 0.01, "alpha": 0.5, "samples": 2, "epochs": 2,
                "steps": 4, "non_finite_steps": 0, "k": 4, "eval_images": 32,
                "status": "completed"}
    assert {k: results[k] for k in expected} == expected
    # delta = 0.01 overlaps the neighbouring levels: a second estimate under the 8-bit bins,
    # whose P(I) <= 1 per pixel (its value against an exact discrete likelihood:
    # tests/test_module.py)
    assert results["test_log_likelihood_bins"] < 0
    assert results["test_std_min"] > 0 and results["wall_seconds"] > 0
    assert results["test_log_likelihood"] >= results["test_bound"] - 50  # IW_4 vs 2-sample bound
    assert (run / "config.yaml").read_text().count("delta: 0.01") >= 2  # resolved
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", "best.ckpt"}
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for stage in ("train", "val", "test"):
        for key in ("bound", "reconstruction", "kl", "std_min", "std_median", "std_below_1e-3"):
            assert f"{stage}/{key}" in header
    assert {"train/non_finite_steps", "test/log_likelihood"} <= set(header)
    figures = {p.name for p in (run / "figures").iterdir()}
    assert figures == {f"{name}_epoch{e:03d}.png" for e in (1, 2)
                       for name in ("reconstructions", "prior_samples", "decoder_std")}
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["bound"] == "irelbo"
    assert checkpoint["hyper_parameters"]["config"]["model"]["hidden"] == [64]


def test_the_smoke_experiment(compose_train):
    results = train(compose_train("experiment=smoke", "compile=false"))
    assert (results["status"], results["epochs"], results["k"]) == ("completed", 2, 10)


def test_bits_per_dim_where_the_intervals_are_discrete(compose_train, tmp_path):
    """Which estimate bits per dimension come from: with delta at most half the level spacing
    (0.998 / 255 / 2 = 0.00196) the run's own intervals form a discrete likelihood
    (``docs/math.md#discrete-likelihood-and-bits-per-dimension``) and no second estimate is
    made; with the bins likewise; with ``evaluate.bits_per_dim=false`` none."""
    results = train(compose_train(*TINY, "delta=0.0019", "debug=fdr"))
    assert results["bits_per_dim"] == pytest.approx(
        -results["test_log_likelihood"] / (784 * 0.6931471805599453))
    assert "test_log_likelihood_bins" not in results  # no second evaluation needed
    results = train(compose_train(*TINY, "bound=ielbo", "interval=bins", "debug=fdr",
                                  output_dir=tmp_path / "bins"))
    assert results["bits_per_dim"] > 0
    results = train(compose_train(*TINY, "evaluate.bits_per_dim=false", "debug=fdr",
                                  output_dir=tmp_path / "off"))
    assert results["bits_per_dim"] is None and "test_log_likelihood_bins" not in results


def test_density_log_likelihood_without_intervals(compose_train):
    results = train(compose_train(*TINY, "bound=iwae", "likelihood=bernoulli", "debug=fdr"))
    assert results["log_likelihood_kind"] == "density" and results["bits_per_dim"] is None


def run_main(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["intvae.train", *args])
    main()


@pytest.mark.parametrize("override, key", [
    ("bound=nonsense", "bound"),
    ("data=nonsense", "data"),
    ("data.name=nonsense", "data"),
    ("delta=0", "delta"),
    ("alpha=1", "alpha"),
    ("samples=0", "samples"),
    ("guard.mode=sometimes", "guard.mode"),
    ("evaluate.samples=-3", "evaluate.samples"),
    ("likelihood=bernoulli", "likelihood"),
])
def test_bad_overrides_exit_with_a_message_naming_the_key(override, key, monkeypatch, capsys,
                                                          app_env, tmp_path):
    extra = ["bound=irelbo"] if override == "alpha=1" else []
    with pytest.raises(SystemExit) as exit_info:
        run_main(monkeypatch, *TINY, *extra, override, f"hydra.run.dir={tmp_path}/run")
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err, err
    if "=nonsense" not in override or override.startswith("data.name"):  # our own message
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_several_devices_in_a_multirun_are_refused(monkeypatch, capsys, app_env, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_main(monkeypatch, "-m", *TINY, "trainer.accelerator=cpu", "trainer.devices=2",
                 f"hydra.sweep.dir={tmp_path}/sweep")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err  # the sweep's failed job, listed at its end
    assert re.search(r"^error: 1 job\(s\) of the sweep .* did not complete: 0 \(failed: "
                     r"ConfigError: trainer.devices=2 is invalid with -m.*DDP", err, re.M), err


# ------------------------------------------------------------------------- subprocesses


def test_the_literal_multirun_command_with_overrides_after_the_flag(cli, tmp_path):
    """`python -m intvae.train bound=irelbo delta=0.01 -m trainer.max_epochs=1 ...`: `-m`
    anywhere on the command line (Hydra's own parser wants it before the overrides), with
    the same result as the flag first: one job, the overrides on both sides applied."""
    done = cli("intvae.train", "bound=irelbo", "delta=0.01", "-m", "trainer.max_epochs=1",
               *TINY, f"hydra.sweep.dir={tmp_path}/sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    results = results_of(tmp_path / "sweep" / "0")
    assert (results["bound"], results["delta"], results["status"]) == ("irelbo", 0.01, "completed")
    assert results["epochs"] == 1 and results["bound_config"] == "irelbo"
    assert not (tmp_path / "sweep" / "1").exists()
    overrides = (tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "- bound=irelbo" in overrides and "- trainer.max_epochs=1" in overrides


def test_a_2x2_sweep_with_wandb_offline(cli, app_env, tmp_path):
    """Each job of the sweep has its own directory, results and W&B run (offline, no account):
    wandb.finish() between jobs, else the jobs of one process would share a run."""
    app_env["WANDB_MODE"] = "offline"
    done = cli("intvae.train", "-m", "bound=ielbo,irelbo", "delta=0.005,0.1", "alpha=0.5",
               "logger=wandb", *TINY, f"hydra.sweep.dir={tmp_path}/sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    seen = set()
    for job in range(4):
        run = tmp_path / "sweep" / str(job)
        results = results_of(run)
        expected_alpha = 0.5 if results["bound"] == "irelbo" else None  # only where it is used
        assert results["status"] == "completed" and results["alpha"] == expected_alpha
        seen.add((results["bound"], results["delta"]))
        offline = list((run / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, offline
        assert len(list(offline[0].glob("run-*.wandb"))) == 1
        assert (run / "metrics.csv").is_file()  # the CSV table comes with every logger
    assert seen == {(b, d) for b in ("ielbo", "irelbo") for d in (0.005, 0.1)}


def test_resume_from_last_ckpt_into_the_same_directory(cli, tmp_path):
    done = cli("intvae.train", *TINY, f"hydra.run.dir={tmp_path}/run")
    assert done.returncode == 0, done.stderr[-3000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    done = cli("intvae.train", *TINY, "trainer.max_epochs=2", f"ckpt_path={last}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = results_of(tmp_path / "run")
    assert (results["epochs"], results["steps"]) == (2, 4)
    assert not (tmp_path / "outputs").exists()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    epochs = {row.split(",")[0] for row in rows[1:]}
    assert {"0", "1"} <= epochs  # the first run's rows are kept


def test_a_bad_override_on_the_command_line(cli, tmp_path):
    done = cli("intvae.train", *TINY, "delta=0", f"hydra.run.dir={tmp_path}/run")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: bound.interval: delta=0 is")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("overrides", "recorded"), [
    (["delta=0.05"], {"delta": 0.05}),
    (["interval.delta=0.05"], {"delta": 0.05}),  # the root delta stays 0.01
    (["bound=irelbo", "alpha=0.5"], {"alpha": 0.5, "delta": 0.01}),
    (["bound=irelbo", "bound.alpha=0.5"], {"alpha": 0.5}),  # the root alpha stays 2
    (["samples=3"], {"samples": 3}),
    (["bound.samples=3"], {"samples": 3}),  # the root samples stays 2 (TINY)
    (["bound=elbo", "delta=0.05"], {"delta": None, "alpha": None}),  # not used: null
])
def test_the_record_is_what_ran(compose_train, tmp_path, overrides, recorded):
    """Each way the config sets delta, alpha and samples: ``results.json``, the checkpoint's
    hyperparameters and the CSV logger's ``hparams.yaml`` all record the values the bound was
    built with, read from the bound itself."""
    import yaml

    cfg = compose_train(*TINY, *overrides, "evaluate.enabled=false")
    results = train(cfg)
    run = tmp_path / "run"
    hparams = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)[
        "hyper_parameters"]
    logged = yaml.safe_load((run / "hparams.yaml").read_text())
    for key, value in recorded.items():
        assert results[key] == value and hparams[key] == value and logged[key] == value, key
    bound = instantiate(cfg.bound)  # what the run built, independently of the record
    assert results["samples"] == bound.samples
    assert results["alpha"] == getattr(bound, "alpha", None)


@pytest.mark.parametrize("which", ["best", "last"])
def test_the_test_pass_and_the_evaluation_name_their_weights(compose_train, tmp_path, which):
    """``evaluate.checkpoint``: the best checkpoint by validation bound (the default) or the
    last; ``results.json`` names the file, and ``intvae-evaluate`` picks the same one."""
    from conftest import reevaluate

    results = train(compose_train(*TINY, "trainer.max_epochs=3", f"evaluate.checkpoint={which}"))
    run = tmp_path / "run"
    assert results["checkpoint"] == str(run / "checkpoints" / f"{which}.ckpt")
    assert results["weights"] == which
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert best["global_step"] <= last["global_step"]
    again = reevaluate(f"run={run}", f"checkpoint={which}", "samples=4", "compile=false")
    assert again["checkpoint"] == results["checkpoint"]
