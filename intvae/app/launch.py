"""Launching runs: one GPU per job in parallel sweeps on one machine, and Slurm.

**One GPU per job** (``hydra/launcher=joblib_gpus``, ``conf/hydra/launcher/joblib_gpus.yaml``):
Hydra's joblib launcher runs the jobs of a sweep in ``n_jobs`` loky worker processes and assigns
no GPU, so every job would use ``cuda:0``. ``PinGPUs``, a Hydra callback that every run has
(``conf/train.yaml``: ``hydra.callbacks.pin_gpus``), pins each worker process to one GPU in
``on_job_start``, before the job touches CUDA, by setting ``CUDA_VISIBLE_DEVICES``. Loky reuses
its workers from job to job, and CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when a process first
initializes it: a worker that ran a job on GPU 1 stays on GPU 1. So the pin is per *process*,
not per job: the first job in a worker takes the GPU ``gpus[job.num % len(gpus)]`` if it is
free, else the next free one, and holds it (an ``fcntl.flock`` on
``<sweep dir>/.gpu_locks/gpu-<id>.lock``, released when the worker exits) for every later job of
that worker. Two workers alive at once never share a GPU (while there are at least as many GPUs
as workers); with jobs taken in order (worker A: jobs 0, 2; worker B: jobs 1, 3) the jobs get
GPUs 0, 1, 0, 1. Each job logs ``job <n>: CUDA_VISIBLE_DEVICES=<id> (worker process <pid>)`` and
records ``cuda_visible_devices`` in its ``results.json``.

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
import shutil
import subprocess
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from intvae.checks import ParameterError

log = logging.getLogger(__name__)

ENV_GPUS = "INTVAE_GPUS"
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


def gpu_count() -> int:
    """How many GPUs ``visible_gpus`` finds, at least 1 (``${intvae.gpu_count:}``, the
    ``n_jobs`` of ``hydra/launcher=joblib_gpus``)."""
    return max(1, len(visible_gpus()))


class ProcessGPU:
    """The one GPU of this process, chosen once (module docstring)."""

    def __init__(self):
        self.gpu: str | None = None
        self._lock_fd: int | None = None

    def pin(self, gpus: list[str], job_num: int, lock_dir: Path) -> str:
        """Pin this process to a GPU of ``gpus`` (first call; later calls return the same)."""
        if self.gpu is not None:
            return self.gpu
        lock_dir.mkdir(parents=True, exist_ok=True)
        for k in range(len(gpus)):
            gpu = gpus[(job_num + k) % len(gpus)]
            fd = os.open(lock_dir / f"gpu-{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.gpu, self._lock_fd = gpu, fd
            break
        else:
            self.gpu = gpus[job_num % len(gpus)]
            log.warning("more worker processes than GPUs %s: this one shares GPU %s "
                        "(set hydra.launcher.n_jobs to the number of GPUs)", gpus, self.gpu)
        os.environ["CUDA_VISIBLE_DEVICES"] = self.gpu
        return self.gpu

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self.gpu, self._lock_fd = None, None


PROCESS_GPU = ProcessGPU()


def cuda_initialized() -> bool:
    """Whether this process has initialized CUDA (without importing torch if it has not)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


class PinGPUs(Callback):
    """Hydra callback: one GPU per worker process of a parallel sweep (module docstring).

    Args:
        gpus: GPU ids (``"0,1"`` or a list); None: ``visible_gpus()``, and only under a joblib
            launcher.
    """

    def __init__(self, gpus=None):
        self.gpus = parse_gpus(gpus)

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
        gpu = PROCESS_GPU.pin(gpus, int(hydra.job.num), Path(hydra.sweep.dir) / LOCK_FOLDER)
        log.info("job %s: CUDA_VISIBLE_DEVICES=%s (worker process %d)", hydra.job.num, gpu,
                 os.getpid())


def trainer_plugins(trainer_cfg) -> dict:
    """Extra ``Trainer`` arguments for the cluster this runs on: under submitit's Slurm
    executor, Lightning's ``SLURMEnvironment`` without its own requeue on ``SIGUSR1`` (submitit
    requeues on ``USR2``; module docstring), unless ``trainer.plugins`` is set."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or trainer_cfg.get("plugins"):
        return {}
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return {"plugins": [SLURMEnvironment(auto_requeue=False)]}

