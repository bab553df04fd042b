"""The W&B run of a training run (``logger=wandb``): its settings, its summary, re-evaluations.

* ``logger_settings``: what the app adds to ``conf/logger/wandb.yaml``: the tags (bound, delta,
  alpha, ``sweep=<name>``), the config key ``sweep_name``, the group (the configuration the run
  trained, from its record: ``intvae.app.wandb_names.run_group``) and the run's id, stored in
  ``<run dir>/wandb_id`` (``intvae.app.config.run_id``: new for a fresh run, the stored one on
  resume). The name comes from the config (``${intvae.run_name:}``).
* ``WandbLogger``: Lightning's, with ``val/bound`` summarized by its maximum (the best epoch).
* ``finish``: at the end of a run, the results the app recorded (``results.json``) written to
  the summary (``summary``: final bounds, log-likelihood with its K, bits per dimension,
  non-finite steps, smallest decoder std, wall time, status), then ``wandb.finish``.
* ``add_evaluation``: ``intvae-evaluate`` adds its result to the summary of the run's W&B run,
  offline by resuming the offline run, online through ``wandb.Api()``: as in ``results.json``,
  only the whole test split under the ``test/`` keys, any other evaluation under
  ``evaluations/<key>/`` (``evaluation_summary``).
"""

import os
import sys
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from omegaconf import DictConfig

from intvae.app.config import WANDB_ID_FILE, run_id
from intvae.app.record import tags
from intvae.app.resume import launched_rank
from intvae.app.runs import EVALUATIONS, evaluation_split
from intvae.app.wandb_names import run_group, sweep_name


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` whose run summarizes ``val/bound`` by its maximum, with the
    sweep's name as the config key ``sweep_name``."""

    def __init__(self, *args, sweep: str | None = None, **kwargs):
        super().__init__(*args, config={"sweep_name": sweep}, **kwargs)

    @property
    def experiment(self):
        created = self._experiment is None
        run = super().experiment
        if created and callable(getattr(run, "define_metric", None)):
            run.define_metric("val/bound", step_metric="trainer/global_step", summary="max")
        return run


def logger_settings(cfg: DictConfig, record: dict, output_dir: Path, fresh: bool) -> dict:
    """The keyword arguments the app adds to the ``wandb`` logger of ``cfg`` (module
    docstring): the group where none is configured (``logger.wandb.group``); the id only where
    W&B is on, no id is configured, on the launching rank."""
    sweep = sweep_name()
    settings = {"tags": tags(record) + ([f"sweep={sweep}"] if sweep else []),
                "sweep": sweep}
    wandb = (cfg.get("logger") or {}).get("wandb")
    if (wandb or {}).get("group") is None:
        settings["group"] = run_group(record)
    if (wandb is not None and wandb.get("id") is None and wandb.get("mode") != "disabled"
            and launched_rank() == 0):
        settings["id"] = run_id(output_dir, fresh)
    return settings


def evaluation_summary(fields: dict, key: str | None = None) -> dict:
    """The W&B summary keys of an evaluation's ``results.json`` fields
    (``intvae.app.evaluate.evaluate``), placed as ``results.json`` places them
    (``intvae.app.runs.place_evaluation``): at the top level (``key`` None: the run's test
    result) ``<split>/log_likelihood`` (and ``_bins``), ``<split>/bits_per_dim``, ``<split>/k``
    and ``<split>/images``; kept apart under ``evaluations[key]`` (a validation or partial
    evaluation) ``evaluations/<key>/log_likelihood`` and so on, never the test keys."""
    split = evaluation_split(fields)
    if split is None:
        return {}
    prefix = split if key is None else f"{EVALUATIONS}/{key}"
    names = {"log_likelihood": f"{split}_log_likelihood",
             "log_likelihood_bins": f"{split}_log_likelihood_bins",
             "bits_per_dim": "bits_per_dim", "k": "k", "images": "eval_images"}
    return {f"{prefix}/{name}": fields[field] for name, field in names.items()
            if fields.get(field) is not None}


RESULT_KEYS = {"val/bound_final": "val_bound", "test/bound": "test_bound",
               "train/std_min": "train_std_min", "test/std_min": "test_std_min",
               "train/non_finite_steps": "non_finite_steps", "epochs": "epochs",
               "steps": "steps", "wall_seconds": "wall_seconds", "status": "status"}
"""W&B summary key -> ``results.json`` field, besides the evaluation's (``evaluation_summary``);
``val/bound`` itself is the best epoch's (``WandbLogger``)."""


def summary(results: dict) -> dict:
    """The W&B summary of a run's results (module docstring), each evaluation under the keys
    of its place (``evaluation_summary``); ``decoder/std_min`` is the smallest decoder
    standard deviation seen (training or test)."""
    values = {key: results[name] for key, name in RESULT_KEYS.items()
              if results.get(name) is not None}
    stds = [results[k] for k in ("train_std_min", "test_std_min") if results.get(k) is not None]
    if stds:
        values["decoder/std_min"] = min(stds)
    values.update(evaluation_summary(results))
    for key, fields in (results.get(EVALUATIONS) or {}).items():
        values.update(evaluation_summary(fields, key))
    return values


def finish(results: dict) -> None:
    """Write ``summary(results)`` into the current W&B run, if any, and finish it (exit code 0
    for a completed run, else 1), so the next job of a multirun does not log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return
    wandb.run.summary.update(summary(results))
    wandb.finish(exit_code=0 if results.get("status") == "completed" else 1)


def add_evaluation(run_dir: Path, config: DictConfig, fields: dict,
                   key: str | None = None) -> bool:
    """Add an evaluation's fields to the summary of the W&B run of ``run_dir`` (its
    ``wandb_id``), under the keys of their place in ``results.json``, ``key`` (None: the top
    level; ``evaluation_summary``), with the run's logger settings (``config.logger.wandb``):
    offline (``WANDB_MODE`` or the run's ``mode``) by resuming the offline run into
    ``<run dir>/wandb``, online through ``wandb.Api()``. Whether it was added: not for a run
    logged without W&B."""
    settings = (config.get("logger") or {}).get("wandb")
    id_file = Path(run_dir) / WANDB_ID_FILE
    values = evaluation_summary(fields, key)
    mode = os.environ.get("WANDB_MODE") or (settings or {}).get("mode") or "offline"
    if settings is None or not id_file.is_file() or not values or mode == "disabled":
        return False
    import wandb

    run_id = id_file.read_text().strip()
    if mode == "online":
        entity = settings.get("entity") or wandb.Api().default_entity
        api_run = wandb.Api().run(f"{entity}/{settings.get('project')}/{run_id}")
        api_run.summary.update(values)
        api_run.update()
        return True
    run = wandb.init(id=run_id, resume="allow", mode="offline", dir=str(run_dir),
                     project=settings.get("project"), entity=settings.get("entity"))
    run.summary.update(values)
    run.finish()
    return True
