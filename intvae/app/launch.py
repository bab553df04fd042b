"""Launching runs: parallel sweeps on one machine, one or several runs per GPU, and Slurm.

**GPU slots** (``hydra/launcher=joblib_gpus``, ``conf/hydra/launcher/joblib_gpus.yaml``):
Hydra's joblib launcher runs the jobs of a sweep in ``n_jobs`` loky worker processes and assigns
no GPU, so every job would use ``cuda:0``. ``PinGPUs``, a Hydra callback that every run has
(``conf/train.yaml``: ``hydra.callbacks.pin_gpus``), pins each worker process to one GPU in
``on_job_start``, before the job touches CUDA, by setting ``CUDA_VISIBLE_DEVICES``. Each GPU has
``runs_per_gpu`` slots (``INTVAE_RUNS_PER_GPU``, default 1: one run per GPU), and
``joblib_gpus`` starts GPUs x ``runs_per_gpu`` workers (``${intvae.gpu_workers:...}``), so that
a small model can run several jobs of a sweep at once on one GPU. Loky reuses its workers from
job to job, and CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when a process first initializes it:
a worker that ran a job on GPU 1 stays on GPU 1. So the pin is per *process*, not per job: the
first job in a worker takes the first free slot, in the order slot 1 of every GPU, starting from
``gpus[job.num % len(gpus)]``, then slot 2 of every GPU, and so on (the workers spread over the
GPUs before they stack on one), and holds it (an ``fcntl.flock`` on
``<sweep dir>/.gpu_locks/gpu-<id>.<slot>.lock``, released when the worker exits) for every later
job of that worker. Two workers alive at once never share a slot, so no GPU holds more than
``runs_per_gpu`` of them (while there are no more workers than slots; a worker that finds every
slot taken shares a GPU with a warning). With jobs taken in order (worker A: jobs 0, 2; worker
B: jobs 1, 3) the jobs get GPUs 0, 1, 0, 1; so do four workers with jobs 0..3 on two GPUs with
two slots each. Each job logs ``job <n>: CUDA_VISIBLE_DEVICES=<id> (worker process <pid>, slot
<s> of <runs_per_gpu>)`` and records ``cuda_visible_devices`` in its ``results.json``;
``gpu_share()`` tells a run how many runs its GPU holds at once.

The GPU ids: ``hydra.callbacks.pin_gpus.gpus`` (``INTVAE_GPUS=0,1,...``), else the
``CUDA_VISIBLE_DEVICES`` the sweep was started with, else the GPUs ``nvidia-smi -L`` lists
(CUDA is not initialized to count them). Pinning acts in multirun jobs under a joblib launcher,
or under any launcher when ``gpus`` is given; never in single runs (DDP ranks keep all GPUs).

**Slurm** (``hydra/launcher=slurm``, ``conf/hydra/launcher/slurm.yaml``): submitit submits one
array task per job; ``signal_delay_s`` seconds before the time limit it sends ``USR2``, calls the
launcher's ``checkpoint()`` (which resubmits the same job: same overrides, same output directory)
and requeues it, at most ``max_num_timeout`` times; the requeued job resumes from its
``checkpoints/last.ckpt`` (``resume=auto``, ``intvae.app.resume``) and logs into the same W&B run.
Lightning's own Slurm requeue (``SIGUSR1``) is turned off under submitit
(``trainer_plugins``), so that only one of the two handles the signal.
"""

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from intvae.checks import ParameterError, is_int, require

log = logging.getLogger(__name__)

ENV_GPUS = "INTVAE_GPUS"
ENV_RUNS_PER_GPU = "INTVAE_RUNS_PER_GPU"
RUNS_PER_GPU_KEY = "hydra.callbacks.pin_gpus.runs_per_gpu"
LOCK_FOLDER = ".gpu_locks"
_INHERITED_VISIBLE = os.environ.get("CUDA_VISIBLE_DEVICES")
"""``CUDA_VISIBLE_DEVICES`` as this process started (before any pinning)."""


def parse_gpus(value) -> list[str] | None:
    """GPU ids from ``"0,1"``, ``[0, 1]`` or ``"GPU-<uuid>,..."``; None for None or ``""``.
    Raises ``ParameterError`` for an entry that is not a GPU index or UUID."""
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    ids = [str(item).strip() for item in items]
    bad = [i for i in ids if not (i.isdigit() or i.startswith(("GPU-", "MIG-")))]
    if bad or not ids:
        raise ParameterError(f"hydra.callbacks.pin_gpus.gpus={value!r} is invalid: GPU ids "
                             "must be indexes or UUIDs separated by commas "
                             f"({ENV_GPUS}=0,1), not {bad}")
    return ids


def visible_gpus() -> list[str]:
    """The GPUs a sweep on this machine may use, without initializing CUDA: ``INTVAE_GPUS``,
    else the inherited ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``; [] if none."""
    explicit = parse_gpus(os.environ.get(ENV_GPUS))
    if explicit:
        return explicit
    if _INHERITED_VISIBLE is not None:
        return [i.strip() for i in _INHERITED_VISIBLE.split(",") if i.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(
        line for line in listing.splitlines() if line.startswith("GPU "))]


def parse_runs_per_gpu(value) -> int:
    """Runs per GPU from ``4`` or ``"4"`` (``INTVAE_RUNS_PER_GPU``); 1 for None or ``""``.
    Raises ``ParameterError`` for anything but an integer >= 1."""
    if value is None or value == "":
        return 1
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    require(RUNS_PER_GPU_KEY, value, is_int(value) and value >= 1,
            f"an integer >= 1, the runs each GPU holds at once ({ENV_RUNS_PER_GPU}=4)")
    return value


def gpu_count(gpus=None) -> int:
    """How many GPUs a parallel sweep uses, at least 1: ``gpus`` (``parse_gpus``), else those
    ``visible_gpus`` finds."""
    return max(1, len(parse_gpus(gpus) or visible_gpus()))


def gpu_workers(gpus=None, runs_per_gpu=1) -> int:
    """The worker processes of a parallel sweep: ``gpu_count(gpus)`` x ``runs_per_gpu``
    (``${intvae.gpu_workers:<gpus>,<runs_per_gpu>}``, the ``n_jobs`` of
    ``hydra/launcher=joblib_gpus``)."""
    return gpu_count(gpus) * parse_runs_per_gpu(runs_per_gpu)


def lock_name(gpu: str, slot: int) -> str:
    """The lock file of ``slot`` (1, 2, ...) of ``gpu``."""
    return f"gpu-{gpu}.{slot}.lock"


class ProcessGPU:
    """The GPU slot of this process, chosen once (module docstring)."""

    def __init__(self):
        self.gpu: str | None = None
        self.slot: int | None = None
        self.runs_per_gpu = 1
        self._lock_fd: int | None = None

    def pin(self, gpus: list[str], job_num: int, lock_dir: Path, runs_per_gpu: int = 1) -> str:
        """Pin this process to a slot of a GPU of ``gpus``, ``runs_per_gpu`` slots per GPU: the
        first free one of slot 1 of each GPU from ``gpus[job_num % len(gpus)]`` on, then slot
        2, ... (first call; later calls return the same GPU)."""
        if self.gpu is not None:
            return self.gpu
        lock_dir.mkdir(parents=True, exist_ok=True)
        order = [(gpus[(job_num + k) % len(gpus)], slot)
                 for slot in range(1, runs_per_gpu + 1) for k in range(len(gpus))]
        for gpu, slot in order:
            fd = os.open(lock_dir / lock_name(gpu, slot), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.gpu, self.slot, self._lock_fd = gpu, slot, fd
            break
        else:
            self.gpu = gpus[job_num % len(gpus)]
            log.warning("more worker processes than GPU slots (GPUs %s x %d runs per GPU): this "
                        "one shares GPU %s beyond its slots (hydra/launcher=joblib_gpus sets "
                        "hydra.launcher.n_jobs to GPUs x runs_per_gpu = %d)", gpus, runs_per_gpu,
                        self.gpu, len(gpus) * runs_per_gpu)
        self.runs_per_gpu = runs_per_gpu
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu
        return self.gpu

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self.gpu, self.slot, self._lock_fd, self.runs_per_gpu = None, None, None, 1


PROCESS_GPU = ProcessGPU()


def gpu_share() -> int:
    """How many runs this process's GPU holds at once: the ``runs_per_gpu`` of its pin, 1 where
    ``PinGPUs`` did not pin it (e.g. to size per-run GPU memory)."""
    return PROCESS_GPU.runs_per_gpu if PROCESS_GPU.gpu is not None else 1


def cuda_initialized() -> bool:
    """Whether this process has initialized CUDA (without importing torch if it has not)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


class PinGPUs(Callback):
    """Hydra callback: one GPU slot per worker process of a parallel sweep (module docstring).

    Args:
        gpus: GPU ids (``"0,1"`` or a list); None: ``visible_gpus()``, and only under a joblib
            launcher.
        runs_per_gpu: slots per GPU, the runs a GPU holds at once (an integer >= 1, or its
            digits as a string: ``INTVAE_RUNS_PER_GPU``); None: 1.
    """

    def __init__(self, gpus=None, runs_per_gpu=1):
        self.gpus = parse_gpus(gpus)
        self.runs_per_gpu = parse_runs_per_gpu(runs_per_gpu)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        hydra = config.hydra
        if hydra.mode != RunMode.MULTIRUN:
            return
        if self.gpus is None and "joblib" not in str(hydra.launcher.get("_target_", "")).lower():
            return
        gpus = self.gpus or visible_gpus()
        if not gpus:
            return
        if PROCESS_GPU.gpu is None and cuda_initialized():
            log.warning("job %s: CUDA is already initialized in this process; "
                        "CUDA_VISIBLE_DEVICES cannot pin it to one GPU any more", hydra.job.num)
        gpu = PROCESS_GPU.pin(gpus, int(hydra.job.num), Path(hydra.sweep.dir) / LOCK_FOLDER,
                              self.runs_per_gpu)
        slot = "shared" if PROCESS_GPU.slot is None else PROCESS_GPU.slot
        log.info("job %s: CUDA_VISIBLE_DEVICES=%s (worker process %d, slot %s of %d)",
                 hydra.job.num, gpu, os.getpid(), slot, self.runs_per_gpu)


def trainer_plugins(trainer_cfg) -> dict:
    """Extra ``Trainer`` arguments for the cluster this runs on: under submitit's Slurm
    executor, Lightning's ``SLURMEnvironment`` without its own requeue on ``SIGUSR1`` (submitit
    requeues on ``USR2``; module docstring), unless ``trainer.plugins`` is set."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or trainer_cfg.get("plugins"):
        return {}
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return {"plugins": [SLURMEnvironment(auto_requeue=False)]}

