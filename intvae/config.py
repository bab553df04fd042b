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
"""

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from intvae.data.errors import DataUnavailableError

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


OmegaConf.register_new_resolver("intvae.run_dir", run_dir, replace=True)
OmegaConf.register_new_resolver("intvae.sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("intvae.run_name", run_name, replace=True)


def requested_devices(devices) -> int:
    """How many devices a Trainer ``devices`` value asks for: an int, ``"2"``, a list or
    ``"0,1"`` of device ids; ``auto`` and -1 count the visible GPUs."""
    if devices in ("auto", -1, "-1"):
        return max(1, torch.cuda.device_count())
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    return devices if isinstance(devices, int) else len(devices)


def check_no_ddp_in_multirun(devices) -> None:
    """Refuse several devices per job in a Hydra multirun: Lightning's DDP relaunches the whole
    command line per rank, so every rank would start the whole sweep again
    (``ecosystem-pitfalls.md`` section 1)."""
    if in_multirun() and requested_devices(devices) > 1:
        raise ConfigError(f"trainer.devices={devices} is invalid with -m/--multirun: DDP "
                          "relaunches the command per rank and would rerun the whole sweep; run "
                          "one device per job (trainer.devices=1), or DDP without -m")


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
