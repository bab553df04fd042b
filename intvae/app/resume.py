"""Resuming runs: which checkpoint a run starts from, exact resume, the W&B run id.

**Where a run starts** (``start_checkpoint``, root keys ``ckpt_path``, ``resume``,
``overwrite``):

* ``ckpt_path=<file>``: from that checkpoint (by default into the run directory holding it);
* else, with ``resume=auto`` (the default), from ``<output_dir>/checkpoints/last.ckpt`` if the
  output directory holds an unfinished run (killed, preempted, timed out): a Slurm job requeued
  into its own directory, or the same command run again, continues where the run stopped;
* an output directory holding a finished run (``results.json`` with ``status: completed``) is
  never written over silently: the run is refused, unless ``overwrite=true``, which moves the
  finished run's files into ``<output_dir>/overwritten/<n>/`` and starts again. With
  ``resume=never`` an unfinished run is refused in the same way (``overwrite=true`` moves it).

Every checkpoint is read with ``weights_only=True`` first (``intvae.checkpoints``), so that a
corrupt, truncated or malicious file stops the run in one line before anything is written.

**Exact resume** (``EpochSeeds``): Lightning restores the weights, the optimizer, the loops and
the callbacks' states but no random state, and a resumed run draws random numbers in places an
uninterrupted one does not (the sanity-check validation before the first resumed epoch) and
vice versa (figures drawn after the checkpoint of an epoch was written). Saving the global RNG
state in the checkpoint would not make the two runs agree; instead every training epoch starts
from a seed derived from (``seed``, epoch, stream, rank) for torch (CPU and every CUDA device),
numpy and ``random``, so what an epoch draws (the samples of z, the training noise) depends only
on the weights and the epoch, never on what ran before it. With the data's shuffles seeded by
(seed, epoch) as well (``intvae.data.batching``), a run resumed from an epoch-end checkpoint
reproduces the uninterrupted run exactly on the same machine (``tests/test_resume.py``).
Checkpoints are written at epoch ends only (``conf/callbacks/model_checkpoint.yaml``); a
mid-epoch checkpoint would replay the epoch's first batches.

**W&B**: ``intvae.app.config.run_id(output_dir)`` is the W&B run id stored in the run
directory (``<output_dir>/wandb_id``; ``resume: allow``), so every attempt of a run (resumed,
requeued) logs into one W&B run; a fresh start (a reused or emptied directory,
``overwrite=true``) gets a new id.
"""

import logging
import os
import random
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch

from intvae.app.config import OVERWRITTEN, overwritten_runs
from intvae.app.errors import ConfigError
from intvae.app.files import LOCK_FILE
from intvae.app.runs import LAST_CHECKPOINT, RESULTS_FILE, read_checkpoint, read_results
from intvae.app.settings import changes, describe_changes, stored_settings
from intvae.data.batching import derive_seed

log = logging.getLogger(__name__)

RESUME_CHOICES = ("auto", "never")
CONTINUED = "continued"
"""The folder of a run directory that keeps the record of a finished run that ``ckpt_path=``
continues (``continue_finished``)."""
KEPT_ON_OVERWRITE = (".hydra", OVERWRITTEN, CONTINUED, LOCK_FILE)
"""Entries of a run directory ``overwrite=true`` leaves in place (besides the ``*.log`` files):
Hydra writes ``.hydra/`` and the job log before the app starts."""

SAMPLING_STREAM = 3
"""Stream number of the per-epoch seeds of ``EpochSeeds`` in ``derive_seed`` (0: shuffles,
1 and 2: binarization, ``intvae.data``)."""


class RefusedRunError(ConfigError):
    """The output directory holds a run this command may not touch: refused before anything is
    written (a multirun job records nothing into that run's files)."""


class FinishedRunError(RefusedRunError):
    """The output directory holds a finished run of the same settings: a single run refuses it, a
    multirun job skips it."""


def launched_rank() -> int:
    """The rank of this process as its launcher set it in the environment (a DDP child process
    of Lightning, a Slurm task, torchrun); 0 for the main process."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def finished(output_dir: Path) -> bool:
    """Whether ``output_dir`` holds a finished run (``results.json``: ``status: completed``)."""
    try:
        return read_results(output_dir / RESULTS_FILE).get("status") == "completed"
    except (ValueError, AttributeError) as error:
        raise ConfigError(f"hydra.run.dir={output_dir} is invalid: its {RESULTS_FILE} cannot be "
                          f"read ({error}); choose another hydra.run.dir") from error


def move_aside(output_dir: Path) -> Path:
    """Move the files of the run in ``output_dir`` into ``output_dir/overwritten/<n>/``."""
    target = output_dir / OVERWRITTEN / str(overwritten_runs(output_dir) + 1)
    target.mkdir(parents=True)
    for entry in sorted(output_dir.iterdir()):
        if entry.name not in KEPT_ON_OVERWRITE and entry.suffix != ".log":
            shutil.move(str(entry), str(target / entry.name))
    log.warning("overwrite=true: moved the previous run of %s into %s", output_dir, target)
    return target


def continue_finished(output_dir: Path, ckpt: Path, checkpoint: dict, max_epochs: int) -> None:
    """``ckpt_path=`` into the directory of a finished run continues it only if it has epochs
    left to train: then the finished run's record moves to ``<output_dir>/continued/<n>/``
    (kept, not overwritten); else a ``ConfigError``."""
    done = int(checkpoint.get("epoch", -1)) + 1
    if max_epochs != -1 and max_epochs <= done:
        raise ConfigError(
            f"ckpt_path={ckpt} is invalid: it continues the finished run in {output_dir}, but it "
            f"holds {done} epochs and trainer.max_epochs={max_epochs} leaves none to train; pass "
            "a larger trainer.max_epochs to continue it, or evaluate it with intvae-evaluate")
    folder = output_dir / CONTINUED
    target = folder / str(sum(1 for _ in folder.iterdir()) + 1 if folder.is_dir() else 1)
    target.mkdir(parents=True)
    shutil.copy2(output_dir / RESULTS_FILE, target / RESULTS_FILE)
    log.info("ckpt_path: continuing the finished run in %s; its record is kept in %s",
             output_dir, target)


def changed(output_dir: Path, run_settings: dict | None, resuming: bool) -> dict:
    """How the settings of the run in ``output_dir`` (its ``config.yaml``) differ from
    ``run_settings``, this command's (``intvae.app.settings.changes``); empty where they do not,
    or either is missing."""
    old = stored_settings(output_dir) if run_settings is not None else None
    return {} if old is None else changes(old, run_settings, resuming)


def refused(output_dir: Path, which: str, found: dict) -> RefusedRunError:
    """The refusal of a run in ``output_dir`` whose settings differ (``changed``)."""
    hint = (f"; intvae-evaluate run={output_dir} evaluates it with other settings"
            if all(key.startswith("evaluate.") for key in found) else "")
    return RefusedRunError(
        f"hydra.run.dir={output_dir} is invalid: {which} has other settings than this "
        f"command's: {describe_changes(found)}{hint}; overwrite=true moves it aside and starts "
        "again, or choose another hydra.run.dir (hydra.sweep.dir with -m), with ckpt_path=<its "
        "checkpoint> to branch from it")


def start_checkpoint(output_dir: str | os.PathLike[str], ckpt_path: str | None = None,
                     resume: str = "auto", overwrite: bool = False,
                     max_epochs: int = -1, run_settings: dict | None = None) -> str | None:
    """The checkpoint the run in ``output_dir`` starts from (None: a new run), after checking
    it can be read; see the module docstring. ``run_settings``: the settings of the run this
    command would train (``intvae.app.settings``); a run in ``output_dir`` with other settings
    is never skipped as finished nor continued (``RefusedRunError`` naming the keys), except
    that a resumed or continued run may train longer and evaluate otherwise. Raises
    ``FinishedRunError`` for a finished run of the same settings in ``output_dir`` (unless
    ``overwrite``), ``ConfigError`` for an unreadable checkpoint, a bad ``resume`` or
    ``overwrite``, or ``ckpt_path`` into a finished run with no epoch left to train
    (``continue_finished``). Only the main process (rank 0) moves files; the other ranks of a
    DDP run see the directory as rank 0 left it and decide alike."""
    if resume not in RESUME_CHOICES:
        raise ConfigError(f"resume={resume!r} is invalid: resume must be auto or never")
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite={overwrite!r} is invalid: overwrite must be true or false")
    output_dir = Path(output_dir).expanduser().resolve()
    if ckpt_path:
        if overwrite:
            raise ConfigError(f"overwrite=true is invalid with ckpt_path={ckpt_path}: "
                              "overwrite starts a new run, ckpt_path continues one")
        ckpt = Path(ckpt_path).expanduser().resolve()
        checkpoint = read_checkpoint(ckpt, "ckpt_path")
        if found := changed(output_dir, run_settings, resuming=True):
            raise refused(output_dir, "the run ckpt_path continues", found)
        if finished(output_dir) and launched_rank() == 0:
            continue_finished(output_dir, ckpt, checkpoint, max_epochs)
        return str(ckpt)
    main_process = launched_rank() == 0
    last = output_dir / LAST_CHECKPOINT
    if finished(output_dir) and main_process:
        if not overwrite:
            if found := changed(output_dir, run_settings, resuming=False):
                raise refused(output_dir, "the finished run it holds", found)
            raise FinishedRunError(
                f"hydra.run.dir={output_dir} is invalid: it holds a finished run (results.json: "
                "status completed); choose another hydra.run.dir (hydra.sweep.dir with -m), pass "
                f"ckpt_path={last} to continue it (e.g. with a larger trainer.max_epochs), or "
                "overwrite=true to move it aside and start again")
        move_aside(output_dir)
        return None
    if not last.is_file():
        return None
    if resume == "never" and main_process:
        if not overwrite:
            raise ConfigError(
                f"hydra.run.dir={output_dir} is invalid with resume=never: it holds an unfinished "
                f"run ({last}); resume=auto continues it, overwrite=true moves it aside, or "
                "choose another hydra.run.dir")
        move_aside(output_dir)
        return None
    if found := changed(output_dir, run_settings, resuming=True):
        if not overwrite:
            raise refused(output_dir, f"the unfinished run it holds ({last})", found)
        if main_process:
            move_aside(output_dir)
        return None
    try:
        read_checkpoint(last, "checkpoint")
    except ConfigError as error:
        raise ConfigError(f"resume=auto: {error}; pass ckpt_path=<an earlier checkpoint> to "
                          "resume from it, or choose another hydra.run.dir") from error
    log.info("resume=auto: resuming the unfinished run in %s from %s", output_dir, last)
    return str(last)


TEST_STREAM, EVALUATION_STREAM = 4, 5
"""Stream numbers of the seeds of the test pass and of the final evaluation (``stage_seed``)."""


def seed_all(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def stage_seed(seed: int, stream: int) -> None:
    """Seed everything for a stage after training (the test pass, the evaluation) from
    (``seed``, ``stream``, rank): what it draws depends only on the weights, so a run killed in
    that stage and resumed reproduces the uninterrupted run's numbers."""
    seed_all(derive_seed(seed, stream, launched_rank()))


class EpochSeeds(L.Callback):
    """Seeds torch (CPU and CUDA), numpy and ``random`` at the start of every training epoch
    from (``seed``, epoch, ``SAMPLING_STREAM``, rank): exact resume from epoch-end checkpoints,
    and different samples of z on every DDP rank (module docstring)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def epoch_seed(self, epoch: int, rank: int) -> int:
        return derive_seed(self.seed, epoch, SAMPLING_STREAM, rank)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        seed_all(self.epoch_seed(trainer.current_epoch, trainer.global_rank))

    def state_dict(self) -> dict:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("seed", self.seed) != self.seed:
            log.warning("resuming a run trained with seed=%s under seed=%s: the data order and "
                        "the samples of z follow the new seed", state_dict["seed"], self.seed)
