"""The W&B side of the app (``intvae.app.wandb_run``, ``intvae.app.wandb_names``): an offline
2-seed sweep of the real command read back from its ``.wandb`` files (W&B's own protobuf
records, ``wandb_files``): flat config, name, group, tags, summary and media; the stored run
id; ``intvae-evaluate`` adding to a run's summary; the figures' rate. Offline runs of one
configuration typed in different ways (``SPELLINGS``) share a group, different ones do not;
the filters the docs give match the runs of their sweep; the saved view groups by the group."""

import json
import re
import sys
from types import SimpleNamespace

import nbformat
import pytest
from conftest import REPO, TINY, reevaluate
from omegaconf import OmegaConf
from wandb_files import OfflineRun, wandb_records

from intvae.app.callbacks import Figures
from intvae.app.config import WANDB_ID_FILE, run_id
from intvae.app.train import main
from intvae.app.wandb_names import MAX_GROUP, run_group
from intvae.app.wandb_run import logger_settings, summary

SWEEP = "sweep-2030"


def offline_runs(run_dir) -> list:
    """The offline run files of a run directory, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def train_offline(root, *overrides) -> None:
    """``intvae-train logger=wandb <TINY> <overrides>``, offline, in this process, with its data
    and W&B folders under ``root``."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("INTVAE_OFFLINE", "1")
        env.setenv("INTVAE_DATA_DIR", str(root / "data"))
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_DIR", str(root))
        env.setattr(sys, "argv", ["intvae.train", "logger=wandb", *TINY, *overrides])
        main()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``intvae-train -m logger=wandb bound=ielbo seed=0,1``, offline, in this process."""
    root = tmp_path_factory.mktemp("wandb")
    train_offline(root, "-m", "bound=ielbo", f"hydra.sweep.dir={root / SWEEP}", "seed=0,1")
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
    record = {k: v for k, v in first.config.items()
              if k not in ("config", "sweep_name", "_wandb")}
    assert first_record.run_group == run_group(record)  # the record's, as W&B stores it
    assert first_record.run_group.startswith("ielbo delta=0.01 K=2 gaussian hidden=64 latent=8 "
                                             "elu synthetic #")
    assert "seed" not in first_record.run_group and len(first_record.run_group) <= MAX_GROUP
    for record in (first_record, second_record):
        assert list(record.tags) == ["ielbo", "delta=0.01", f"sweep={SWEEP}"]
        assert record.job_type == "train"


SPELLINGS = {
    "experiment": ("experiment=recommended",),  # the IRELBO with alpha 0.5
    "bound": ("bound=irelbo", "alpha=0.5"),
    "typed_out": ("~experiment", "bound=irelbo", "bound.alpha=0.5", "optimizer.lr=1e-4",
                  "trainer.gradient_clip_val=3"),  # no preset; the trainer's 3.0 as an int
    "alpha": ("bound=irelbo", "alpha=2"),
    "ielbo": ("bound=ielbo", "alpha=0.5"),
    "ielbo_alpha": ("bound=ielbo", "alpha=2"),
    "ielbo_delta": ("bound=ielbo", "delta=0.05"),
}
"""Runs (the directory's name: overrides): ``experiment``, ``bound`` and ``typed_out`` train one
configuration, ``ielbo`` and ``ielbo_alpha`` another (the IELBO has no alpha). Single runs, not
one sweep: a sweep trains a configuration once (``intvae.app.sweeps``)."""


@pytest.fixture(scope="module")
def spellings(tmp_path_factory) -> dict[str, str]:
    """The W&B group of each run of ``SPELLINGS``, read back from its offline run file."""
    root = tmp_path_factory.mktemp("spellings")
    quick = ("evaluate.enabled=false", "~callbacks.figures")  # not in the record nor the group
    for name, overrides in SPELLINGS.items():
        train_offline(root, *quick, *overrides, f"hydra.run.dir={root / name}")
    return {name: read(root / name)[1].run_group for name in SPELLINGS}


def test_one_configuration_is_one_group_however_it_is_typed(spellings):
    assert spellings["experiment"] == spellings["bound"] == spellings["typed_out"]
    assert spellings["ielbo"] == spellings["ielbo_alpha"]
    assert spellings["bound"].startswith("irelbo delta=0.01 alpha=0.5 K=2 ")
    assert spellings["ielbo"].startswith("ielbo delta=0.01 K=2 ")


def test_different_configurations_are_different_groups(spellings):
    assert len({spellings[name] for name in ("bound", "alpha", "ielbo", "ielbo_delta")}) == 4
    assert spellings["ielbo_delta"].startswith("ielbo delta=0.05 K=2 ")


def test_the_group_is_the_record_less_seed_and_names():
    record = {"bound": "irelbo", "delta": 0.01, "alpha": 2, "samples": 1, "likelihood": "gaussian",
              "hidden": [200, 200], "latent": 25, "activation": "elu", "data": "mnist",
              "lr": 1e-4, "noise": None, "seed": 0, "bound_config": "irelbo",
              "experiment_config": "recommended"}
    group = run_group(record)
    assert re.fullmatch(r"irelbo delta=0\.01 alpha=2 K=1 gaussian hidden=200-200 latent=25 elu "
                        r"mnist #[0-9a-f]{10}", group)
    assert run_group({**record, "alpha": 2.0, "seed": 7, "bound_config": None,
                      "experiment_config": "paper_irelbo_mnist"}) == group
    assert run_group({**record, "lr": 3e-4}) != group  # not shown, but in the hash
    wide, wider = (run_group({**record, "hidden": [1000] * 40 + [last]}) for last in (1, 2))
    assert len(wide) == len(wider) == MAX_GROUP and re.search(r" #[0-9a-f]{10}$", wide)
    assert wide[:-11] == wider[:-11] and wide != wider  # cut alike, told apart by the hash


def test_a_configured_group_is_kept():
    record = {"bound": "elbo", "delta": None, "alpha": None, "seed": 0}
    wandb = {"group": None, "mode": "disabled"}
    settings = logger_settings(OmegaConf.create({"logger": {"wandb": wandb}}), record, None,
                               fresh=True)
    assert settings["group"] == run_group(record) and "id" not in settings
    mine = OmegaConf.create({"logger": {"wandb": {**wandb, "group": "mine"}}})
    assert "group" not in logger_settings(mine, record, None, fresh=True)


DOCUMENTS_WITH_FILTERS = ("README.md", "compare_bounds.ipynb", "intvae.report docstring",
                          "intvae.report --help", "docs/configuration.md")
"""The documents that give a W&B run filter for a sweep (``documented_filters``)."""


def documented_filters(capsys) -> dict[str, list[dict]]:
    """The W&B run filters the docs give for a sweep, by document: every JSON object holding
    ``<sweep>`` in the README, ``docs/*.md``, the notebook, the report's docstring and its
    ``--help``."""
    import intvae.report.__main__ as report

    with pytest.raises(SystemExit):
        report.parse_args(["--help"])
    notebook = nbformat.read(REPO / "notebooks" / "compare_bounds.ipynb", as_version=4)
    texts = {"README.md": (REPO / "README.md").read_text(),
             "compare_bounds.ipynb": "\n".join(cell.source for cell in notebook.cells),
             "intvae.report docstring": report.__doc__,
             "intvae.report --help": capsys.readouterr().out,
             **{f"docs/{doc.name}": doc.read_text() for doc in (REPO / "docs").glob("*.md")}}
    return {name: [json.loads(found) for found in
                   re.findall(r'\{\s*"[^"{}]+"\s*:\s*"[^"{}]*<sweep>[^"{}]*"\s*\}', text)]
            for name, text in texts.items()}


def matches(query: dict, run: OfflineRun, record) -> bool:
    """Whether W&B's run filter ``query`` (MongoDB-style, ``wandb.Api().runs``) selects the run:
    the forms the docs use, ``config.<key>``, ``group`` and ``tags`` equal to a value."""
    def field(key):
        if key.startswith("config."):
            return run.config.get(key.removeprefix("config."))
        if key in ("group", "tags"):
            return record.run_group if key == "group" else list(record.tags)
        pytest.fail(f"a filter field this test cannot check: {key}")

    return all(value in got if isinstance(got := field(key), list) else value == got
               for key, value in query.items())


def test_the_documented_filters_select_the_sweep(sweep, capsys):
    filters = documented_filters(capsys)
    assert all(filters[document] for document in DOCUMENTS_WITH_FILTERS), filters
    runs = [read(sweep / job)[:2] for job in ("0", "1")]
    for document, queries in filters.items():
        for query in queries:
            ours = json.loads(json.dumps(query).replace("<sweep>", SWEEP))
            other = json.loads(json.dumps(query).replace("<sweep>", "another-sweep"))
            assert all(matches(ours, *run) for run in runs), (document, query)
            assert not any(matches(other, *run) for run in runs), (document, query)


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
    panels = {section.name: section.panels for section in view.sections}
    lines = [p for p in panels["Bounds per epoch"] if isinstance(p, wr.LinePlot)]
    assert [(p.x, p.y) for p in lines] == [("epoch", ["train/bound"]), ("epoch", ["val/bound"])]
    bars = [p for p in panels["Test log-likelihood"] if isinstance(p, wr.BarPlot)]
    assert [p.metrics for p in bars] == [["test/log_likelihood"], ["test/bits_per_dim"]]
    # grouped by the W&B group (the configuration), in the runs table and the panels, as saved
    model = view._to_model()
    (runset,) = model.spec.section.run_sets
    assert [(key.section, key.name) for key in runset.grouping] == [("run", "group")]
    saved = json.dumps(model.model_dump(by_alias=True), default=str)
    assert saved.count('"groupBy": "group"') == len(lines) + len(bars)
    scatters = [p for p in panels["Test log-likelihood"] if isinstance(p, wr.ScatterPlot)]
    assert {p.x.name for p in scatters} == {"delta"}
    (coordinates,) = panels["Parameters"]
    assert [c.metric.name for c in coordinates.columns] == [
        "delta", "alpha", "bound", "test/bits_per_dim"]
    media = [key for section in ("Decoder std", "Images") for p in panels[section]
             if isinstance(p, wr.MediaBrowser) for key in p.media_keys]
    assert media == ["figures/decoder_std", "figures/reconstructions", "figures/prior_samples"]
    assert panels["Decoder std"][0].y == ["decoder/log10_std"]


def test_the_view_needs_entity_and_project(capsys):
    from intvae.report.wandb_view import main as view_main

    assert view_main(["--project", "intvae"]) == 2
    assert capsys.readouterr().err == "error: --project intvae: expected ENTITY/PROJECT\n"
