"""A run's record: what ran, read from the objects that ran.

``describe_run`` builds it once per run, from the instantiated bound, VAE, noise and data module
(never from the config's root knobs such as ``delta``, which ``interval.delta=0.05`` would
bypass), plus the names of the config groups chosen. The one record serves everywhere:

* the top of ``results.json`` (``intvae.app.runs``) and so the report's table;
* the checkpoint's hyperparameters (with the resolved config under ``config``), hence
  ``hparams.yaml`` and the loggers' config (flat keys, filterable on W&B);
* the W&B tags (``tags``).

A parameter the run does not use is null: ``delta`` without a fixed interval (the bins, the
density bounds), ``alpha`` for bounds without a Renyi order, the likelihood's floors for a
likelihood without a standard deviation.
"""

import re

RECORD_GROUPS = ("bound", "interval", "likelihood", "noise", "model", "data", "experiment",
                 "budget", "trainer")
"""The config groups whose chosen option the record names."""


def snake(name: str) -> str:
    """A class name in snake case: ``LogitNormal`` -> ``logit_normal``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def describe_run(bound, vae, noise, datamodule, seed: int, choices: dict | None = None) -> dict:
    """The record of a run (module docstring): the bound and its parameters, the interval
    policy, the likelihood and its floors, the noise, the network's shape, the data, the seed,
    and the chosen option of each of ``RECORD_GROUPS`` found in ``choices`` (Hydra's
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
    }
    for group in RECORD_GROUPS:
        record[f"{group}_config"] = (choices or {}).get(group)
    return record


def tags(record: dict) -> list[str]:
    """W&B tags of a run: its bound, and its delta and alpha where the bound uses them."""
    found = [record["bound"]]
    found += [f"{key}={record[key]:g}" for key in ("delta", "alpha") if record[key] is not None]
    return found
