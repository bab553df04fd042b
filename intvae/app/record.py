"""A run's record: what ran, read from the objects that ran.

``describe_run`` builds it once per run, from the instantiated bound, VAE, noise and data module
(never from the config's root knobs such as ``delta``, which ``interval.delta=0.05`` would
bypass), the optimizer and the trainer settings that change what is trained (``TRAINING_KEYS``),
plus the names of the config groups chosen. The one record serves everywhere:

* the top of ``results.json`` (``intvae.app.runs``) and so the report's table;
* the checkpoint's hyperparameters (with the resolved config under ``config``), hence
  ``hparams.yaml`` and the loggers' config (flat keys, filterable on W&B);
* the W&B tags (``tags``).

A parameter the run does not use is null: ``delta`` without a fixed interval (the bins, the
density bounds), ``alpha`` for bounds without a Renyi order, the likelihood's floors for a
likelihood without a standard deviation.
"""

import hashlib
import json
import re

from omegaconf import ListConfig

TRAINING_KEYS = ("max_epochs", "max_steps", "limit_train_batches", "gradient_clip_val",
                 "gradient_clip_algorithm", "precision", "accumulate_grad_batches")
"""Trainer settings that change the weights a run trains: recorded (null where the trainer
config has no such key)."""
RECORD_GROUPS = ("bound", "interval", "likelihood", "noise", "model", "data", "experiment",
                 "budget", "trainer")
"""The config groups whose chosen option the record names."""


def snake(name: str) -> str:
    """A class name in snake case: ``LogitNormal`` -> ``logit_normal``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def describe_run(bound, vae, noise, datamodule, seed: int, choices: dict | None = None,
                 optimizer=None, trainer=None) -> dict:
    """The record of a run (module docstring): the bound and its parameters, the interval
    policy, the likelihood and its floors, the noise, the network's shape, the data, the seed,
    the optimizer (``optimizer``: the ``functools.partial`` the module calls; its class name and
    keyword arguments, e.g. ``lr``), the ``TRAINING_KEYS`` of ``trainer`` (the trainer's config
    mapping), and the chosen option of each of ``RECORD_GROUPS`` found in ``choices`` (Hydra's
    ``runtime.choices``) as ``<group>_config``."""
    interval = getattr(bound, "interval", None)
    head = vae.head
    record = {
        "bound": bound.name,
        "interval": None if interval is None else snake(type(interval).__name__),
        "delta": getattr(interval, "delta", None),
        "alpha": getattr(bound, "alpha", None),
        "samples": bound.samples,
        "outer_samples": getattr(bound, "outer_samples", None),
        "normalized": getattr(bound, "normalized", None),
        "tolerance": getattr(bound, "tolerance", None),
        "likelihood": snake(head.likelihood.__name__),
        "sigma_min": getattr(head, "sigma_min", None),
        "var_min": getattr(head, "var_min", None),
        "noise": None if noise is None else snake(type(noise).__name__),
        "noise_std": getattr(noise, "std", None),
        "noise_width": getattr(noise, "width", None),
        "hidden": list(vae.hidden),
        "latent": vae.latent,
        "activation": vae.activation,
        "data": datamodule.name,
        "eps": datamodule.eps,
        "batch_size": datamodule.batch_size,
        "seed": seed,
        "optimizer": None if optimizer is None else snake(optimizer.func.__name__),
        "lr": _plain(getattr(optimizer, "keywords", {}).get("lr")),
        **{f"optimizer_{key}": _plain(value) for key, value in sorted(
            getattr(optimizer, "keywords", {}).items()) if key != "lr"},
        **{key: _plain((trainer or {}).get(key)) for key in TRAINING_KEYS},
    }
    for group in RECORD_GROUPS:
        record[f"{group}_config"] = (choices or {}).get(group)
    return record


def _plain(value):
    """A config value as a JSON value: sequences as lists (betas), the rest as it is."""
    return list(value) if isinstance(value, (list, tuple, ListConfig)) else value


def tags(record: dict) -> list[str]:
    """W&B tags of a run: its bound, and its delta and alpha where the bound uses them."""
    found = [record["bound"]]
    found += [f"{key}={record[key]:g}" for key in ("delta", "alpha") if record[key] is not None]
    return found


NAMES = tuple(f"{group}_config" for group in RECORD_GROUPS)
"""The record's names of the chosen config options: how a configuration was spelled, not what
ran (``bound=irelbo`` and an experiment choosing the same IRELBO run alike); left out of
``identity``."""
def canonical(value):
    """A record value in one spelling: numbers as floats (``alpha=2`` and ``alpha=2.0``,
    ``gradient_clip_val=3`` and ``3.0`` train the same), lists and dicts item by item."""
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {key: canonical(v) for key, v in value.items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def identity(record: dict) -> str:
    """A digest of the record less ``NAMES``, in one spelling (``canonical``): equal for runs
    that were built alike, however their overrides were typed."""
    kept = {key: value for key, value in record.items() if key not in NAMES}
    text = json.dumps(canonical(kept), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
