"""Configuration helpers of the experiment app: the config folder, resolvers and error reports.

The Hydra configs live inside the package, in ``intvae/app/conf/`` (Hydra's search path
``pkg://intvae.app.conf``, ``CONF_MODULE``), so that a wheel or a non-editable install carries
them; ``CONF_DIR`` is that folder on disk.

Resolvers registered here (importing ``intvae.config`` registers them):

* ``${intvae.run_dir:<ckpt_path>,<default>}``: the output directory of the run a checkpoint
  belongs to (``<run>/checkpoints/<file>.ckpt`` -> ``<run>``), else ``<default>``; so
  ``ckpt_path=<file>`` resumes into the same directory.
* ``${intvae.sweep:}``, ``${intvae.run_name:}``: the sweep's name and the job's W&B name (what
  varies in the sweep), from Hydra's record of the job (``intvae.app.wandb_names``; the W&B
  group comes from the run's record instead: ``intvae.app.wandb_run.logger_settings``).
* ``${intvae.samples:<default>}``: a bound's K (``conf/bound/<name>.yaml``): the root key
  ``samples`` where it is set (``samples=5`` sets every bound's K), else the bound's own
  ``<default>`` (null, the root's default: each bound keeps its own K; ``bound_samples``).
* ``${intvae.gpu_workers:<gpus>,<runs_per_gpu>}``: the number of GPUs a parallel sweep may use
  (``<gpus>`` if given, else the visible ones: ``intvae.app.launch.gpu_count``) times the runs
  per GPU (``intvae.app.launch.gpu_workers``), the ``n_jobs`` of ``hydra/launcher=joblib_gpus``.
"""

import os
import secrets
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from intvae.app.errors import ConfigError
from intvae.app.files import write_text
from intvae.app.launch import gpu_workers
from intvae.app.wandb_names import run_name, sweep_name
from intvae.checks import boolean, finite_float, integer, is_int, one_of, require

CONF_MODULE = "intvae.app.conf"
CONF_DIR = Path(__file__).resolve().parent / "conf"


def run_dir_of(ckpt: str | os.PathLike[str]) -> Path:
    """The run directory a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/x.ckpt``,
    else the checkpoint's own folder."""
    ckpt = Path(ckpt).expanduser().resolve()
    return ckpt.parents[1] if ckpt.parent.name == "checkpoints" else ckpt.parent


def run_dir(ckpt_path: str | None, default: str) -> str:
    """The run directory holding ``ckpt_path`` (``run_dir_of``), else ``default``."""
    return str(run_dir_of(ckpt_path)) if ckpt_path else default


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


OVERWRITTEN = "overwritten"
"""The folder of a run directory that ``overwrite=true`` moves earlier runs into
(``intvae.app.resume``)."""


def overwritten_runs(output_dir: str | os.PathLike[str]) -> int:
    """How many runs ``overwrite=true`` moved aside in ``output_dir``."""
    folder = Path(output_dir) / OVERWRITTEN
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


WANDB_ID_FILE = "wandb_id"
"""The file of a run directory that holds its W&B run id (``run_id``)."""


def run_id(output_dir: str | os.PathLike[str], fresh: bool = False) -> str:
    """The W&B run id of the run in ``output_dir``, stored in ``<output_dir>/wandb_id``: a new
    random id (16 hex digits, written atomically) for a ``fresh`` run or where none is stored,
    else the stored one, so that every attempt of a run (resumed, requeued) logs into one W&B
    run and a run started afresh (a reused or emptied directory, ``overwrite=true``) into a new
    one."""
    path = Path(output_dir) / WANDB_ID_FILE
    stored = None if fresh or not path.is_file() else path.read_text().strip()
    if stored:
        return stored
    new = secrets.token_hex(8)
    write_text(path, new + "\n")
    return new


def bound_samples(default: int, *, _root_) -> int:
    """K of a bound config: the root ``samples`` unless it is null, else ``default``."""
    shared = _root_.get("samples")
    return default if shared is None else shared


OmegaConf.register_new_resolver("intvae.run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("intvae.samples", bound_samples, replace=True)
OmegaConf.register_new_resolver("intvae.sweep", sweep_name, replace=True)
OmegaConf.register_new_resolver("intvae.run_name", run_name, replace=True)
OmegaConf.register_new_resolver("intvae.gpu_workers", gpu_workers, replace=True)


def requested_devices(devices) -> int:
    """How many devices a Trainer ``devices`` value asks for: an int, ``"2"``, a list or
    ``"0,1"`` of device ids; ``auto`` and -1 count the visible GPUs."""
    if devices in ("auto", -1, "-1"):
        return max(1, torch.cuda.device_count())
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    return devices if isinstance(devices, int) else len(devices)


def ranks_started_by_slurm(devices: int, num_nodes: int = 1) -> bool:
    """Whether Slurm (srun) started this job's DDP ranks: one task per device, as Lightning's
    ``SLURMEnvironment`` expects; then Lightning does not relaunch the command line."""
    if "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash",
                                                                                 "interactive"):
        return False
    return int(os.environ["SLURM_NTASKS"]) == devices * num_nodes


def check_no_ddp_in_multirun(devices, num_nodes: int = 1) -> None:
    """Refuse several devices per job in a Hydra multirun: Lightning's DDP relaunches the whole
    command line per rank, so every rank would start the whole sweep again
    (``docs/configuration.md#sweeps-with-one-gpu-per-job``). Allowed where Slurm started the
    ranks (``hydra/launcher=slurm`` with ``tasks_per_node`` = ``gpus_per_node`` =
    ``trainer.devices``)."""
    count = requested_devices(devices)
    if in_multirun() and count > 1 and not ranks_started_by_slurm(count, num_nodes):
        raise ConfigError(
            f"trainer.devices={devices} is invalid with -m/--multirun: DDP relaunches the command "
            "per rank and would rerun the whole sweep; instead sweep with one GPU per job "
            "(trainer=gpu hydra/launcher=joblib_gpus), run each DDP run without -m (trainer=ddp "
            f"trainer.devices={devices}), or on Slurm let srun start the ranks (hydra/launcher="
            f"slurm hydra.launcher.tasks_per_node={count} hydra.launcher.gpus_per_node={count})")


def check_evaluation(settings, prefix: str = "evaluate.") -> None:
    """Check the evaluation settings (``samples``, ``split``, ``chunk_elements``,
    ``limit_batches``, ``bits_per_dim``, ``checkpoint``; ``enabled`` where present), named
    with ``prefix``:
    ``evaluate.*`` of the training app, the root keys of the evaluation app."""
    integer(f"{prefix}samples", settings.get("samples"), 1, word="auto")
    one_of(f"{prefix}split", settings.get("split"), ("test", "val"))
    integer(f"{prefix}chunk_elements", settings.get("chunk_elements"), 1, word="auto")
    integer(f"{prefix}limit_batches", settings.get("limit_batches"), 1, optional=True)
    boolean(f"{prefix}bits_per_dim", settings.get("bits_per_dim"))
    one_of(f"{prefix}checkpoint", settings.get("checkpoint"), ("best", "last"))
    if "enabled" in settings:
        boolean(f"{prefix}enabled", settings.get("enabled"))


def check_root_keys(cfg) -> None:
    """Check the root keys the training app reads itself (the groups check theirs when
    instantiated): ``seed``, ``threads``, ``compile``, ``compile_step``, ``optimizer.lr``,
    ``evaluate.*`` and ``logger.wandb.mode`` (W&B would refuse it only when training starts);
    a ``ParameterError`` names the key."""
    seed = cfg.get("seed")
    require("seed", seed, is_int(seed) and 0 <= seed < 2**32, "an integer in [0, 2**32)")
    integer("threads", cfg.get("threads"), 1, optional=True)
    boolean("compile", cfg.get("compile"))
    boolean("compile_step", cfg.get("compile_step"))
    lr = (cfg.get("optimizer") or {}).get("lr")
    require("optimizer.lr", lr, finite_float("optimizer.lr", lr, "a finite number > 0") > 0,
            "a finite number > 0")
    check_evaluation(cfg.get("evaluate") or {})
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb is not None:
        one_of("logger.wandb.mode", wandb.get("mode"), ("online", "offline", "disabled"))
