"""The fault model (``docs/configuration.md``, *Faults*): what a kill, SIGTERM, a failed write, a
corrupt file, a second writer, a rerun sweep and bad input each do. Every case here failed on
the code before issue 16: each test reproduces one of the probe's findings."""

import csv
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import TINY

from intvae.app import files, loggers
from intvae.app.errors import ConfigError, Terminated, sigterm_raises
from intvae.app.files import RunLock
from intvae.app.loggers import AppendingCSVLogger
from intvae.app.runs import read_checkpoint
from intvae.app.train import train
from intvae.checks import ParameterError

LONGER = [*TINY, "data.batch_size=4", "data.sizes.train=256", "trainer.max_epochs=6",
          "callbacks.figures.every_n_epochs=6"]
"""A run long enough to be signalled mid-training (64 steps an epoch)."""


def results_of(run) -> dict:
    return json.loads((run / "results.json").read_text())


def start(app_env, tmp_path, run, *overrides) -> subprocess.Popen:
    log = open(tmp_path / f"{run.name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([sys.executable, "-m", "intvae.train", *overrides,
                             f"hydra.run.dir={run}"], cwd=tmp_path, env=app_env, stdout=log,
                            stderr=subprocess.STDOUT)


def wait_for(path, child, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert child.poll() is None, f"the run ended (status {child.returncode}) before {path}"
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.02)


# ------------------------------------------------------------------ status and signals


def test_sigterm_records_interrupted_exits_143_and_resumes(app_env, tmp_path, compose_train):
    run = tmp_path / "run"
    child = start(app_env, tmp_path, run, *LONGER)
    try:
        wait_for(run / "checkpoints" / "last.ckpt", child)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 143, (tmp_path / "run.log").read_text()[-3000:]
    results = results_of(run)
    assert results["status"] == "interrupted" and results["error"] == "Terminated"
    resumed = train(compose_train(*LONGER, output_dir=run))  # the same command again
    assert resumed["status"] == "completed" and resumed["epochs"] == 6
    assert resumed["resumed_from"] == str(run / "checkpoints" / "last.ckpt")


def read_table(path) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the CSV file ``path``; every row has the header's length."""
    with open(path, newline="") as file:
        header, *rows = csv.reader(file)
    assert all(len(row) == len(header) for row in rows), (header, rows)
    return header, rows


def logged_a_new_column(folder) -> AppendingCSVLogger:
    """A CSV logger into ``folder`` that saved a row, then logged one with a new column."""
    logger = AppendingCSVLogger(folder, name="", version="")
    logger.log_metrics({"train/bound": -1.5, "epoch": 0}, step=7)
    logger.save()
    logger.log_metrics({"val/bound": -2.5, "epoch": 0}, step=7)
    return logger


TABLE = (["epoch", "step", "train/bound", "val/bound"], [["0", "7", "-1.5", ""],
                                                        ["0", "7", "", "-2.5"]])
"""The table ``logged_a_new_column`` saves: the header and the rows."""


@pytest.mark.parametrize("replaced", [False, True])
def test_terminated_inside_the_csv_save_leaves_a_consistent_table(tmp_path, monkeypatch,
                                                                   replaced):
    """``Terminated`` raised inside the CSV logger's save of a row with a new column (the
    SIGTERM test's failure under load: a row longer than the header), before or after the file
    is replaced: the table on disk keeps every row under its header, and the next save (the
    interrupted run's ``finalize``) writes each logged row once."""
    logger = logged_a_new_column(tmp_path)
    write = loggers.write_text

    def terminated(path, text):
        if replaced:
            write(path, text)
        raise Terminated("received signal 15 (SIGTERM)")

    monkeypatch.setattr(loggers, "write_text", terminated)
    with pytest.raises(Terminated):
        logger.save()
    monkeypatch.setattr(loggers, "write_text", write)
    read_table(tmp_path / "metrics.csv")
    logger.finalize("failed")
    assert read_table(tmp_path / "metrics.csv") == TABLE


def test_sigterm_inside_the_csv_save_with_another_thread_running(tmp_path, monkeypatch):
    """A real SIGTERM inside the save, while another thread runs (training has torch's and
    Lightning's): holding SIGTERM back on the main thread (``pthread_sigmask``) did not keep it
    out of the save, since the kernel hands it to a thread that does not hold it back and the
    main thread runs the handler at its next bytecode. The table stays consistent."""
    logger = logged_a_new_column(tmp_path)
    idle = threading.Event()
    helper = threading.Thread(target=idle.wait, daemon=True)
    helper.start()
    write = loggers.write_text

    def signalled(path, text):
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the handler raises in here, at a loop's end
            time.sleep(0.001)
        raise AssertionError("SIGTERM never raised")

    monkeypatch.setattr(loggers, "write_text", signalled)
    try:
        with sigterm_raises(), pytest.raises(Terminated):
            logger.save()
    finally:
        idle.set()
    monkeypatch.setattr(loggers, "write_text", write)
    logger.finalize("failed")
    assert read_table(tmp_path / "metrics.csv") == TABLE


def test_a_resume_refuses_a_row_longer_than_the_header_in_one_line(tmp_path):
    """The table that an interrupted save of an older intvae could leave (its columns cannot be
    told apart): refused, naming the file and the line, instead of a ``ValueError`` from ``csv``."""
    (tmp_path / "metrics.csv").write_text("epoch,step,train/bound\n0,7,-1.5\n0,7,,-2.5\n")
    logger = AppendingCSVLogger(tmp_path, name="", version="")
    logger.keep_rows_up_to(7, 0)
    with pytest.raises(ConfigError, match=r"metrics.csv is invalid: line 3 has more fields "
                                          r"than its header \(3\)"):
        logger.log_metrics({"train/bound": -1.0}, step=8)  # opens the table


class Kill(BaseException):
    """Stands for SIGKILL at a chosen point: no ``except`` of the app catches it."""


def test_a_kill_in_the_final_evaluation_resumes_to_the_uninterrupted_results(
        compose_train, tmp_path, monkeypatch):
    """Killed after training, during the test pass or the evaluation: the rerun trains nothing,
    keeps the fit's numbers and reproduces the test and evaluation numbers exactly (both are
    seeded from the run's seed)."""
    run = [*TINY, "trainer.max_epochs=2"]
    reference = train(compose_train(*run, output_dir=tmp_path / "reference"))
    killed = tmp_path / "killed"
    import intvae.app.train as app

    real = app.evaluate_run

    def kill(*args, **kwargs):
        raise Kill

    monkeypatch.setattr(app, "evaluate_run", kill)
    with pytest.raises(Kill):
        train(compose_train(*run, output_dir=killed))
    assert results_of(killed)["status"] == "running"  # what a SIGKILL leaves
    monkeypatch.setattr(app, "evaluate_run", real)
    resumed = train(compose_train(*run, output_dir=killed))
    compared = ("epochs", "steps", "train_bound", "val_bound", "train_std_min", "test_bound",
                "test_std_min", "test_log_likelihood", "test_log_likelihood_bins",
                "bits_per_dim")
    assert {k: resumed[k] for k in compared} == {k: reference[k] for k in compared}
    assert resumed["status"] == "completed"
    rows = list(csv.DictReader((killed / "metrics.csv").open()))
    tests = [row for row in rows if row.get("test/bound")]
    assert len(tests) == 1  # the killed attempt's test row was not kept twice


def test_an_error_in_the_final_evaluation_is_recorded_as_failed(compose_train, tmp_path,
                                                                  monkeypatch):
    import intvae.app.train as app

    def fail(*args, **kwargs):
        raise RuntimeError("allocation of 64 GB failed")

    monkeypatch.setattr(app, "evaluate_run", fail)
    with pytest.raises(RuntimeError):
        train(compose_train(*TINY, output_dir=tmp_path / "run"))
    results = results_of(tmp_path / "run")
    assert results["status"] == "failed"
    assert results["error"] == "RuntimeError: allocation of 64 GB failed"
    monkeypatch.undo()
    again = train(compose_train(*TINY, output_dir=tmp_path / "run"))  # not refused: resumes
    assert again["status"] == "completed" and again["test_log_likelihood"] is not None


def test_a_run_whose_every_update_was_skipped_failed(compose_train, tmp_path, monkeypatch):
    """Every gradient non-finite: the guard skips every update, and the run is ``failed``,
    not ``completed``."""
    from intvae.app.errors import NonFiniteError
    from intvae.app.module import VAEModule

    real = VAEModule.training_step
    monkeypatch.setattr(VAEModule, "training_step",
                        lambda self, x, i: real(self, x, i) * float("nan"))
    with pytest.raises(NonFiniteError, match="every one of the 2 updates .* was skipped"):
        train(compose_train(*TINY, output_dir=tmp_path / "run"))
    results = results_of(tmp_path / "run")
    assert results["status"] == "failed" and results["non_finite_steps"] == 2


# ------------------------------------------------------------------ writes


def test_a_failed_checkpoint_write_fails_the_run_and_leaves_no_partial_file(
        compose_train, tmp_path, monkeypatch):
    """A full disk (ENOSPC while writing the checkpoint): the run fails in one line naming the
    file; no half-written checkpoint and no temporary file are left, in the run directory or
    in $TMPDIR."""
    def full(checkpoint, file):
        file.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.torch, "save", full)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"the checkpoint .*\.ckpt could not be written "
                                          r"\(OSError: No space left on device\)"):
        train(compose_train(*TINY, output_dir=run))
    results = results_of(run)
    assert results["status"] == "failed" and "could not be written" in results["error"]
    assert list((run / "checkpoints").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_symlinked_config_yaml_is_replaced_not_followed(compose_train, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (run / "config.yaml").symlink_to(victim)
    train(compose_train(*TINY, "evaluate.enabled=false", output_dir=run))
    assert victim.read_text() == "keep me"
    assert not (run / "config.yaml").is_symlink() and "delta" in (run / "config.yaml").read_text()


def test_files_get_the_usual_mode(compose_train, tmp_path):
    run = tmp_path / "run"
    train(compose_train(*TINY, "evaluate.enabled=false", output_dir=run))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.json", "config.yaml", "checkpoints/last.ckpt", "metrics.csv"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask, name


def test_a_bit_flipped_checkpoint_is_refused(compose_train, tmp_path):
    run = tmp_path / "run"
    train(compose_train(*TINY, "evaluate.enabled=false", output_dir=run))
    (run / "results.json").unlink()  # an unfinished run: resume=auto reads last.ckpt
    last = run / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x01
    last.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"corrupt checkpoint, the CRC of its member .* does "
                                          r"not match"):
        train(compose_train(*TINY, output_dir=run))
    with pytest.raises(ConfigError, match="CRC"):
        read_checkpoint(last)


# ------------------------------------------------------------------ owners and sweeps


def test_a_second_command_into_a_locked_directory_is_refused(compose_train, tmp_path):
    run = tmp_path / "run"
    holder = RunLock(run).acquire()
    try:
        with pytest.raises(ConfigError, match=rf"another command is writing into it \(process "
                                              rf"{os.getpid()}, lock .*\.lock\)"):
            train(compose_train(*TINY, output_dir=run))
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.release()
    assert train(compose_train(*TINY, "evaluate.enabled=false",
                               output_dir=run))["status"] == "completed"


def test_two_commands_at_once_one_runs_the_other_is_refused(app_env, tmp_path):
    run = tmp_path / "run"
    first = start(app_env, tmp_path, run, *LONGER, "trainer.max_epochs=100")
    try:
        wait_for(run / "results.json", first)  # written once the lock is held
        second = subprocess.run([sys.executable, "-m", "intvae.train", *LONGER,
                                 f"hydra.run.dir={run}"], cwd=tmp_path, env=app_env,
                                capture_output=True, text=True, timeout=240)
        assert second.returncode == 1
        assert re.search(rf"^error: hydra.run.dir={run} is invalid: another command is writing "
                         rf"into it \(process {first.pid},", second.stderr, re.M), second.stderr
    finally:
        first.kill()
        first.wait()


def test_ckpt_path_into_a_finished_run(compose_train, tmp_path):
    run = tmp_path / "run"
    first = train(compose_train(*TINY, "evaluate.enabled=false", output_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"leaves none to train; pass a larger "
                                          r"trainer.max_epochs"):
        train(compose_train(*TINY, f"ckpt_path={last}", output_dir=run))
    assert results_of(run) == first  # the record is untouched
    continued = train(compose_train(*TINY, "trainer.max_epochs=2", f"ckpt_path={last}",
                                    "evaluate.enabled=false", output_dir=run))
    assert continued["epochs"] == 2 and continued["train_bound"] is not None
    assert results_of(run / "continued" / "1") == first  # the finished record is kept
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    epochs = [row["epoch"] for row in rows if row.get("train/bound")]
    assert epochs == ["0", "1"]  # one training row per epoch


def test_a_rerun_sweep_skips_finished_jobs_and_finishes_the_others(cli, tmp_path):
    sweep = tmp_path / "sweep"
    command = ("intvae.train", "-m", "seed=0,1,2", *TINY, "evaluate.enabled=false",
               f"hydra.sweep.dir={sweep}")
    assert cli(*command).returncode == 0
    first = {job: results_of(sweep / str(job)) for job in range(3)}
    (sweep / "1" / "results.json").unlink()  # job 1 as if killed: unfinished
    done = cli(*command)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "job 0: skipped" in log and "job 2: skipped" in log and "job 1: skipped" not in log
    assert results_of(sweep / "1")["status"] == "completed"
    assert results_of(sweep / "0") == first[0]


def test_a_failing_job_does_not_stop_the_sweep(cli, tmp_path):
    sweep = tmp_path / "sweep"
    done = cli("intvae.train", "-m", "bound=irelbo", "alpha=1,2", *TINY,
               "evaluate.enabled=false", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1
    assert results_of(sweep / "1")["status"] == "completed"  # the job after the failing one
    assert results_of(sweep / "0")["status"] == "failed"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "1 job(s) of the sweep" in errors[0]
    assert re.search(r"0 \(failed: .*alpha=1(\.0)? is invalid", errors[0]), errors[0]


def test_an_unwritable_output_directory_is_one_line(cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = cli("intvae.train", *TINY, f"hydra.run.dir={blocker}/run")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: hydra.run.dir={blocker}/run is invalid: it cannot "
                                  "be written into")
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ bad input


def test_samples_that_cannot_fit_in_memory_are_refused_before_allocating(compose_train,
                                                                         tmp_path):
    with pytest.raises(ParameterError, match=r"samples=1000000000 is invalid with "
                                             r"data.batch_size=32: .* GiB, more than the"):
        train(compose_train(*TINY, "samples=1000000000", output_dir=tmp_path / "run"))


@pytest.mark.parametrize("delta", ["0.5", "1e9"])
def test_an_interval_as_wide_as_the_data_is_refused(compose_train, tmp_path, delta):
    with pytest.raises(ParameterError, match=rf"delta={float(delta)!r} is invalid: delta must "
                                             r"be below half the data range"):
        train(compose_train(*TINY, f"delta={delta}", output_dir=tmp_path / "run"))


def test_the_record_names_only_the_parameters_that_ran(compose_train, tmp_path):
    results = train(compose_train(*TINY, "bound=ielbo", "interval=bins",
                                  "evaluate.enabled=false", output_dir=tmp_path / "run"))
    assert (results["interval"], results["delta"], results["alpha"]) == ("bins", None, None)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["delta"] is None


def test_an_unreadable_results_json_fails_the_evaluation_before_it_starts(compose_train,
                                                                         tmp_path):
    from conftest import reevaluate

    run = tmp_path / "run"
    train(compose_train(*TINY, "evaluate.enabled=false", output_dir=run))
    (run / "results.json").write_text("{not json")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"{run / 'results.json'} cannot be read"):
        reevaluate(f"run={run}", "samples=100000", "compile=false")
    assert time.perf_counter() - started < 30  # refused before 32 images x 100,000 samples
