"""The W&B side of the app (``intvae.app.wandb_run``, ``intvae.app.wandb_names``): an offline
2-seed sweep of the real command read back from its ``.wandb`` files (W&B's own protobuf
records, ``wandb_files``): flat config, name, group, tags, summary and media; the stored run
id; ``intvae-evaluate`` adding to a run's summary; the figures' rate."""

import json
import sys
from types import SimpleNamespace

import pytest
from conftest import TINY, reevaluate
from wandb_files import OfflineRun, wandb_records

from intvae.app.callbacks import Figures
from intvae.app.config import WANDB_ID_FILE, run_id
from intvae.app.train import main
from intvae.app.wandb_run import summary

SWEEP = "sweep-2030"


def offline_runs(run_dir) -> list:
    """The offline run files of a run directory, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``intvae-train -m logger=wandb bound=ielbo seed=0,1``, offline, in this process."""
    root = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("INTVAE_OFFLINE", "1")
        env.setenv("INTVAE_DATA_DIR", str(root / "data"))
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_DIR", str(root))
        env.setattr(sys, "argv", ["intvae.train", "-m", "logger=wandb", *TINY, "bound=ielbo",
                                  f"hydra.sweep.dir={root / SWEEP}", "seed=0,1"])
        main()
    return root / SWEEP


def read(job_dir) -> tuple[OfflineRun, object, dict]:
    """(the W&B run as the API serves it, its run record, the job's results.json)."""
    (path,) = offline_runs(job_dir)
    (record,) = [r.run for r in wandb_records(path) if r.WhichOneof("record_type") == "run"]
    return OfflineRun(path), record, json.loads((job_dir / "results.json").read_text())


def test_config_is_flat_and_keeps_the_resolved_config(sweep):
    run, _, results = read(sweep / "0")
    for key in ("bound", "delta", "alpha", "samples", "likelihood", "sigma_min", "seed",
                "bound_config", "interval_config", "likelihood_config", "noise_config",
                "model_config", "data_config", "experiment_config", "budget_config"):
        assert run.config[key] == results[key], key
    assert run.config["sweep_name"] == SWEEP
    assert run.config["bound_config"] == "ielbo" and run.config["model_config"] == (
        "mlp_64x1_elu_z8")
    assert run.config["config"]["seed"] == 0 and run.config["config"]["bound"]["_target_"]


def test_seeds_share_a_group_and_names_carry_what_varies(sweep):
    (first, first_record, _), (second, second_record, _) = read(sweep / "0"), read(sweep / "1")
    assert (first.name, second.name) == ("seed=0", "seed=1")
    assert first_record.run_group == second_record.run_group
    assert "bound=ielbo" in first_record.run_group and "seed" not in first_record.run_group
    assert len(first_record.run_group) <= 128
    for record in (first_record, second_record):
        assert list(record.tags) == ["ielbo", "delta=0.01", f"sweep={SWEEP}"]
        assert record.job_type == "train"


def test_the_id_is_stored_in_the_run_directory(sweep):
    ids = set()
    for job in ("0", "1"):
        _, record, _ = read(sweep / job)
        assert (sweep / job / WANDB_ID_FILE).read_text().strip() == record.run_id
        ids.add(record.run_id)
    assert len(ids) == 2


def test_summary_answers_from_the_results(sweep):
    run, _, results = read(sweep / "0")
    got = run.summary
    assert run.state == "finished" and got["status"] == "completed"
    assert got["test/k"] == results["k"] == 4
    assert got["test/images"] == results["eval_images"]
    for key, field in (("test/bits_per_dim", "bits_per_dim"), ("test/bound", "test_bound"),
                       ("test/log_likelihood", "test_log_likelihood"),
                       ("val/bound_final", "val_bound"), ("wall_seconds", "wall_seconds")):
        assert got[key] == pytest.approx(results[field], rel=1e-6), key
    assert got["train/non_finite_steps"] == results["non_finite_steps"] == 0
    assert got["decoder/std_min"] == pytest.approx(
        min(results["train_std_min"], results["test_std_min"]), rel=1e-6)
    assert got["val/bound"]["max"] >= results["val_bound"] - 1e-3  # the best epoch's


def test_figures_are_logged_as_images_and_a_histogram(sweep):
    run, _, _ = read(sweep / "0")
    images = {k.split("/")[1]: v for row in run.rows for k, v in row.items()
              if k.startswith("figures/") and k.endswith("/_type")}
    assert images == dict.fromkeys(("reconstructions", "prior_samples", "decoder_std"),
                                   "images/separated")
    assert any(row.get("decoder/log10_std/_type") == "histogram" for row in run.rows)


def test_evaluate_adds_to_the_runs_summary(sweep, monkeypatch):
    job = sweep / "1"
    monkeypatch.setenv("INTVAE_OFFLINE", "1")
    monkeypatch.setenv("INTVAE_DATA_DIR", str(sweep.parent / "data"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    results = reevaluate(f"run={job}", "samples=3", "compile=false")
    first, again = offline_runs(job)
    ids = {r.run.run_id for path in (first, again) for r in wandb_records(path)
           if r.WhichOneof("record_type") == "run"}
    assert ids == {(job / WANDB_ID_FILE).read_text().strip()}
    added = OfflineRun(again).summary
    assert added["test/k"] == results["k"] == 3
    assert added["test/log_likelihood"] == pytest.approx(results["test_log_likelihood"])


def test_evaluate_leaves_a_run_without_wandb_alone(tmp_path, monkeypatch):
    from intvae.app.wandb_run import add_evaluation

    fields = {"test_log_likelihood": -1.0, "k": 2}
    config = {"logger": {"wandb": {"project": "p", "mode": "offline"}}}
    assert add_evaluation(tmp_path, config, fields) is False  # no wandb_id
    assert not (tmp_path / "wandb").exists()


def test_run_id_is_new_for_a_fresh_run_and_kept_on_resume(tmp_path):
    first = run_id(tmp_path)
    assert len(first) == 16 and run_id(tmp_path) == first
    fresh = run_id(tmp_path, fresh=True)
    assert fresh != first and run_id(tmp_path) == fresh
    (tmp_path / WANDB_ID_FILE).unlink()
    assert run_id(tmp_path) not in (first, fresh)


def test_summary_of_a_validation_evaluation():
    got = summary({"status": "failed", "val_log_likelihood": -5.0, "k": 7, "bits_per_dim": 1.5,
                   "train_std_min": 0.2, "test_std_min": None})
    assert got == {"status": "failed", "val/log_likelihood": -5.0, "val/k": 7,
                   "val/bits_per_dim": 1.5, "train/std_min": 0.2, "decoder/std_min": 0.2}


@pytest.mark.parametrize(("max_epochs", "every"), [(1, 1), (100, 1), (101, 2), (1000, 10),
                                                   (None, 1), (-1, 1)])
def test_auto_rate(max_epochs, every):
    assert Figures.auto_every(max_epochs) == every


@pytest.mark.parametrize("max_epochs", [7, 100, 250, 1001])
def test_at_most_about_100_figure_sets_and_always_the_last_epoch(max_epochs):
    drawn = []
    figures = Figures()
    figures.draw = lambda trainer, module, label: drawn.append(label)
    for epoch in range(max_epochs):
        figures.on_train_epoch_end(SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs),
                                   None)
    assert len(drawn) <= 101 and drawn[-1] == f"epoch{max_epochs:03d}"
    assert len(drawn) >= min(max_epochs, 50)


def test_every_n_epochs_is_checked():
    with pytest.raises(ValueError, match="every_n_epochs"):
        Figures(every_n_epochs="often")


def test_the_comparison_view_is_built_offline():
    """The saved view (``intvae.report.wandb_view``) as built, not saved: its filter, grouping
    and panels."""
    import wandb_workspaces.reports.v2 as wr

    from intvae.report.wandb_view import build_workspace

    view = build_workspace("me/intvae", sweep=SWEEP)
    assert (view.entity, view.project, view.name) == ("me", "intvae", f"bounds {SWEEP}")
    assert view.runset_settings.filters == f"Config(\"sweep_name\") == '{SWEEP}'"
    assert build_workspace("me/intvae").runset_settings.filters == ""
    assert [key.name for key in view.runset_settings.groupby] == ["bound"]
    panels = {section.name: section.panels for section in view.sections}
    lines = [p for p in panels["Bounds per epoch"] if isinstance(p, wr.LinePlot)]
    assert [(p.x, p.y, p.groupby) for p in lines] == [
        ("epoch", ["train/bound"], "bound"), ("epoch", ["val/bound"], "bound")]
    bars = [p for p in panels["Test log-likelihood"] if isinstance(p, wr.BarPlot)]
    assert [(p.metrics, p.groupby) for p in bars] == [
        (["test/log_likelihood"], "bound"), (["test/bits_per_dim"], "bound")]
    scatters = [p for p in panels["Test log-likelihood"] if isinstance(p, wr.ScatterPlot)]
    assert {p.x.name for p in scatters} == {"delta"}
    (coordinates,) = panels["Parameters"]
    assert [c.metric.name for c in coordinates.columns] == [
        "delta", "alpha", "bound", "test/bits_per_dim"]
    media = [key for section in ("Decoder std", "Images") for p in panels[section]
             if isinstance(p, wr.MediaBrowser) for key in p.media_keys]
    assert media == ["figures/decoder_std", "figures/reconstructions", "figures/prior_samples"]
    assert panels["Decoder std"][0].y == ["decoder/log10_std"]
    assert view._to_model().spec  # serializes without a server


def test_the_view_needs_entity_and_project(capsys):
    from intvae.report.wandb_view import main as view_main

    assert view_main(["--project", "intvae"]) == 2
    assert capsys.readouterr().err == "error: --project intvae: expected ENTITY/PROJECT\n"
