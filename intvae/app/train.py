"""The training app: ``intvae-train [key=value ...] [-m]`` (``python -m intvae.train``).

Trains a VAE with one bound of the registry (default: ``experiment=recommended``, the IRELBO of
the integral bounds paper, eq. 6-7, at alpha 0.5 with one sample of z, on continuous MNIST with
the paper's architecture, 40 epochs on the CPU), tests it and evaluates the importance-sampled
log-likelihood log P(I) of the test set (``intvae.app.evaluate``). Configs:
``intvae/app/conf/`` (root ``train.yaml``). Each run writes into its own output directory
(``outputs/<date>/<time>``, or ``multirun/<date_time>/<job>`` for ``-m``), and nowhere else:

* ``config.yaml``: the resolved config (``.hydra/``: Hydra's own record);
* ``metrics.csv``: per-epoch metrics (``train/bound``, ``val/bound``, ``test/bound``, ...);
* ``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt`` (highest ``val/bound``);
* ``figures/``: reconstruction grids, prior samples, decoder-std histograms;
* ``results.json``: the run's record (``intvae.app.record``) and results (``intvae.app.runs``).

**Status.** ``results.json`` says ``running`` while the run runs, ``completed`` only after the
final evaluation succeeded, ``failed`` (with the error's type and message) after any error,
``stopped`` when the non-finite guard stopped training, and ``interrupted`` after SIGTERM or
Ctrl-C; SIGTERM exits with status 143. A run in which every update was skipped as non-finite
is ``failed``.

**Faults.** A run takes an exclusive lock on its directory first (``intvae.app.files``), writes
every file atomically, and resumes exactly after a kill at any point (``intvae.app.resume``):
training epochs, the test pass and the evaluation are each seeded from the run's seed. In a
multirun, a job whose directory holds a finished run of the same record is skipped with a line
saying so, an unfinished one resumes, a run trained with other settings is refused and left
untouched (one line naming the keys; ``overwrite=true`` moves it aside), a job repeating an
earlier job's configuration is not trained again, and a failing job does not stop the others;
the sweep exits with status 1 at the end, listing its failed and refused jobs and its copies
(``intvae.app.sweeps``). Every job returns a number to the sweeper (``sweep_job``).

Invalid settings end the program with status 1 and one line ``error: <key>: <what is wrong>``
(``HYDRA_FULL_ERROR=1``: the traceback instead); every checked key and its message:
``docs/configuration.md``.
"""

# isort: off
import intvae.app.tool_caches  # noqa: F401  (first: keeps the tools' caches in intvae's cache folder)
# isort: on
import logging
import math
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from intvae.app import wandb_run
from intvae.app.build import build_vae, select_kernels
from intvae.app.callbacks import NonFiniteGuard
from intvae.app.config import (
    CONF_MODULE,
    check_no_ddp_in_multirun,
    check_root_keys,
    in_multirun,
)
from intvae.app.errors import (
    NonFiniteError,
    NothingTrainedError,
    Terminated,
    describe,
    is_user_error,
    one_line_errors,
    sigterm_raises,
)
from intvae.app.evaluate import evaluate, evaluation_interval
from intvae.app.files import AtomicCheckpointIO, RunLock, write_text
from intvae.app.launch import trainer_plugins
from intvae.app.loggers import AppendingCSVLogger
from intvae.app.module import VAEModule
from intvae.app.record import describe_run
from intvae.app.resume import (
    EVALUATION_STREAM,
    TEST_STREAM,
    EpochSeeds,
    FinishedRunError,
    RefusedRunError,
    launched_rank,
    stage_seed,
    start_checkpoint,
)
from intvae.app.runs import (
    RESULTS_FILE,
    place_evaluation,
    read_checkpoint,
    read_results,
    write_results,
)
from intvae.app.settings import CONFIG_FILE, digest, settings
from intvae.app.sweeps import claim, note, objective
from intvae.checks import ParameterError
from intvae.estimate import available_memory
from intvae.intervals import Fixed

log = logging.getLogger(__name__)

FIT_FIELDS = ("epochs", "steps", "train_bound", "val_bound", "train_std_min")
TRAINING_BYTES_PER_ELEMENT = 60
"""Peak memory of a training step per decoder output (samples x batch x pixels), float32:
about 60 (IELBO) to 75 (ELBO) bytes measured by ``benchmarks/scaling.py`` (docs/performance.md);
the smaller figure, so that only a run that cannot fit is refused."""


def instantiate_all(group: DictConfig | None, **extra) -> list:
    """The objects of every entry of a callbacks or logger group that has a ``_target_``;
    ``extra[<entry name>]`` adds keyword arguments to that entry."""
    return [instantiate(node, **extra.get(name, {})) for name, node in (group or {}).items()
            if isinstance(node, DictConfig) and "_target_" in node]


def probe(bound, vae) -> None:
    """Run the bound once on two grey images (with gradients), so that the compiled kernels are
    compiled for training before the first step."""
    bound(vae, torch.full((2, vae.num_pixels), 0.5))


def check_interval(bound, datamodule) -> None:
    """Refuse a fixed interval at least as wide as the data range [eps, 1 - eps]: every pixel's
    interval would hold every pixel value, and P(I) says nothing about the model."""
    interval = getattr(bound, "interval", None)
    width = 1.0 - 2.0 * datamodule.eps
    if isinstance(interval, Fixed) and 2.0 * interval.delta >= width:
        raise ParameterError(
            f"delta={interval.delta!r} is invalid: delta must be below half the data range, "
            f"(1 - 2 eps) / 2 = {width / 2:g} for data on [{datamodule.eps:g}, "
            f"{1 - datamodule.eps:g}] (a wider interval holds every pixel value)")


def check_memory(bound, datamodule, device: torch.device) -> None:
    """Refuse a training step whose decoder outputs (samples x batch x pixels) cannot fit in
    the memory available (``TRAINING_BYTES_PER_ELEMENT`` each), before allocating them."""
    samples = bound.samples * getattr(bound, "outer_samples", 1)
    elements = samples * datamodule.batch_size * datamodule.num_pixels
    need, free = elements * TRAINING_BYTES_PER_ELEMENT, available_memory(device)
    if need > free:
        raise ParameterError(
            f"samples={bound.samples} is invalid with data.batch_size={datamodule.batch_size}: "
            f"a training step would hold {elements:.3g} decoder outputs (samples x batch x "
            f"pixels), about {need / 2**30:.3g} GiB, more than the {free / 2**30:.3g} GiB "
            f"available on {device.type}; use fewer samples or a smaller batch")


def choices() -> dict:
    """The chosen option of each config group (Hydra's runtime choices), {} outside Hydra."""
    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else value.item()


def fit_fields(trainer: L.Trainer, start_step: int, previous: dict) -> dict:
    """The results of the fit; after a resume that had nothing left to train (a run killed
    after its last epoch), those the interrupted attempt recorded for the same step."""
    if trainer.global_step == start_step and previous.get("steps") == trainer.global_step:
        return {key: previous.get(key) for key in FIT_FIELDS}
    return {"epochs": trainer.current_epoch, "steps": trainer.global_step,
            "train_bound": metric(trainer, "train/bound"),
            "val_bound": metric(trainer, "val/bound"),
            "train_std_min": metric(trainer, "train/std_min")}


def tested_weights(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """The checkpoint whose weights the test pass and the evaluation use:
    ``evaluate.checkpoint=best`` (the default) the best by validation bound, ``last`` the last;
    None (the weights in memory, the last ones) where there is no such checkpoint."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    path = callback.best_model_path if cfg.evaluate.checkpoint == "best" else (
        callback.last_model_path)
    return path if path and Path(path).is_file() else None


def evaluate_run(cfg: DictConfig, trainer: L.Trainer, vae, datamodule, results: dict) -> dict:
    """``results`` with the log-likelihood of ``cfg.evaluate.split`` (``intvae.app.evaluate``)
    under the run's own intervals (``evaluation_interval``: the bound's, else ``interval``), on
    one device over the whole split or its first ``evaluate.limit_batches`` batches (in a DDP
    run: on rank 0, while the other ranks are done), in its place
    (``intvae.app.runs.place_evaluation``: the top level only for the whole test split), also
    sent to the loggers under the same keys as the W&B summary
    (``intvae.app.wandb_run.evaluation_summary``)."""
    fields = evaluate(vae, evaluation_interval(cfg), datamodule, cfg.evaluate.samples,
                      trainer.strategy.root_device, cfg.evaluate.split,
                      cfg.evaluate.chunk_elements, cfg.evaluate.limit_batches,
                      bits_per_dim=cfg.evaluate.bits_per_dim)
    results, key = place_evaluation(results, {**fields, "checkpoint": results.get("checkpoint")})
    for logger in trainer.loggers:
        logger.log_metrics(wandb_run.evaluation_summary(fields, key), step=trainer.global_step)
        logger.save()
    return results


def train(cfg: DictConfig) -> dict:
    """Train, test and evaluate the run ``cfg`` describes; return its results. The main
    process holds the run directory's lock throughout (``RunLock``)."""
    check_no_ddp_in_multirun(cfg.trainer.devices, cfg.trainer.get("num_nodes") or 1)
    check_root_keys(cfg)
    output_dir = Path(cfg.paths.output_dir)
    lock = RunLock(output_dir).acquire() if launched_rank() == 0 else None
    try:
        return run(cfg, output_dir)
    finally:
        if lock is not None:
            lock.release()


class CopyJobError(RefusedRunError):
    """A multirun job whose configuration an earlier job of the sweep claimed
    (``intvae.app.sweeps.claim``): not trained."""

    def __init__(self, first: dict):
        self.first = first
        super().__init__(f"a copy of job {first['job']} ({first['output_dir']}): its settings "
                         "are the same (intvae.app.settings)")


def run(cfg: DictConfig, output_dir: Path) -> dict:
    """``train`` once the lock is held."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    bound = instantiate(cfg.bound)
    vae = build_vae(cfg, datamodule.num_pixels)
    bound.check_likelihood(vae.head.likelihood)  # e.g. bound=ielbo likelihood=bernoulli
    check_interval(bound, datamodule)
    noise = instantiate(cfg.noise) if cfg.get("noise") else None
    optimizer = instantiate(cfg.optimizer)
    record = describe_run(bound, vae, noise, datamodule, cfg.seed, choices(), optimizer,
                          cfg.trainer)
    run_settings = settings(cfg)
    if in_multirun():  # every rank (Slurm-started DDP ranks too) finds the same claim
        first = claim(HydraConfig.get().sweep.dir, HydraConfig.get().job.num,
                      digest(run_settings), output_dir)
        if first is not None:
            raise CopyJobError(first)
    # Before anything is written: refuse a finished run in output_dir or one with other
    # settings, find the checkpoint to resume from and check that it can be read
    # (intvae.app.resume).
    ckpt_path = start_checkpoint(output_dir, cfg.get("ckpt_path"), cfg.get("resume", "auto"),
                                 cfg.get("overwrite", False), cfg.trainer.max_epochs,
                                 run_settings)
    resumed = read_checkpoint(ckpt_path) if ckpt_path else {"global_step": 0, "epoch": -1}
    start_step = resumed["global_step"]
    previous = read_results(output_dir / RESULTS_FILE) if ckpt_path else {}
    hparams = {**record, "config": OmegaConf.to_container(cfg, resolve=True)}
    module = VAEModule(vae, bound, optimizer, hparams, noise=noise,
                       compile_step=cfg.compile_step)
    callbacks = [*instantiate_all(cfg.get("callbacks")), EpochSeeds(cfg.seed)]
    loggers = instantiate_all(cfg.get("logger"), wandb=wandb_run.logger_settings(
        cfg, record, output_dir, fresh=ckpt_path is None))  # W&B: tags, sweep, stored id
    for logger in loggers if ckpt_path else ():  # drop a killed attempt's rows after its checkpoint
        if isinstance(logger, AppendingCSVLogger):
            logger.keep_rows_up_to(start_step, resumed["epoch"])
    plugins = trainer_plugins(cfg.trainer)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          plugins=[AtomicCheckpointIO(), *plugins.get("plugins", [])])
    check_memory(bound, datamodule, trainer.strategy.root_device)
    compiled = select_kernels(vae, cfg.compile, lambda: probe(bound, vae))
    guard = next((c for c in callbacks if isinstance(c, NonFiniteGuard)), None)
    results = {**record, "output_dir": str(output_dir), "status": "running",
               "compiled_kernels": compiled, "resumed_from": ckpt_path,
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if trainer.is_global_zero:
        write_text(output_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
        write_results(output_dir / RESULTS_FILE, results)
    start = time.perf_counter()
    try:
        with sigterm_raises():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            results.update(fit_fields(trainer, start_step, previous),
                           fit_seconds=round(time.perf_counter() - start, 1))
            if guard is not None and 0 < results["steps"] == guard.non_finite_steps:
                raise NothingTrainedError(f"every one of the {results['steps']} updates of run "
                                     f"{output_dir} was skipped as non-finite: nothing was "
                                     "trained")
            if trainer.is_global_zero:  # a kill from here on resumes to these fields
                write_results(output_dir / RESULTS_FILE, results)
            weights = tested_weights(cfg, trainer)
            stage_seed(cfg.seed, TEST_STREAM)
            trainer.test(module, datamodule=datamodule, ckpt_path=weights, weights_only=True)
            results.update(test_bound=metric(trainer, "test/bound"),
                           test_std_min=metric(trainer, "test/std_min"),
                           checkpoint=weights, weights=cfg.evaluate.checkpoint
                           if weights else "final (no checkpoint)")
            if trainer.is_global_zero and cfg.evaluate.enabled:
                stage_seed(cfg.seed, EVALUATION_STREAM)
                results = evaluate_run(cfg, trainer, vae, datamodule, results)
            results["status"] = "completed"
    except NonFiniteError as error:
        stopped = not isinstance(error, NothingTrainedError)  # the guard's mode=stop
        results.update(status="stopped" if stopped else "failed", error=str(error))
        raise
    except (Terminated, KeyboardInterrupt) as error:  # SIGTERM (kill, timeout, Slurm), Ctrl-C
        results.update(status="interrupted", error=type(error).__name__)
        if isinstance(error, Terminated):
            raise SystemExit(Terminated.exit_code) from error
        raise
    except SystemExit as error:  # submitit's requeue on a Slurm time limit; Lightning's Ctrl-C
        results.update(status="interrupted", error=f"SystemExit: {error.code}")
        raise
    except Exception as error:
        results.update(status="failed", error=f"{type(error).__name__}: {describe(error)}")
        raise
    finally:
        results["wall_seconds"] = round(time.perf_counter() - start, 1)
        results["non_finite_steps"] = None if guard is None else guard.non_finite_steps
        if trainer.is_global_zero:
            results = write_results(output_dir / RESULTS_FILE, results)
        wandb_run.finish(results)  # W&B summary; else the next job of a multirun logs into it
    log.info("results: %s", results)
    return results


def sweep_job(cfg: DictConfig) -> float:
    """One job of a multirun, returning ``intvae.app.sweeps.objective`` (a number, so that
    Optuna and other sweepers can go on): a finished run of the same settings is skipped with a
    line and returns its recorded value, a copy of an earlier job returns that job's, and a run
    in the job's directory trained with other settings is refused in one line naming them and
    left untouched. An error is logged in one line (user errors) or with its traceback,
    recorded in the job's ``results.json`` and does not stop the sweep
    (``intvae.app.sweeps.OutputDirectories`` lists the failed and the refused jobs at the
    end)."""
    job, sweep_dir = HydraConfig.get().job.num, HydraConfig.get().sweep.dir
    output_dir = Path(cfg.paths.output_dir)
    results = output_dir / RESULTS_FILE
    try:
        note(sweep_dir, job, output_dir)  # listed at the end, whatever happens next
        return objective(train(cfg))
    except FinishedRunError:
        log.info("job %s: skipped, %s holds its finished run (same settings)", job, output_dir)
        return objective(read_results(results))
    except CopyJobError as error:
        log.info("job %s: not trained, %s", job, describe(error))
        first = Path(error.first["output_dir"])
        RunLock(first).wait()  # a parallel launcher: that job may still be training
        return objective(read_results(first / RESULTS_FILE))
    except RefusedRunError as error:  # the run in the directory stays as it is
        log.error("job %s: error: %s", job, describe(error))
        note(sweep_dir, job, output_dir, refused=describe(error))
    except SystemExit:
        raise
    except Exception as error:
        if is_user_error(error):
            log.error("job %s: error: %s", job, describe(error))
        else:
            log.exception("job %s failed", job)
        try:
            record = read_results(results)
        except ParameterError:
            record = {}
        if record.get("status") != "completed":
            write_results(results, {**record, "status": "failed",
                                    "error": f"{type(error).__name__}: {describe(error)}"})
    return math.nan


@hydra.main(version_base="1.3", config_path=f"pkg://{CONF_MODULE}", config_name="train")
@one_line_errors
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra's entry point; returns the validation bound (what a sweeper would maximize)."""
    if in_multirun():
        return sweep_job(cfg)
    return train(cfg).get("val_bound")


MULTIRUN_FLAGS = ("-m", "--multirun")


def main() -> None:
    """``intvae-train``: Hydra's entry point, with ``-m``/``--multirun`` accepted anywhere on
    the command line (Hydra's parser wants it before the overrides)."""
    flags = [arg for arg in sys.argv[1:] if arg in MULTIRUN_FLAGS]
    sys.argv[1:] = flags + [arg for arg in sys.argv[1:] if arg not in MULTIRUN_FLAGS]
    hydra_main()


if __name__ == "__main__":
    main()
