"""Configuration helpers of the experiment app: the config folder, resolvers and error reports.

The Hydra configs live in ``conf/`` at the repository root (beside the package, which is
installed editable), not inside the package. ``CONF_DIR`` locates them from this file.

Resolvers registered here (importing ``intvae.config`` registers them):

* ``${intvae.run_dir:<ckpt_path>,<default>}``: the output directory of the run a checkpoint
  belongs to (``<run>/checkpoints/<file>.ckpt`` -> ``<run>``), else ``<default>``; so
  ``ckpt_path=<file>`` resumes into the same directory.
* ``${intvae.sweep_group:}``: the name of the multirun (sweep) directory in a multirun job, else
  null; the W&B group, so that the runs of one sweep share a group.
* ``${intvae.run_name:}``: the job's ``override_dirname`` (e.g. ``bound=irelbo,delta=0.01``),
  else null.
* ``${intvae.run_id:<output_dir>}``: the W&B run id of a run directory (``run_id``): every attempt
  of a run (resumed, requeued) logs into one W&B run.
* ``${intvae.gpu_count:}``: the number of GPUs a parallel sweep may use
  (``intvae.launch.gpu_count``), the ``n_jobs`` of ``hydra/launcher=joblib_gpus``.
"""

import hashlib
import os
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from intvae.data.errors import DataUnavailableError
from intvae.launch import gpu_count

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(ValueError):
    """A configuration value the app refuses; the message names the key."""


USER_ERRORS = (ValueError, InstantiationException, ConfigCompositionException,
               OmegaConfBaseException, DataUnavailableError)
"""Errors caused by the command line or the environment: reported in one line, no traceback."""


def require_conf_dir() -> Path:
    """``CONF_DIR``, or a ``ConfigError`` saying where it was expected."""
    if not (CONF_DIR / "train.yaml").is_file():
        raise ConfigError(f"the config folder {CONF_DIR} (with train.yaml) is missing: intvae's "
                          "app runs from a source checkout installed with `pip install -e .`")
    return CONF_DIR


def run_dir(ckpt_path: str | None, default: str) -> str:
    """The run directory holding ``ckpt_path`` (``<run>/checkpoints/x.ckpt``), else ``default``."""
    if not ckpt_path:
        return default
    ckpt = Path(ckpt_path).expanduser().resolve()
    return str(ckpt.parents[1] if ckpt.parent.name == "checkpoints" else ckpt.parent)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group() -> str | None:
    return Path(HydraConfig.get().sweep.dir).name if in_multirun() else None


def run_name() -> str | None:
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().job.override_dirname or None


OVERWRITTEN = "overwritten"
"""The folder of a run directory that ``overwrite=true`` moves earlier runs into
(``intvae.resume``)."""


def overwritten_runs(output_dir: str | os.PathLike[str]) -> int:
    """How many runs ``overwrite=true`` moved aside in ``output_dir``."""
    folder = Path(output_dir) / OVERWRITTEN
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def run_id(output_dir: str | os.PathLike[str]) -> str:
    """The W&B run id of the run in ``output_dir``: 16 hex digits of the sha256 of its absolute
    path (with the number of runs ``overwrite=true`` moved aside, so that a run started again
    gets a new id): the same for every attempt of a run, on every node that sees the directory
    under the same path."""
    path = Path(output_dir).expanduser().resolve()
    generation = overwritten_runs(path)
    key = str(path) if generation == 0 else f"{path}#{generation}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


OmegaConf.register_new_resolver("intvae.run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("intvae.sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("intvae.run_name", run_name, replace=True)
OmegaConf.register_new_resolver("intvae.run_id", run_id, replace=True)
OmegaConf.register_new_resolver("intvae.gpu_count", gpu_count, replace=True)


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
    (``ecosystem-pitfalls.md`` section 1). Allowed where Slurm started the ranks
    (``hydra/launcher=slurm`` with ``tasks_per_node`` = ``gpus_per_node`` = ``trainer.devices``)."""
    count = requested_devices(devices)
    if in_multirun() and count > 1 and not ranks_started_by_slurm(count, num_nodes):
        raise ConfigError(
            f"trainer.devices={devices} is invalid with -m/--multirun: DDP relaunches the command "
            "per rank and would rerun the whole sweep; instead sweep with one GPU per job "
            "(trainer=gpu hydra/launcher=joblib_gpus), run each DDP run without -m (trainer=ddp "
            f"trainer.devices={devices}), or on Slurm let srun start the ranks (hydra/launcher="
            f"slurm hydra.launcher.tasks_per_node={count} hydra.launcher.gpus_per_node={count})")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_root_keys(cfg) -> None:
    """Check the root keys the app reads itself (the groups check theirs when instantiated):
    ``seed``, ``threads``, ``compile``, ``compile_step`` and ``evaluate.*``; a ``ConfigError``
    names the key."""
    checks = [
        ("seed", cfg.get("seed"), _is_int(cfg.get("seed")) and 0 <= cfg.seed < 2**32,
         "an integer in [0, 2**32)"),
        ("threads", cfg.get("threads"),
         cfg.get("threads") is None or (_is_int(cfg.threads) and cfg.threads >= 1),
         "an integer >= 1 or null"),
        ("compile", cfg.get("compile"), isinstance(cfg.get("compile"), bool), "true or false"),
        ("compile_step", cfg.get("compile_step"), isinstance(cfg.get("compile_step"), bool),
         "true or false"),
    ]
    evaluation = cfg.get("evaluate") or {}
    checks += [
        ("evaluate.enabled", evaluation.get("enabled"),
         isinstance(evaluation.get("enabled"), bool), "true or false"),
        ("evaluate.split", evaluation.get("split"), evaluation.get("split") in ("test", "val"),
         "test or val"),
        ("evaluate.limit_batches", evaluation.get("limit_batches"),
         evaluation.get("limit_batches") is None
         or (_is_int(evaluation.limit_batches) and evaluation.limit_batches >= 1),
         "an integer >= 1 or null"),
        ("evaluate.bits_per_dim", evaluation.get("bits_per_dim"),
         isinstance(evaluation.get("bits_per_dim"), bool), "true or false"),
    ]
    for key, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{key}={value!r} is invalid: {key} must be {allowed}")
    check_chunk_elements(evaluation.get("chunk_elements"))


def check_chunk_elements(value) -> None:
    """``evaluate.chunk_elements``: an integer >= 1 or ``auto``; else a ``ConfigError``."""
    if value != "auto" and not (_is_int(value) and value >= 1):
        raise ConfigError(f"evaluate.chunk_elements={value!r} is invalid: "
                          "evaluate.chunk_elements must be an integer >= 1 or auto")


def describe(error: BaseException) -> str:
    """A one-line message for ``error``: for a Hydra instantiation error, the config key that
    failed and its innermost cause (``bound.interval: delta=0 is invalid: ...``)."""
    key = None
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        key = key or _full_key(str(error))
        error = error.__cause__
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{key}: {message}" if key else message


def _full_key(message: str) -> str | None:
    for line in message.splitlines():
        if line.startswith("full_key: "):
            return line.removeprefix("full_key: ").strip()
    return None
