"""The training app: ``python -m intvae.train [key=value ...] [-m]``.

Trains a VAE with one bound of the registry (default: the IELBO of the integral bounds paper,
eq. 2, on continuous MNIST with the paper's architecture, 4 epochs on the CPU), then evaluates
the importance-sampled log-likelihood log P(I) of the test set (``intvae.evaluate``). Configs
are in ``conf/`` (root ``conf/train.yaml``). Each run writes into its own output directory
(``outputs/<date>/<time>``, or ``multirun/<date_time>/<job>`` for ``-m``):

* ``config.yaml``: the resolved config (``.hydra/``: Hydra's own record);
* ``metrics.csv``: per-epoch metrics (``train/bound``, ``val/bound``, ``test/bound``, ...);
* ``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt`` (highest ``val/bound``);
* ``figures/``: reconstruction grids, prior samples, decoder-std histograms;
* ``results.json`` (``intvae.results``).

``ckpt_path=<run>/checkpoints/last.ckpt`` resumes that run in its own directory; an unfinished
run in the output directory (killed, preempted, a requeued Slurm job) is resumed from its
``last.ckpt`` (``resume=auto``), exactly (``intvae.resume``); a finished one is never written
over (unless ``overwrite=true``). ``trainer=ddp trainer.devices=N`` trains one run on N devices;
the final evaluation runs on rank 0 over the whole split. Parallel sweeps with one GPU per job
and Slurm: ``intvae.launch``. Invalid settings end the program with status 1 and one line
``error: <key>: <what is wrong>`` (``HYDRA_FULL_ERROR=1``: the traceback instead); every checked
key and its message: ``docs/configuration.md``.
"""

# isort: off
import intvae.app.tool_caches  # noqa: F401  (first: keeps the tools' caches in intvae's cache folder)
# isort: on
import logging
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from intvae.app.build import build_vae, select_kernels
from intvae.app.callbacks import NonFiniteGuard
from intvae.app.config import CONF_MODULE, check_no_ddp_in_multirun, check_root_keys
from intvae.app.errors import NonFiniteError, one_line_errors
from intvae.app.evaluate import evaluate
from intvae.app.launch import trainer_plugins
from intvae.app.module import VAEModule
from intvae.app.resume import EpochSeeds, start_checkpoint
from intvae.app.runs import RESULTS_FILE, write_results

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list:
    """The objects of every entry of a callbacks or logger group that has a ``_target_``."""
    return [instantiate(node) for node in (group or {}).values()
            if isinstance(node, DictConfig) and "_target_" in node]


def probe(bound, vae) -> None:
    """Run the bound once on two grey images (with gradients), so that the compiled kernels are
    compiled for training before the first step."""
    bound(vae, torch.full((2, vae.num_pixels), 0.5))


def hyperparameters(cfg: DictConfig, bound) -> dict:
    """What the loggers record (W&B config, hparams.yaml) and checkpoints carry: the bound's
    name, delta, alpha and samples at the top for comparing runs, and the resolved config."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return {"bound": bound.name, "delta": cfg.delta, "alpha": cfg.alpha,
            "samples": cfg.samples, "seed": cfg.seed, "config": config}


def metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else value.item()


def evaluate_run(cfg: DictConfig, trainer: L.Trainer, vae, datamodule) -> dict:
    """The log-likelihood of ``cfg.evaluate.split`` (``intvae.evaluate``), on one device over the
    whole split (in a DDP run: on rank 0, while the other ranks are done), also sent to the
    loggers."""
    split = cfg.evaluate.split
    fields = evaluate(vae, instantiate(cfg.interval), datamodule, cfg.evaluate.samples,
                      trainer.strategy.root_device, split, cfg.evaluate.chunk_elements,
                      cfg.evaluate.limit_batches, bits_per_dim=cfg.evaluate.bits_per_dim)
    values = {f"{split}/log_likelihood": fields[f"{split}_log_likelihood"],
              f"{split}/log_likelihood_bins": fields.get(f"{split}_log_likelihood_bins"),
              f"{split}/bits_per_dim": fields["bits_per_dim"]}
    for logger in trainer.loggers:
        logger.log_metrics({k: v for k, v in values.items() if v is not None},
                           step=trainer.global_step)
        logger.save()
    return fields


def train(cfg: DictConfig) -> dict:
    """Train, test and evaluate the run ``cfg`` describes; return its results."""
    check_no_ddp_in_multirun(cfg.trainer.devices, cfg.trainer.get("num_nodes") or 1)
    check_root_keys(cfg)
    output_dir = Path(cfg.paths.output_dir)
    # Before anything is written: refuse a finished run in output_dir, find the checkpoint to
    # resume from and check that it can be read (intvae.resume).
    ckpt_path = start_checkpoint(output_dir, cfg.get("ckpt_path"), cfg.get("resume", "auto"),
                                 cfg.get("overwrite", False))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    bound = instantiate(cfg.bound)
    vae = build_vae(cfg, datamodule.num_pixels)
    bound.check_likelihood(vae.head.likelihood)  # e.g. bound=ielbo likelihood=bernoulli
    compiled = select_kernels(vae, cfg.compile, lambda: probe(bound, vae))
    noise = cfg.get("noise")
    module = VAEModule(vae, bound, instantiate(cfg.optimizer), hyperparameters(cfg, bound),
                       noise=instantiate(noise) if noise else None,
                       compile_step=cfg.compile_step)
    callbacks = [*instantiate_all(cfg.get("callbacks")), EpochSeeds(cfg.seed)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks,
                          logger=instantiate_all(cfg.get("logger")) or False,
                          **trainer_plugins(cfg.trainer))
    guard = next((c for c in callbacks if isinstance(c, NonFiniteGuard)), None)
    results = {"bound": bound.name, "delta": cfg.delta, "alpha": cfg.alpha,
               "samples": cfg.samples, "output_dir": str(output_dir), "status": "failed",
               "compiled_kernels": compiled, "resumed_from": ckpt_path,
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        results.update(epochs=trainer.current_epoch, steps=trainer.global_step,
                       fit_seconds=round(time.perf_counter() - start, 1),
                       train_bound=metric(trainer, "train/bound"),
                       val_bound=metric(trainer, "val/bound"),
                       train_std_min=metric(trainer, "train/std_min"))
        trainer.test(module, datamodule=datamodule)
        results.update(status="completed", test_bound=metric(trainer, "test/bound"),
                       test_std_min=metric(trainer, "test/std_min"))
        if trainer.is_global_zero and cfg.evaluate.enabled:
            results.update(evaluate_run(cfg, trainer, vae, datamodule))
    except NonFiniteError as error:
        results.update(status="stopped", error=str(error))
        raise
    except (KeyboardInterrupt, SystemExit):  # e.g. submitit's requeue on a Slurm time limit
        results.update(status="interrupted")
        raise
    finally:
        results["wall_seconds"] = round(time.perf_counter() - start, 1)
        results["non_finite_steps"] = None if guard is None else guard.non_finite_steps
        if trainer.is_global_zero:
            results = write_results(output_dir / RESULTS_FILE, results)
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()  # else the next job of a multirun logs into this run
    log.info("results: %s", results)
    return results


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra's entry point; returns the validation bound (what a sweeper would maximize)."""
    return train(cfg).get("val_bound")


if __name__ == "__main__":
    main()
