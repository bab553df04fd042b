"""What a run is, for comparing runs: its settings, the resolved config less what does not change
what it trains or evaluates.

The apps compare settings wherever a command meets a run it did not start: a finished run in the
output directory is skipped only when its settings are the command's (``intvae.app.resume``), an
unfinished run is resumed or continued only then (a longer training excepted), and a sweep's job
whose settings an earlier job of the sweep has is its copy (``intvae.app.sweeps``). A run's
settings are stored in its ``config.yaml`` (the resolved config, written when it starts).

``settings`` flattens the resolved config to dotted keys and leaves out ``UNRELATED``: where
files go, how the run is logged and drawn, threads and compilation, how it was started, and the
root knobs ``delta``, ``alpha``, ``samples`` and ``eps``, which act only through the groups that
use them and are resolved there (the IELBO's config holds no alpha, so ``alpha=0.5`` and
``alpha=2`` give it the same settings). Numbers are compared in one spelling (``alpha=2`` is
``alpha=2.0``), except where Lightning reads an integer and a float differently (``TYPED``:
``limit_train_batches=1`` is one batch, ``1.0`` the whole epoch); precision names in Lightning's
unified form (``32`` is ``32-true``). Anything else, including a key that only one side has, is
a difference: a setting nobody thought of is never silently the same.
"""

import hashlib
import json
from pathlib import Path

from omegaconf import OmegaConf

from intvae.app.record import canonical

UNRELATED = (
    "paths", "hydra", "logger", "threads", "compile", "compile_step", "ckpt_path", "resume",
    "overwrite", "delta", "alpha", "samples", "eps", "data.root", "evaluate.chunk_elements",
    "callbacks.figures", "callbacks.model_checkpoint.dirpath", "trainer.accelerator",
    "trainer.strategy", "trainer.default_root_dir", "trainer.enable_progress_bar",
    "trainer.log_every_n_steps", "trainer.num_sanity_val_steps", "trainer.detect_anomaly",
)
"""Keys (and their sub-keys) of the config that change neither what a run trains nor how it is
evaluated (module docstring)."""
TYPED = ("trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches",
         "trainer.val_check_interval")
"""Keys whose integer and float values mean different things (a count, a fraction)."""
PRECISION = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
"""Lightning's short precision names and the unified ones they stand for."""
LENGTH = ("trainer.max_epochs", "trainer.max_steps")
"""How long a run trains: a resumed or continued run may train longer (``changes``)."""
CONFIG_FILE = "config.yaml"
"""The file of a run directory holding its resolved config (``intvae.app.train``)."""


def _related(key: str) -> bool:
    return not any(key == skip or key.startswith(f"{skip}.") for skip in UNRELATED)


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.")
                .items()}
    return {prefix[:-1]: node}


def settings(config) -> dict:
    """The settings of a resolved config (a ``DictConfig`` or a plain mapping): dotted keys and
    their values, less ``UNRELATED`` (module docstring)."""
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=True)
    found = {}
    for key, value in _flat(config).items():
        if not _related(key):
            continue
        if key == "trainer.precision":
            value = PRECISION.get(str(value), str(value))
        found[key] = value
    return found


def _spelled(key: str, value):
    """``value`` in one spelling for comparing: a number as a float, except under ``TYPED``."""
    return value if key in TYPED else canonical(value)


def stored_settings(run_dir: str | Path) -> dict | None:
    """The settings of the run in ``run_dir`` (its ``config.yaml``), None where it has none."""
    path = Path(run_dir) / CONFIG_FILE
    return settings(OmegaConf.load(path)) if path.is_file() else None


def _longer(key: str, old, new) -> bool:
    """Whether ``new`` lets a run train at least as long as ``old`` did (-1: no limit)."""
    return key in LENGTH and (new == -1 or (old != -1 and new is not None and old is not None
                                            and new >= old))


def changes(old: dict, new: dict, resuming: bool = False) -> dict:
    """The keys whose value differs between the settings ``old`` (a run's) and ``new`` (this
    command's), as ``{key: (old, new)}`` (``"absent"`` for a key one side lacks); for a run
    that is ``resuming`` (or continued) less the evaluation settings and a longer training."""
    found = {}
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, "absent"), new.get(key, "absent")
        if _spelled(key, before) == _spelled(key, after) and (
                key not in TYPED or type(before) is type(after)):
            continue
        if resuming and (key.startswith("evaluate.") or _longer(key, before, after)):
            continue
        found[key] = (before, after)
    return found


def describe_changes(found: dict) -> str:
    """``bound._target_ ("intvae.bounds.IELBO" -> "intvae.bounds.IRELBO"), ...``."""
    return ", ".join(f"{key} ({json.dumps(old)} -> {json.dumps(new)})"
                     for key, (old, new) in found.items())


def digest(found: dict) -> str:
    """A digest of settings: equal for runs that train and evaluate alike."""
    spelled = {key: _spelled(key, value) for key, value in found.items()}
    text = json.dumps(spelled, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
