"""Exact resume (``intvae.app.resume``): a run killed with SIGKILL after its first epoch-end
checkpoint and resumed from ``last.ckpt`` reproduces the uninterrupted run's results; the
per-epoch seeds that make it so; ``resume=auto`` and ``resume=never``."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY

from intvae.app.errors import ConfigError
from intvae.app.resume import EpochSeeds
from intvae.app.runs import read_checkpoint
from intvae.app.train import train

RUN = [*TINY, "trainer.max_epochs=3"]
"""Three epochs of two steps, figures drawn after every epoch (they draw random numbers after
the epoch's checkpoint was written: the case a saved RNG state would get wrong)."""

COMPARED = ("epochs", "steps", "train_bound", "val_bound", "test_bound", "train_std_min",
            "test_std_min", "test_log_likelihood", "test_log_likelihood_bins", "bits_per_dim",
            "non_finite_steps")


def logged_a_training_epoch(run_dir) -> bool:
    """Whether ``run_dir/metrics.csv`` holds a training row (a ``train/bound`` value)."""
    try:
        with open(run_dir / "metrics.csv", newline="") as table:
            return any(row.get("train/bound") for row in csv.DictReader(table))
    except (OSError, csv.Error):
        return False


def kill_after_first_checkpoint(app_env, tmp_path, run_dir) -> int:
    """Start ``python -m intvae.train`` into ``run_dir``, SIGKILL it (and its process group)
    once ``checkpoints/last.ckpt`` exists and ``metrics.csv`` holds the training row logged
    after it; return the epoch of that checkpoint.

    Not as soon as ``last.ckpt`` appears: the training row logged after it must be in
    ``metrics.csv`` (written whole and atomically at each save, ``intvae.app.loggers``), so that
    the test sees a killed attempt's row after the checkpoint dropped on resume; the kill still
    lands anywhere in the rest of the epoch."""
    last = run_dir / "checkpoints" / "last.ckpt"
    with open(tmp_path / "killed.log", "w") as log:
        child = subprocess.Popen([sys.executable, "-m", "intvae.train", *RUN,
                                  f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=app_env,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        try:
            while not (last.exists() and logged_a_training_epoch(run_dir)):
                assert child.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint after 240 s"
                time.sleep(0.01)
            os.killpg(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return read_checkpoint(last)["epoch"]


def test_a_run_killed_after_an_epoch_resumes_exactly(app_env, compose_train, tmp_path):
    """Same machine, one thread: the resumed run's results equal the uninterrupted run's to
    float32 rounding (rel 1e-6, 0.004 nats; in practice bit for bit). Without the per-epoch
    seeds (``EpochSeeds``) they differ by the Monte Carlo noise of the samples of z: 0.3 to 1.1
    nats in this run."""
    killed = tmp_path / "killed"
    epoch = kill_after_first_checkpoint(app_env, tmp_path, killed)
    assert epoch < 2, "killed after the last epoch: nothing left to resume"
    # SIGKILL: no clean-up, the record still says what it said when training started
    assert json.loads((killed / "results.json").read_text())["status"] == "running"
    reference = train(compose_train(*RUN, output_dir=tmp_path / "reference"))
    resumed = train(compose_train(*RUN, output_dir=killed))  # resume=auto finds last.ckpt
    assert resumed["resumed_from"] == str(killed / "checkpoints" / "last.ckpt")
    assert reference["resumed_from"] is None and resumed["status"] == "completed"
    assert {k: resumed[k] for k in COMPARED} == pytest.approx(
        {k: reference[k] for k in COMPARED}, rel=1e-6, abs=0)
    rows = (killed / "metrics.csv").read_text().splitlines()[1:]
    assert {"0", "1", "2"} <= {row.split(",")[0] for row in rows}  # the killed run's rows kept


def draws():
    return torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random()


def test_epoch_seeds_make_an_epoch_independent_of_earlier_draws():
    seeds = EpochSeeds(5)
    epoch2 = SimpleNamespace(current_epoch=2, global_rank=0)
    seeds.on_train_epoch_start(epoch2, None)
    first = draws()
    draws(), torch.randn(1000), np.random.rand(17)  # e.g. a sanity check, figures
    seeds.on_train_epoch_start(epoch2, None)
    assert draws() == first
    for other in (SimpleNamespace(current_epoch=3, global_rank=0),
                  SimpleNamespace(current_epoch=2, global_rank=1)):  # next epoch, another rank
        seeds.on_train_epoch_start(other, None)
        assert draws()[0] != first[0]
    assert EpochSeeds(6).epoch_seed(2, 0) != seeds.epoch_seed(2, 0)
    assert seeds.state_dict() == {"seed": 5}


def test_resume_never_refuses_an_unfinished_run(compose_train, tmp_path):
    run = tmp_path / "run"
    train(compose_train(*TINY, "evaluate.enabled=false", output_dir=run))
    (run / "results.json").unlink()  # as if killed before the end
    with pytest.raises(ConfigError, match=r"is invalid with resume=never: it holds an "
                                          r"unfinished run .*last\.ckpt\); resume=auto"):
        train(compose_train(*TINY, "resume=never", output_dir=run))
    with pytest.raises(ConfigError, match="resume='sometimes' is invalid: resume must be auto"):
        train(compose_train(*TINY, "resume=sometimes", output_dir=tmp_path / "other"))
