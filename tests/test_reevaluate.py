"""Re-evaluating a trained run (``intvae-evaluate``): under the intervals of the run's own
evaluation (the bound's, which may differ from the root ``interval``), and with every result
kept in its place in ``results.json`` and the W&B summary: the top level is the run's test
result (the whole test split) alone; a validation or partial evaluation is kept apart under
``evaluations[<key>]``, and a test result that is replaced moves there."""

import csv
import json
import logging
import math

import pytest
import torch
from conftest import TINY, reevaluate

from intvae.app import runs, wandb_run
from intvae.app.errors import ConfigError
from intvae.app.train import train

EVALUATIONS = "evaluations"
"""The key of ``results.json`` that keeps the evaluations apart from the run's test result."""
TEST_64 = [*TINY, "data.sizes.test=64"]
"""The tiny run with two test batches of 32, so that ``limit_batches=1`` leaves half out."""
OWN_INTERVAL = "bound.interval={_target_: intvae.intervals.Fixed, delta: 0.05}"
"""The bound's own intervals, set apart from the root ``interval`` (delta 0.01)."""


def results_of(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def top_level(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != EVALUATIONS}


def untimed(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k != "eval_seconds"}


@pytest.fixture
def run_64(compose_train, tmp_path):
    """A trained tiny run evaluated at its end (K = 4, all 64 test images): its directory."""
    train(compose_train(*TEST_64))
    return tmp_path / "run"


def test_a_run_is_reevaluated_under_its_bounds_own_intervals(compose_train, tmp_path):
    """Trained with the IELBO at delta 0.05 while the root ``interval`` says 0.01: the
    re-evaluation uses 0.05, and with the same K (and the run's seed) it gives the number of
    the run's own evaluation again, in its place (no second entry)."""
    trained = train(compose_train(*TINY, "bound=ielbo", OWN_INTERVAL))
    assert trained["delta"] == 0.05 and trained["eval_interval"] == "Fixed(delta=0.05)"
    again = reevaluate(f"run={tmp_path / 'run'}", "samples=4", "compile=false")
    assert again["eval_interval"] == "Fixed(delta=0.05)" and again["k"] == 4
    assert again["test_log_likelihood"] == pytest.approx(trained["test_log_likelihood"],
                                                         rel=1e-6)
    assert again["bits_per_dim"] == pytest.approx(trained["bits_per_dim"], rel=1e-6)
    assert EVALUATIONS not in again  # the same evaluation: it replaced itself


def test_a_partial_reevaluation_is_kept_apart(run_64):
    """``limit_batches=1``: 32 of the 64 test images. Every top-level field stays as the full
    evaluation wrote it; the result goes under its own key, and repeating it replaces only
    that entry."""
    before = results_of(run_64)
    assert before["k"] == 4 and before["eval_images"] == 64
    results = reevaluate(f"run={run_64}", "samples=3", "limit_batches=1", "compile=false")
    assert top_level(results) == before and before["eval_whole_split"] is True
    key = "test k=3 images=32 Fixed(delta=0.01) best.ckpt"
    assert list(results[EVALUATIONS]) == [key]
    entry = results[EVALUATIONS][key]
    assert (entry["k"], entry["eval_images"], entry["eval_whole_split"]) == (3, 32, False)
    assert math.isfinite(entry["test_log_likelihood"]) and entry["bits_per_dim"] > 0
    assert entry["checkpoint"] == str(run_64 / "checkpoints" / "best.ckpt")
    assert results_of(run_64) == results
    results = reevaluate(f"run={run_64}", "samples=2", "limit_batches=1", "compile=false")
    results = reevaluate(f"run={run_64}", "samples=3", "limit_batches=1", "compile=false")
    assert sorted(results[EVALUATIONS]) == ["test k=2 images=32 Fixed(delta=0.01) best.ckpt", key]
    assert untimed(results[EVALUATIONS][key]) == untimed(entry)  # seeded: the same again
    assert top_level(results) == before


def test_a_validation_reevaluation_is_kept_apart(run_64, caplog):
    """``split=val``, the whole split: not the test result either. The line logged (stdout on
    the command line) says where it went."""
    before = results_of(run_64)
    with caplog.at_level(logging.INFO, logger="intvae.app.evaluate"):
        results = reevaluate(f"run={run_64}", "samples=3", "split=val", "compile=false")
    assert top_level(results) == before
    key = "val k=3 images=32 Fixed(delta=0.01) best.ckpt"
    entry = results[EVALUATIONS][key]
    assert entry["eval_split"] == "val" and entry["eval_whole_split"] is True
    assert math.isfinite(entry["val_log_likelihood"]) and "test_log_likelihood" not in entry
    assert f"under evaluations[{key!r}]" in caplog.text and "unchanged" in caplog.text


def test_a_full_test_reevaluation_replaces_the_test_result_and_keeps_the_previous(run_64,
                                                                                  caplog):
    """``samples=3`` over the whole test split is the run's new test result (top level); the
    one it replaced (training's, K = 4) moves to its own key with its checkpoint, and comes
    back to the top level, its entry gone, when that evaluation is repeated."""
    before = results_of(run_64)
    with caplog.at_level(logging.INFO, logger="intvae.app.evaluate"):
        results = reevaluate(f"run={run_64}", "samples=3", "compile=false")
    old = "test k=4 images=64 Fixed(delta=0.01) best.ckpt"
    new = "test k=3 images=64 Fixed(delta=0.01) best.ckpt"
    assert results["k"] == 3 and results["eval_images"] == 64
    assert list(results[EVALUATIONS]) == [old]
    kept = results[EVALUATIONS][old]
    assert {k: kept[k] for k in runs.EVALUATION_FIELDS if k in kept} == {
        k: before[k] for k in runs.EVALUATION_FIELDS if k in before}
    assert kept["checkpoint"] == before["checkpoint"]
    assert f"the previous one kept under evaluations[{old!r}]" in caplog.text
    results = reevaluate(f"run={run_64}", "samples=4", "compile=false")
    assert list(results[EVALUATIONS]) == [new]
    assert results["test_log_likelihood"] == pytest.approx(before["test_log_likelihood"],
                                                           rel=1e-6)


def test_a_partial_evaluation_at_the_end_of_training_is_kept_apart(compose_train, tmp_path):
    """``evaluate.limit_batches=1`` in training (as ``debug=fdr`` sets it): no test result at
    the top level, and the loggers get it under its own keys, not ``test/log_likelihood``."""
    results = train(compose_train(*TEST_64, "evaluate.limit_batches=1"))
    key = "test k=4 images=32 Fixed(delta=0.01) best.ckpt"
    assert "test_log_likelihood" not in results and "k" not in results
    assert results[EVALUATIONS][key]["eval_images"] == 32
    assert results_of(tmp_path / "run") == results
    with open(tmp_path / "run" / "metrics.csv", newline="") as table:
        header = next(csv.reader(table))
    assert f"evaluations/{key}/log_likelihood" in header and "test/log_likelihood" not in header


def test_the_wandb_summary_places_evaluations_as_results_json_does():
    entry = {"val_log_likelihood": -5.0, "k": 7, "eval_images": 32, "bits_per_dim": 1.5,
             "eval_split": "val", "eval_whole_split": True, "eval_interval": None,
             "log_likelihood_kind": "density"}
    key = runs.evaluation_place(entry)
    assert key == "val k=7 images=32 density"
    got = wandb_run.summary({"status": "completed", "test_log_likelihood": -4.0, "k": 9,
                             "eval_split": "test", "eval_whole_split": True,
                             EVALUATIONS: {key: entry}})
    assert got == {"status": "completed", "test/log_likelihood": -4.0, "test/k": 9,
                   f"evaluations/{key}/log_likelihood": -5.0, f"evaluations/{key}/k": 7,
                   f"evaluations/{key}/images": 32, f"evaluations/{key}/bits_per_dim": 1.5}
    partial = {"test_log_likelihood": -3.0, "k": 2, "eval_images": 10, "eval_split": "test",
               "eval_whole_split": False, "eval_interval": "Bins(levels=256, eps=0.001)"}
    key = runs.evaluation_place(partial)
    assert wandb_run.evaluation_summary(partial, key) == {
        f"evaluations/{key}/log_likelihood": -3.0, f"evaluations/{key}/k": 2,
        f"evaluations/{key}/images": 10}


def test_non_finite_numbers_of_an_evaluation_kept_apart_are_flagged_in_it(tmp_path):
    """A diverged partial evaluation writes null and lists the field in its own entry; when a
    test result with a non-finite number is replaced, its flag moves with it."""
    path = tmp_path / "results.json"
    diverged = {"test_log_likelihood": -math.inf, "k": 2, "eval_images": 3, "eval_split": "test",
                "eval_whole_split": True, "eval_interval": "Fixed(delta=0.01)",
                "test_log_likelihood_bins": torch.tensor(-1.0)}
    placed, key = runs.place_evaluation({"bound": "ielbo", "val_bound": math.nan}, diverged)
    written = runs.write_results(path, placed)
    assert key is None and written["non_finite_fields"] == ["test_log_likelihood", "val_bound"]
    partial = {**diverged, "test_log_likelihood": math.nan, "eval_whole_split": False}
    placed, key = runs.place_evaluation(written, partial)
    written = runs.write_results(path, placed)
    assert written[EVALUATIONS][key]["non_finite_fields"] == ["test_log_likelihood"]
    assert written[EVALUATIONS][key]["test_log_likelihood"] is None
    finite = {**diverged, "test_log_likelihood": -7.0, "k": 5}
    written = runs.write_results(path, runs.place_evaluation(written, finite)[0])
    assert written["non_finite_fields"] == ["val_bound"] and written["k"] == 5
    moved = written[EVALUATIONS]["test k=2 images=3 Fixed(delta=0.01)"]  # no checkpoint named
    assert moved["non_finite_fields"] == ["test_log_likelihood"]
    assert moved["test_log_likelihood_bins"] == -1.0
    assert json.loads(path.read_text()) == written


def test_a_checkpoint_whose_bound_interval_names_other_code_is_refused(compose_train, tmp_path):
    """The bound's own ``interval`` node, which the re-evaluation now builds, is checked like
    every instantiated node (``intvae.app.runs.run_config``)."""
    train(compose_train(*TINY, "evaluate.enabled=false"))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["config"]["bound"]["interval"] = {
        "_target_": "builtins.open", "file": str(victim), "mode": "w"}
    torch.save(checkpoint, ckpt)
    with pytest.raises(ConfigError, match=r"bound\.interval\._target_='builtins\.open'"):
        reevaluate(f"run={ckpt}", "compile=false")
    assert victim.read_text() == "keep me"
