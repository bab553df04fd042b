"""Names of a run on W&B, from Hydra's record of the job (the ``intvae.*`` resolvers of
``conf/logger/wandb.yaml``, registered by ``intvae.app.config``).

* ``sweep_name()``: the sweep directory's name in a multirun job, else null; the W&B config key
  ``sweep_name`` and a tag ``sweep=<name>``.
* ``run_name()``: what varies in the sweep, e.g. ``bound=irelbo,seed=1``: the job's overrides of
  the keys the sweep sweeps (``sweep_keys``); outside a sweep the experiment's or the bound's
  name.
* ``run_group()``: one configuration without its seed, e.g. ``bound=irelbo,delta=0.01``: the
  job's overrides less ``seed`` and the keys that do not change what is trained
  (``NOT_CONFIGURATION``); without such overrides the experiment's or the bound's name. Runs
  that differ only in their seed share a group, which W&B draws as one line with a band.
"""

import hashlib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

NOT_CONFIGURATION = ("seed", "hydra", "paths", "logger", "callbacks", "ckpt_path", "resume",
                     "overwrite", "threads")
"""Override keys (and their sub-keys) left out of the group: the seed, and what changes where
and how a run is kept, not what it trains."""
MAX_GROUP = 128
"""W&B's limit on a group's length; a longer one is cut and ends in a hash of the whole."""


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_name() -> str | None:
    """The sweep directory's name in a multirun job, else None."""
    return Path(HydraConfig.get().sweep.dir).name if _multirun() else None


def _parse(overrides) -> list:
    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def sweep_keys(sweep_dir: str | Path) -> set[str]:
    """The keys a sweep sweeps (``a=1,2``, ``range(...)``, ``choice(...)``, and the sweeper's
    ``params``), from the ``multirun.yaml`` Hydra's sweeper writes before its jobs; empty where
    there is none."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return set()
    hydra = OmegaConf.load(path).hydra
    params = [f"{key}={value}" for key, value in (hydra.sweeper.get("params") or {}).items()]
    return {o.key_or_group for o in _parse([*params, *hydra.overrides.task])
            if o.is_sweep_override()}


DEFAULT_EXPERIMENT = "recommended"
"""The experiment of the root config's defaults list: not a name of its own."""


def _default_name() -> str | None:
    """The experiment's name (unless it is the default one), else the bound's (Hydra's runtime
    choices)."""
    chosen = HydraConfig.get().runtime.choices
    experiment = chosen.get("experiment")
    return (experiment if experiment != DEFAULT_EXPERIMENT else None) or chosen.get("bound")


def run_name() -> str | None:
    """The W&B name of the job (module docstring); None outside Hydra."""
    if not HydraConfig.initialized():
        return None
    if _multirun():
        varied = sweep_keys(HydraConfig.get().sweep.dir)
        chosen = [o.input_line for o in _parse(HydraConfig.get().overrides.task)
                  if o.key_or_group in varied]
        if chosen:
            return ",".join(chosen)
    return _default_name()


def _configuring(key: str) -> bool:
    return not any(key == skip or key.startswith((f"{skip}.", f"{skip}/"))
                   for skip in NOT_CONFIGURATION)


def run_group() -> str | None:
    """The W&B group of the job (module docstring); None outside Hydra."""
    if not HydraConfig.initialized():
        return None
    kept = sorted(o.input_line for o in _parse(HydraConfig.get().overrides.task)
                  if _configuring(o.key_or_group.lstrip("+~")))
    group = ",".join(kept) or _default_name()
    if group and len(group) > MAX_GROUP:
        digest = hashlib.sha256(group.encode()).hexdigest()[:8]
        group = f"{group[:MAX_GROUP - 9]}~{digest}"
    return group
