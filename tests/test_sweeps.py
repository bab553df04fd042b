"""Sweeps check what they skip: a finished job is skipped only when its record is the job's
(else refused in one line naming the keys, the run left untouched), a job repeating an earlier
job's configuration runs once, and every job returns a number to the sweeper
(``intvae.app.train.sweep_job``, ``intvae.app.sweeps``)."""

import json
import math
import sys

import pytest
from conftest import TINY
from hydra.core.hydra_config import HydraConfig

from intvae.app.train import main, sweep_job

QUICK = [*TINY, "evaluate.enabled=false"]


def sweep(monkeypatch, capsys, folder, *overrides: str) -> tuple[int, str]:
    """``intvae-train -m <overrides>`` into ``folder`` in this process: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["intvae.train", "-m", *QUICK, *overrides,
                                      f"hydra.sweep.dir={folder}"])
    try:
        main()
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def results_of(job) -> dict:
    return json.loads((job / "results.json").read_text())


def test_a_reused_sweep_directory_refuses_the_runs_of_other_settings(monkeypatch, capsys,
                                                                      app_env, tmp_path):
    """Rerunning ``-m bound=irelbo alpha=0.5,2`` into a directory holding two IELBO runs
    refuses both jobs in one line each naming the differing keys, leaves the IELBO runs as they
    were and fails the sweep; ``overwrite=true`` moves them aside and trains the IRELBO."""
    folder = tmp_path / "sweep"
    status, err = sweep(monkeypatch, capsys, folder, "bound=ielbo", "seed=0,1")
    assert status == 0, err[-3000:]
    before = {job: (folder / job / "results.json").read_bytes() for job in ("0", "1")}
    status, err = sweep(monkeypatch, capsys, folder, "bound=irelbo", "alpha=0.5,2")
    assert status == 1
    for job in ("0", "1"):
        assert (folder / job / "results.json").read_bytes() == before[job]
    summary = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(summary) == 1 and "2 job(s) of the sweep" in summary[0], err[-3000:]
    assert ('bound._target_ ("intvae.bounds.IELBO" -> "intvae.bounds.IRELBO")' in summary[0]
            and 'bound.alpha ("absent" -> 0.5)' in summary[0])
    assert "seed (1 -> 0)" in summary[0]  # job 1 held seed 1; the new sweep's seed is 0
    status, err = sweep(monkeypatch, capsys, folder, "bound=irelbo", "alpha=0.5,2",
                        "overwrite=true")
    assert status == 0, err[-3000:]
    assert [results_of(folder / job)["alpha"] for job in ("0", "1")] == [0.5, 2.0]
    assert json.loads((folder / "0" / "overwritten" / "1" / "results.json").read_bytes()
                      ) == json.loads(before["0"])


def test_a_sweep_trains_each_configuration_once(monkeypatch, capsys, app_env, tmp_path):
    """The README's sweep over bounds and alphas: the IELBO has no alpha, so its two jobs are
    one configuration, trained once; the copy is listed, and so again on a rerun, where the
    finished jobs are skipped."""
    folder = tmp_path / "sweep"
    overrides = ("bound=ielbo,irelbo", "alpha=0.5,2")
    status, err = sweep(monkeypatch, capsys, folder, *overrides)
    assert status == 0, err[-3000:]
    assert [results_of(folder / job)["bound"] for job in ("0", "2", "3")] == [
        "ielbo", "irelbo", "irelbo"]
    assert not (folder / "1" / "results.json").exists()  # bound=ielbo alpha=2: job 0 again
    assert "1 job(s) of the sweep" in err and "1 (= job 0)" in err
    trained = {job: (folder / job / "results.json").read_bytes() for job in ("0", "2", "3")}
    status, err = sweep(monkeypatch, capsys, folder, *overrides)
    assert status == 0 and "1 (= job 0)" in err, err[-3000:]
    assert {job: (folder / job / "results.json").read_bytes() for job in trained} == trained
    status, err = sweep(monkeypatch, capsys, folder, "bound=ielbo", "alpha=0.5")  # a smaller grid
    assert status == 0, err[-3000:]  # the jobs of earlier invocations are not this one's


def test_the_sweep_notes_claims_and_copies_across_invocations(tmp_path):
    """A rerun after a parallel sweep, in which a later job trained the configuration: the
    earlier job, whose directory holds no run, is the copy of the one whose directory does."""
    from intvae.app.sweeps import claim, read_notes, start_notes

    sweep_dir = tmp_path / "sweep"
    for job in (0, 1):
        (sweep_dir / str(job)).mkdir(parents=True)
    start_notes(sweep_dir)
    assert claim(sweep_dir, 1, "K", sweep_dir / "1") is None  # job 1 came first
    assert claim(sweep_dir, 0, "K", sweep_dir / "0")["job"] == 1
    (sweep_dir / "1" / "results.json").write_text("{}")
    start_notes(sweep_dir)  # the rerun, one job at a time
    assert read_notes(sweep_dir) == {}
    assert claim(sweep_dir, 0, "K", sweep_dir / "0")["job"] == 1
    assert claim(sweep_dir, 1, "K", sweep_dir / "1") is None
    assert read_notes(sweep_dir)[0]["copy_of"] == 1


def test_a_damaged_notes_file_is_one_line(tmp_path):
    from intvae.app.errors import ConfigError
    from intvae.app.sweeps import read_notes

    (tmp_path / "jobs.json").write_text("{broken")
    with pytest.raises(ConfigError, match=r"jobs.json cannot be read .*remove it"):
        read_notes(tmp_path)


def test_a_copy_waits_for_the_run_it_repeats(tmp_path):
    """Under a parallel launcher the run a copy repeats may still be training: the copy waits
    for its directory's lock before reading its result."""
    import threading

    from intvae.app.files import RunLock

    lock = RunLock(tmp_path).acquire()
    waited = threading.Event()
    waiter = threading.Thread(target=lambda: (RunLock(tmp_path).wait(), waited.set()))
    waiter.start()
    assert not waited.wait(0.3)
    lock.release()
    assert waited.wait(10)
    waiter.join()


def test_every_job_returns_a_number_to_the_sweeper(compose_train, tmp_path):
    """What Optuna needs on a rerun: a finished job skipped returns its recorded validation
    bound, not None; a failing job returns NaN (a failed trial) instead of stopping it."""
    sweep_dir = tmp_path / "sweep"
    multirun = ("hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}", "hydra.job.num=0")
    cfg = compose_train(*QUICK, *multirun, output_dir=sweep_dir / "0")
    assert HydraConfig.get().job.num == 0
    first = sweep_job(cfg)
    assert isinstance(first, float) and math.isfinite(first)
    assert first == results_of(sweep_dir / "0")["val_bound"]  # the value JSON holds
    assert sweep_job(compose_train(*QUICK, *multirun, output_dir=sweep_dir / "0")) == first
    failing = compose_train(*QUICK, *multirun, "bound=irelbo", "alpha=1",
                            output_dir=sweep_dir / "1")
    assert math.isnan(sweep_job(failing))


def test_a_resumed_run_keeps_its_settings_and_may_train_longer(compose_train, tmp_path):
    """An unfinished run (killed after its first epoch) resumed with another bound is refused
    in one line naming the keys, its files untouched; resumed with more epochs it continues."""
    from intvae.app.resume import RefusedRunError
    from intvae.app.train import train

    run = tmp_path / "run"
    train(compose_train(*QUICK, "bound=ielbo"))
    killed = {**results_of(run), "status": "interrupted"}
    (run / "results.json").write_text(json.dumps(killed))
    with pytest.raises(RefusedRunError, match=r'bound._target_ \("intvae.bounds.IELBO" -> '
                                              r'"intvae.bounds.IRELBO"\), bound.alpha \("absent" '
                                              r'-> 0.5\).*overwrite=true'):
        train(compose_train(*QUICK, "bound=irelbo"))
    assert results_of(run) == killed
    longer = train(compose_train(*QUICK, "bound=ielbo", "trainer.max_epochs=2"))
    assert longer["status"] == "completed" and longer["epochs"] == 2
    assert longer["max_epochs"] == 2 and longer["resumed_from"] == str(run / "checkpoints" /
                                                                       "last.ckpt")


SAME = [
    (["bound=ielbo", "alpha=0.5"], ["bound=ielbo", "alpha=2"]),  # the IELBO has no alpha
    (["bound=irelbo", "alpha=2"], ["bound=irelbo", "alpha=2.0"]),
    (["optimizer.lr=1e-4"], ["optimizer.lr=0.0001"]),
    (["delta=0.05"], ["interval.delta=0.05"]),
    (["samples=5", "bound=iwae"], ["bound=iwae", "bound.samples=5"]),
    (["trainer.precision=32"], ["trainer.precision=32-true"]),
    ([], ["threads=2", "compile=false", "logger=tensorboard", "callbacks.figures.num_images=3",
          "evaluate.chunk_elements=1000", "trainer.enable_progress_bar=false"]),
]
DIFFERENT = [
    (["model.bias_init=0.1"], ["model.bias_init=0.0"]),
    (["trainer.limit_train_batches=1"], ["trainer.limit_train_batches=1.0"]),
    (["bound=elbo", "delta=0.01"], ["bound=elbo", "delta=0.05"]),  # evaluated under its interval
    (["data.sizes.train=64"], ["data.sizes.train=128"]),
    (["guard.mode=skip"], ["guard.mode=stop"]),
    (["evaluate.samples=4"], ["evaluate.samples=8"]),
    (["seed=0"], ["seed=1"]),
]


@pytest.mark.parametrize("first, second", SAME + DIFFERENT)
def test_settings_tell_runs_apart_by_what_they_train_and_evaluate(first, second, compose_train):
    """Two spellings of one run have the same settings (and digest); a setting that changes
    what is trained or evaluated, whether or not the record names it, makes them differ."""
    from intvae.app.settings import changes, digest, settings

    one, two = (settings(compose_train(*QUICK, *overrides)) for overrides in (first, second))
    same = (first, second) in SAME
    assert (changes(one, two) == {}) == same, changes(one, two)
    assert (digest(one) == digest(two)) == same


def test_a_resumed_run_may_train_longer_not_shorter():
    from intvae.app.settings import changes

    for before, after, allowed in [(2, 3, True), (2, -1, True), (2, 1, False), (-1, 5, False)]:
        found = changes({"trainer.max_epochs": before}, {"trainer.max_epochs": after},
                        resuming=True)
        assert (found == {}) == allowed, (before, after)
    assert changes({"evaluate.samples": 4}, {"evaluate.samples": 8}, resuming=True) == {}
    assert changes({"evaluate.samples": 4}, {"evaluate.samples": 8}) != {}
