"""Launchers (``intvae.app.launch``, ``conf/hydra/launcher/``): parallel sweeps with one GPU slot
per worker process, one or several slots per GPU (fake GPU ids on the CPU), and Slurm through
the real Hydra submitit launcher and submitit on a one-node Slurm made of four shell scripts
(sbatch, srun, scontrol, sacct): the sbatch script the launcher writes, run as a node would, and
a job preempted by submitit's own signal handler, requeued, resumed from its ``last.ckpt`` into
the same W&B run."""

import json
import os
import re
import signal
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from intvae.app import launch
from intvae.app.config import CONF_DIR, run_id
from intvae.app.launch import PinGPUs, ProcessGPU, parse_gpus, parse_runs_per_gpu, visible_gpus
from intvae.app.train import main
from intvae.checks import ParameterError

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def launcher_config(launcher: str, *overrides: str, node: str = "launcher"):
    """The resolved ``hydra.<node>`` of the composed training config."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"hydra/launcher={launcher}", *overrides],
                          return_hydra_config=True)
        return OmegaConf.to_container(cfg.hydra[node], resolve=True)
    finally:
        GlobalHydra.instance().clear()


# ------------------------------------------------------------------ GPU slots


def test_joblib_gpus_runs_one_worker_per_gpu(monkeypatch):
    monkeypatch.setenv("INTVAE_GPUS", "0,1,3")
    monkeypatch.delenv("INTVAE_RUNS_PER_GPU", raising=False)
    launcher = launcher_config("joblib_gpus")
    assert launcher["_target_"] == JOBLIB and launcher["n_jobs"] == 3


def test_joblib_gpus_runs_gpus_times_runs_per_gpu_workers(monkeypatch):
    """``n_jobs`` = GPUs x runs per GPU, from the environment (``INTVAE_GPUS``,
    ``INTVAE_RUNS_PER_GPU``) or from the ``pin_gpus`` keys; the callback gets the same."""
    monkeypatch.setenv("INTVAE_GPUS", "0,1,3")
    monkeypatch.setenv("INTVAE_RUNS_PER_GPU", "4")
    assert launcher_config("joblib_gpus")["n_jobs"] == 12
    pin = launcher_config("joblib_gpus", node="callbacks")["pin_gpus"]
    assert PinGPUs(**{k: v for k, v in pin.items() if k != "_target_"}).runs_per_gpu == 4
    assert launcher_config("joblib_gpus", "hydra.callbacks.pin_gpus.gpus=[5,6]",
                           "hydra.callbacks.pin_gpus.runs_per_gpu=3")["n_jobs"] == 6
    monkeypatch.setenv("INTVAE_GPUS", "0")  # all the jobs of a command on one GPU
    monkeypatch.setenv("INTVAE_RUNS_PER_GPU", "6")
    assert launcher_config("joblib_gpus")["n_jobs"] == 6
    assert launch.gpu_count() == 1  # GPUs only, whatever the runs per GPU


@pytest.mark.parametrize("bad", [0, -1, "0", "-2", "two", "2.5", 2.5, True, "4,5"])
def test_a_bad_runs_per_gpu_is_refused(bad, monkeypatch):
    message = (rf"^hydra.callbacks.pin_gpus.runs_per_gpu={re.escape(repr(bad))} is invalid: "
               r"hydra.callbacks.pin_gpus.runs_per_gpu must be an integer >= 1")
    if isinstance(bad, str) and bad.lstrip("-").isdigit():
        message = message.replace(re.escape(repr(bad)), re.escape(repr(int(bad))))
    with pytest.raises(ParameterError, match=message):
        parse_runs_per_gpu(bad)
    with pytest.raises(ParameterError, match=message):
        PinGPUs(runs_per_gpu=bad)
    if isinstance(bad, str):  # from the environment: refused when n_jobs is composed too
        monkeypatch.setenv("INTVAE_GPUS", "0,1")
        monkeypatch.setenv("INTVAE_RUNS_PER_GPU", bad)
        with pytest.raises(Exception, match=message[1:]):
            launcher_config("joblib_gpus")


def test_runs_per_gpu_values():
    assert parse_runs_per_gpu("4") == 4 and parse_runs_per_gpu(" 2 ") == 2
    assert parse_runs_per_gpu(3) == 3 and parse_runs_per_gpu(None) == parse_runs_per_gpu("") == 1


def test_gpu_ids(monkeypatch):
    assert parse_gpus("0, 1") == ["0", "1"] and parse_gpus([2, 3]) == ["2", "3"]
    assert parse_gpus(None) is None and parse_gpus("GPU-8a1b") == ["GPU-8a1b"]
    with pytest.raises(ValueError, match=r"hydra.callbacks.pin_gpus.gpus='0,cuda:1' is invalid: "
                                         r"GPU ids must be indexes or UUIDs"):
        parse_gpus("0,cuda:1")
    monkeypatch.setenv("INTVAE_GPUS", "4,5")
    assert visible_gpus() == ["4", "5"]
    monkeypatch.delenv("INTVAE_GPUS")
    monkeypatch.setattr(launch, "_INHERITED_VISIBLE", "2,7")
    assert visible_gpus() == ["2", "7"]
    monkeypatch.setattr(launch, "_INHERITED_VISIBLE", None)
    monkeypatch.setenv("PATH", "")  # no nvidia-smi
    assert visible_gpus() == [] and launch.gpu_count() == 1


def test_one_gpu_per_worker_process(monkeypatch, tmp_path):
    """Each ``ProcessGPU`` stands for one worker process (flock locks of separate open files
    exclude each other within one process too)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "restored after the test")
    gpus = ["0", "1"]
    a, b, c = ProcessGPU(), ProcessGPU(), ProcessGPU()
    assert a.pin(gpus, 0, tmp_path) == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert a.pin(gpus, 1, tmp_path) == "0"  # the worker's next job: the same GPU
    assert b.pin(gpus, 2, tmp_path) == "1"  # job 2 prefers GPU 0, held by worker a
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert c.pin(gpus, 3, tmp_path) == "1"  # more workers than GPUs: shares, with a warning
    a.release()
    assert ProcessGPU().pin(gpus, 1, tmp_path) == "0"  # a's GPU is free once it exits
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-0.1.lock", "gpu-1.1.lock"]


def test_two_gpus_with_two_slots_each(monkeypatch, tmp_path, caplog):
    """2 GPUs x 2 runs per GPU, four worker processes taking jobs 0..3: the workers spread over
    the GPUs before they stack (GPUs 0, 1, 0, 1; slot 1 of each, then slot 2), a fifth one
    shares with a warning, and a slot is free again once its worker exits."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "restored after the test")
    gpus = ["0", "1"]
    workers = [ProcessGPU() for _ in range(4)]
    assert [w.pin(gpus, job, tmp_path, 2) for job, w in enumerate(workers)] == ["0", "1", "0", "1"]
    assert [w.slot for w in workers] == [1, 1, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu-0.1.lock", "gpu-0.2.lock", "gpu-1.1.lock", "gpu-1.2.lock"]
    assert workers[0].pin(gpus, 5, tmp_path, 2) == "0"  # a worker keeps its slot
    with caplog.at_level("WARNING", logger="intvae.app.launch"):
        fifth = ProcessGPU()
        assert fifth.pin(gpus, 4, tmp_path, 2) == "0" and fifth.slot is None
    assert "more worker processes than GPU slots" in caplog.text
    caplog.clear()
    workers[3].release()  # GPU 1, slot 2
    with caplog.at_level("WARNING", logger="intvae.app.launch"):
        again = ProcessGPU()  # job 6 prefers GPU 0, whose slots are taken
        assert again.pin(gpus, 6, tmp_path, 2) == "1" and again.slot == 2
    assert caplog.text == "" and os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_gpu_left_with_a_free_slot_is_taken_first(monkeypatch, tmp_path):
    """Slot 1 of every GPU before slot 2 of any: a worker whose preferred GPU already holds a
    run goes to an idle GPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "restored after the test")
    gpus = ["0", "1", "2"]
    a, b = ProcessGPU(), ProcessGPU()
    assert a.pin(gpus, 0, tmp_path, 3) == "0" and b.pin(gpus, 3, tmp_path, 3) == "1"
    assert ProcessGPU().pin(gpus, 0, tmp_path, 3) == "2"


def job_config(tmp_path, mode=RunMode.MULTIRUN, target=JOBLIB, num=3):
    return OmegaConf.create({"hydra": {"mode": mode, "launcher": {"_target_": target},
                                       "job": {"num": num}, "sweep": {"dir": str(tmp_path)}}})


def test_the_pin_callback_hands_out_slots(monkeypatch, tmp_path, caplog):
    """``PinGPUs(runs_per_gpu=2)`` in a joblib job: the slot is logged, and ``gpu_share`` tells
    the run that its GPU holds two runs (1 where nothing pinned the process)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "restored after the test")
    monkeypatch.setattr(launch, "PROCESS_GPU", ProcessGPU())
    assert launch.gpu_share() == 1
    with caplog.at_level("INFO", logger="intvae.app.launch"):
        PinGPUs(gpus="0", runs_per_gpu="2").on_job_start(job_config(tmp_path, num=1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0" and launch.gpu_share() == 2
    assert re.search(r"job 1: CUDA_VISIBLE_DEVICES=0 \(worker process \d+, slot 1 of 2\)",
                     caplog.text), caplog.text


def test_the_pin_callback_acts_in_sweeps_only(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    monkeypatch.setenv("INTVAE_GPUS", "0,1")
    monkeypatch.setattr(launch, "PROCESS_GPU", ProcessGPU())
    PinGPUs().on_job_start(job_config(tmp_path, mode=RunMode.RUN))  # a DDP rank, a single run
    PinGPUs().on_job_start(job_config(tmp_path, target="BasicLauncher"))  # no gpus given
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "untouched"
    PinGPUs().on_job_start(job_config(tmp_path, num=3))  # joblib: INTVAE_GPUS, job 3 -> GPU 1
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setattr(launch, "PROCESS_GPU", ProcessGPU())
    PinGPUs(gpus="5,6").on_job_start(job_config(tmp_path / "b", target="BasicLauncher", num=0))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def fresh_loky_workers() -> None:
    """Stop the worker processes loky keeps for reuse (pinned by an earlier sweep here)."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


@pytest.mark.parametrize("gpu_ids, runs_per_gpu", [("0,1", "1"), ("0", "2")],
                         ids=["two GPUs, one run each", "one GPU, two runs at once"])
def test_a_joblib_sweep_pins_each_worker_to_its_own_gpu(gpu_ids, runs_per_gpu, monkeypatch,
                                                         app_env, tmp_path):
    """``python -m intvae.train -m hydra/launcher=joblib_gpus seed=0,1,2,3`` (here in this
    process; the jobs run in two loky worker processes), fake GPU ids 0 and 1, or GPU 0 with
    ``INTVAE_RUNS_PER_GPU=2``: every job records the GPU it saw (``results.json`` and its log);
    a worker keeps one GPU slot for all its jobs (CUDA could not switch), the two workers never
    share a slot, and on two GPUs, with the jobs alternating between the workers (their usual
    order), jobs 0..3 get 0, 1, 0, 1. The sweep's own process is not pinned. Loky keeps its
    workers for the next sweep of this process (a real sweep has a process of its own), so
    fresh ones are started."""
    fresh_loky_workers()
    monkeypatch.setenv("INTVAE_GPUS", gpu_ids)
    monkeypatch.setenv("INTVAE_RUNS_PER_GPU", runs_per_gpu)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "the sweep's own")
    monkeypatch.setattr(launch, "_INHERITED_VISIBLE", None)
    sweep = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", ["intvae.train", "-m", "hydra/launcher=joblib_gpus",
                                      "seed=0,1,2,3", *TINY, "evaluate.enabled=false",
                                      f"hydra.sweep.dir={sweep}"])
    main()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "the sweep's own"
    line = re.compile(r"job (\d+): CUDA_VISIBLE_DEVICES=(\S+) \(worker process (\d+), "
                      rf"slot (\d+) of {runs_per_gpu}\)")
    gpus, workers = [], {}
    for job in range(4):
        results = json.loads((sweep / str(job) / "results.json").read_text())
        assert results["status"] == "completed"
        assert results["cuda_visible_devices"] in gpu_ids.split(",")
        found = line.findall((sweep / str(job) / "train.log").read_text())
        assert len(found) == 1 and found[0][:2] == (str(job), results["cuda_visible_devices"])
        gpus.append(results["cuda_visible_devices"])
        workers.setdefault(found[0][2], []).append((job, (found[0][1], found[0][3])))
    for jobs in workers.values():
        assert len({slot for _, slot in jobs}) == 1, workers  # no job changed a worker's slot
    assert len({jobs[0][1] for jobs in workers.values()}) == len(workers), workers  # no sharing
    if gpu_ids == "0,1" and sorted(job for job, _ in next(iter(workers.values()))) in (
            [0, 2], [1, 3]):
        assert gpus == ["0", "1", "0", "1"]
    assert {p.name for p in (sweep / ".gpu_locks").iterdir()} <= {"gpu-0.1.lock", "gpu-1.1.lock",
                                                                  "gpu-0.2.lock"}


# ------------------------------------------------------------------ Slurm


class PreemptOnce(L.Callback):
    """Sends this process ``USR2`` (what Slurm sends ``signal_delay_s`` before the time limit,
    or on preemption) at the start of epoch 1 of job 0, once: submitit's handler then
    checkpoints the job (the launcher's ``checkpoint()``), requeues it and exits."""

    def __init__(self, marker: str):
        self.marker = Path(marker)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1 and HydraConfig.get().job.num == 0 \
                and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGUSR2)


FAKE_SLURM = {
    "sbatch": r"""#!/bin/bash
# sbatch SCRIPT: keep a copy of SCRIPT (as Slurm does), answer with the job id, then run its
# array tasks in the background on this node, one after another, each again (at most 3 times)
# while `scontrol requeue` asked for it; sacct reports a task COMPLETED once it ran.
spool="$FAKE_SLURM_SPOOL"; job=4242
cp "$1" "$spool/job-$job.sh"
echo "$1" >> "$spool/sbatch.log"
range=$(sed -n 's/^#SBATCH --array=\([0-9]*-[0-9]*\).*/\1/p' "$1")
(
  for task in $(seq "${range%-*}" "${range#*-}"); do
    for attempt in 1 2 3; do
      rm -f "$spool/requeue-${job}_$task"
      SLURM_ARRAY_JOB_ID=$job SLURM_ARRAY_TASK_ID=$task SLURM_JOB_ID=$((job + 1 + task)) \
      SLURM_NTASKS=1 SLURM_NTASKS_PER_NODE=1 SLURM_JOB_NUM_NODES=1 SLURM_NNODES=1 \
      SLURM_JOB_NODELIST=localhost SLURM_NODELIST=localhost SLURM_JOB_NAME=train \
        timeout 300 bash "$spool/job-$job.sh" >> "$spool/node.log" 2>&1
      [ -e "$spool/requeue-${job}_$task" ] || break
    done
    echo "${job}_$task|COMPLETED|localhost" >> "$spool/states"
  done
) < /dev/null > /dev/null 2>&1 &
echo "Submitted batch job $job"
""",
    "srun": r"""#!/bin/bash
# srun [OPTIONS] COMMAND...: one task, rank 0, on this node.
while [[ "$1" == -* ]]; do
  case "$1" in --output|--error|-o|-e) shift 2;; *) shift;; esac
done
SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 exec "$@"
""",
    "scontrol": r"""#!/bin/bash
# scontrol requeue JOBID: recorded; sbatch's loop runs the task again.
echo "$*" >> "$FAKE_SLURM_SPOOL/scontrol.log"
[ "$1" = requeue ] && touch "$FAKE_SLURM_SPOOL/requeue-$2"
""",
    "sacct": r"""#!/bin/bash
echo "JobID|State|NodeList"
cat "$FAKE_SLURM_SPOOL/states" 2>/dev/null
exit 0
""",
}
"""A one-node Slurm in four shell scripts, put first on PATH: what submitit calls (sbatch, srun,
scontrol requeue, sacct), doing what Slurm would do on one node, nothing of submitit's or
Hydra's Python replaced."""


def install_fake_slurm(monkeypatch, tmp_path) -> Path:
    """The fake Slurm commands on PATH; returns its spool directory (copies of the submitted
    scripts, node.log with the tasks' output, scontrol.log)."""
    bin_dir, spool = tmp_path / "slurm-bin", tmp_path / "slurm-spool"
    bin_dir.mkdir()
    spool.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_SPOOL", str(spool))
    return spool


def test_slurm_submission_preemption_and_requeue(monkeypatch, app_env, tmp_path):
    """``python -m intvae.train -m hydra/launcher=slurm ... seed=0,1`` through the real Hydra
    submitit launcher and submitit, on a one-node Slurm made of shell scripts (``FAKE_SLURM``):
    the sbatch script submitit writes from ``conf/hydra/launcher/slurm.yaml`` runs under bash,
    srun starts ``python -m submitit.core._submit`` in a fresh process with Slurm's environment
    variables, and the launcher collects the results as on a cluster. Job 0 gets ``USR2`` at the
    start of epoch 1: submitit's own handler checkpoints it (the launcher resubmits the same
    job), requeues it (``scontrol requeue``) and exits; Slurm runs the task again, which resumes
    from ``last.ckpt`` in the same directory and logs into the same W&B run (offline)."""
    spool = install_fake_slurm(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    sweep = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", [
        "intvae.train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
        "logger=wandb", *TINY, "trainer.max_epochs=2", "evaluate.enabled=false",
        "+callbacks.preempt._target_=test_launchers.PreemptOnce",
        f"+callbacks.preempt.marker={tmp_path}/preempted", f"hydra.sweep.dir={sweep}",
        "seed=0,1"])
    main()
    node_log = (spool / "node.log").read_text()

    script = (spool / "job-4242.sh").read_text()
    for option in ("--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1",
                   "--cpus-per-task=8", "--mem=32GB", "--time=240", "--signal=USR2@120",
                   "--array=0-1%2", "--open-mode=append", "--job-name=train",
                   f"--output={sweep}/.submitit/%A_%a/%A_%a_0_log.out"):
        assert f"#SBATCH {option}\n" in script, (option, script)
    assert "export SUBMITIT_EXECUTOR=slurm\nsrun --unbuffered" in script
    assert f"-m submitit.core._submit {sweep}/.submitit/%j" in script
    assert (spool / "scontrol.log").read_text() == "requeue 4242_0\n", node_log[-3000:]
    # max_num_timeout (10) requeues left: a preemption does not count as a timeout.
    assert "Requeued job 4242_0 (10 remaining timeouts)" in node_log
    for job in (0, 1):
        run = sweep / str(job)
        results = json.loads((run / "results.json").read_text())
        assert (results["status"], results["epochs"]) == ("completed", 2), node_log[-3000:]
        attempts = sorted((run / "wandb").glob("offline-run-*"))
        assert [p.name.rsplit("-", 1)[1] for p in attempts] == [run_id(run)] * (2 - job)
        assert len(list(attempts[-1].glob(f"run-{run_id(run)}.wandb"))) == 1
    first = json.loads((sweep / "0" / "results.json").read_text())
    assert first["resumed_from"] == str(sweep / "0" / "checkpoints" / "last.ckpt")
    assert json.loads((sweep / "1" / "results.json").read_text())["resumed_from"] is None


def test_runs_sharing_a_gpu_divide_the_automatic_chunk(monkeypatch):
    """Under ``runs_per_gpu`` = 4 a run's evaluation sizes its chunks from a quarter of what
    ``evaluate.chunk_elements=auto`` gives one run alone (the call is recorded, not run)."""
    import torch

    from intvae.app import evaluate as app_evaluate

    seen = {}

    def record(vae, batches, k, estimates, chunk_elements, progress):
        seen["chunk"] = chunk_elements
        raise RuntimeError("stop here")

    monkeypatch.setattr(app_evaluate, "log_likelihoods", record)
    monkeypatch.setattr(app_evaluate, "resolve_chunk_elements", lambda value, device: 1000)
    monkeypatch.setattr(app_evaluate, "gpu_share", lambda: 4)
    class Model:
        def to(self, device):
            return self

    vae, interval = Model(), object()
    monkeypatch.setattr(app_evaluate, "likelihood_kind", lambda vae: "density")
    monkeypatch.setattr(app_evaluate, "resolve_samples", lambda samples, device: 10)

    class Data:
        def setup(self, stage):
            pass

        def whole_split(self, split):
            return []

    with pytest.raises(RuntimeError, match="stop here"):
        app_evaluate.evaluate(vae, interval, Data(), "auto", torch.device("cuda"),
                              chunk_elements="auto")
    assert seen["chunk"] == 250
