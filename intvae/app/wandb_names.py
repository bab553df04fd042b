"""Names of a run on W&B: the sweep and the run's name from Hydra's record of the job (the
``intvae.*`` resolvers of ``conf/logger/wandb.yaml``, registered by ``intvae.app.config``), the
group from the run's record (``intvae.app.record``; set by ``intvae.app.wandb_run``).

* ``sweep_name()``: the sweep directory's name in a multirun job, else null; the W&B config key
  ``sweep_name`` and a tag ``sweep=<name>``.
* ``run_name()``: what varies in the sweep, e.g. ``bound=irelbo,seed=1``: the job's overrides of
  the keys the sweep sweeps (``sweep_keys``), as typed; outside a sweep the experiment's or the
  bound's name. It names the job, not its configuration.
* ``run_group(record)``: the configuration the run trained, e.g.
  ``irelbo delta=0.01 alpha=0.5 K=1 gaussian hidden=200-200 latent=25 elu mnist #6c1d0e9a4b``:
  the record less its seed, numbers spelled alike (``record.canonical``), as a readable part
  (``READABLE``: the keys that are not null) and the record's digest (``record.identity``,
  which leaves out the names of the chosen config options, ``record.NAMES``). Taken from what
  ran rather than from the command line, it is one group however the configuration was typed
  (``bound=irelbo alpha=0.5``, ``bound.alpha=0.5``, the default experiment; ``alpha=2`` for a
  bound without alpha, whose record holds null; ``3`` or ``3.0``), and two configurations share
  it only if their records agree. Runs that differ only in their seed share a group, which W&B
  draws as one line with a band.
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf

from intvae.app.record import canonical, identity

NOT_CONFIGURATION = ("seed", "hydra", "paths", "logger", "callbacks", "ckpt_path", "resume",
                     "overwrite", "threads")
"""Root config keys that are not the configuration a run trains: the seed, and what changes
where and how a run is kept (``intvae.report.plots.configuration``)."""
READABLE = (("bound", ""), ("delta", "delta="), ("alpha", "alpha="), ("samples", "K="),
            ("likelihood", ""), ("hidden", "hidden="), ("latent", "latent="), ("activation", ""),
            ("data", ""))
"""The record keys of a group's readable part, each with its prefix (``_shown``)."""
MAX_GROUP = 128
"""W&B's limit on a group's length: the readable part is cut to leave room for the hash."""
HASH_DIGITS = 10
"""Hex digits of the record's digest in the group (40 bits)."""


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


def _shown(value) -> str:
    """A canonical value in the group's readable part: ``0.01``, ``200-200``, ``elu``."""
    if isinstance(value, list):
        return "-".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_group(record: dict) -> str:
    """The W&B group of a run (module docstring) from its record (``intvae.app.record``)."""
    configuration = {k: canonical(v) for k, v in record.items() if k != "seed"}
    shown = [prefix + _shown(configuration[key]) for key, prefix in READABLE
             if configuration.get(key) is not None]
    tail = f" #{identity(configuration)[:HASH_DIGITS]}"
    return " ".join(shown)[:MAX_GROUP - len(tail)] + tail
