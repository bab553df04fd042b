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
    assert 'bound ("ielbo" -> "irelbo")' in summary[0] and "alpha (null -> 0.5)" in summary[0]
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
    with pytest.raises(RefusedRunError, match=r'bound \("ielbo" -> "irelbo"\), alpha \(null '
                                              r'-> 0.5\).*overwrite=true'):
        train(compose_train(*QUICK, "bound=irelbo"))
    assert results_of(run) == killed
    longer = train(compose_train(*QUICK, "bound=ielbo", "trainer.max_epochs=2"))
    assert longer["status"] == "completed" and longer["epochs"] == 2
    assert longer["max_epochs"] == 2 and longer["resumed_from"] == str(run / "checkpoints" /
                                                                       "last.ckpt")
