"""Callbacks of the training app: the non-finite guard and the figures.

``NonFiniteGuard`` protects a run from a non-finite loss or gradient, the failure the integral
bounds paper attributes to the density ELBO on high-contrast data (decoder standard deviations
collapsing to 0). ``Figures`` draws the paper's figures every few epochs (``intvae.figures``)
and sends them to the loggers.
"""

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from intvae.app.errors import NonFiniteError
from intvae.app.files import write_atomic
from intvae.checks import integer, one_of
from intvae.report import figures

log = logging.getLogger(__name__)


class NonFiniteGuard(L.Callback):
    """Detects a non-finite loss or gradient before each optimizer step.

    ``mode="skip"``: the update is skipped (gradients dropped, so Adam's moments and step
    count do not move either) and counted in ``non_finite_steps`` (logged per epoch as
    ``train/non_finite_steps`` and saved in checkpoints). ``mode="stop"``: training stops with
    a ``NonFiniteError`` naming the run, the step and the quantity, before the update, so the
    weights stay finite and the last checkpoint is the last good one. Either way no
    checkpoint with non-finite weights is ever written.

    No host synchronization per step in ``skip`` mode with an optimizer that can skip a step on
    the device (``fused=True`` Adam, AdamW, SGD, Adagrad: ``VAEModule`` builds Adam and AdamW
    fused under precision 32-true and 64-true): the check runs on the device and is handed to
    the optimizer as its ``found_inf`` flag (the mechanism of ``torch.amp.GradScaler``), whose
    fused kernel then leaves the weights, moments and step count as they were. The count, and
    the first and last skipped step with their quantity, stay on the device until read: once
    per epoch (the warning and ``train/non_finite_steps``), at a checkpoint and by
    ``non_finite_steps``. With other optimizers (the plain Adam of the other precisions, e.g.
    ``bf16-mixed``), and in ``stop`` mode (which must raise before the update), the check reads
    one boolean per step and a skipped step's gradients are dropped. Under DDP the gradients
    are already averaged over the ranks, so all ranks decide alike.

    Under ``precision=16-mixed`` a ``GradScaler`` owns ``found_inf``: Lightning has it unscale
    the gradients before this hook, and it skips the step, and lowers its loss scale, where
    they overflowed in the scaled float16 backward. Those skipped steps come from the loss
    scale, not from the model, so the guard leaves them to the scaler: it neither counts them
    nor stops for them, and it never sets ``found_inf`` itself. It judges the loss alone (the
    unscaled loss the model computed, which the scaler never touches): a non-finite loss is
    the model's non-finite step, skipped (gradients dropped, counted) or stopped as under the
    other precisions. (Its gradients are then usually non-finite too, so the scaler also
    lowers its scale once, which it grows back after ``growth_interval`` good steps.)
    """

    LOSS, GRADIENT = 1, 2  # codes of the quantity, kept on the device

    def __init__(self, mode: str = "skip"):
        self.mode = one_of("guard.mode", mode, ("skip", "stop"))
        self._count: torch.Tensor | int = 0  # skipped steps, a device tensor once counting
        self._first = self._last = None  # (step, quantity code) tensors of skipped steps
        self._reported = 0  # skipped steps already reported in a warning

    @property
    def non_finite_steps(self) -> int:
        """The number of skipped updates (reads the device counter)."""
        return int(self._count)

    @non_finite_steps.setter
    def non_finite_steps(self, value: int) -> None:
        self._count, self._reported = int(value), int(value)
        self._first = self._last = None

    @staticmethod
    def on_device_skip(optimizer) -> bool:
        """Whether ``optimizer`` skips its step on the device when given ``found_inf``."""
        return bool(getattr(optimizer, "_step_supports_amp_scaling", False)
                    and optimizer.defaults.get("fused"))

    @staticmethod
    def scaled(trainer) -> bool:
        """Whether a gradient scaler (``precision=16-mixed``) owns the gradients' overflow."""
        return getattr(trainer, "scaler", None) is not None

    def _flags(self, pl_module, gradients: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(all finite, quantity code of the first non-finite one) as device tensors; the
        gradients are left out unless ``gradients``."""
        loss = pl_module.last_loss
        # The sum of a gradient is nan or inf where an element is (and, far beyond the
        # numerics' saturation, where the sum overflows): one cheap pass per parameter.
        sums = [p.grad.sum() for p in pl_module.parameters()
                if gradients and p.grad is not None]
        device = loss.device if loss is not None else None
        grads_ok = (torch.stack(sums).isfinite().all() if sums
                    else torch.ones((), dtype=torch.bool, device=device))
        loss_ok = torch.isfinite(loss) if loss is not None else torch.ones_like(grads_ok)
        code = torch.where(loss_ok, self.GRADIENT, self.LOSS)
        return grads_ok & loss_ok, code

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        scaled = self.scaled(trainer)
        finite, code = self._flags(pl_module, gradients=not scaled)
        if self.mode == "skip" and not scaled and self.on_device_skip(optimizer):
            bad = ~finite
            optimizer.found_inf = bad.to(torch.float32)
            step = torch.full((), trainer.global_step, device=bad.device)  # no copy to wait on
            record = torch.stack([step, code.to(step.dtype)])
            first = self._first if self._first is not None else torch.full_like(record, -1)
            self._first = torch.where(bad & (first[0] < 0), record, first)
            self._last = torch.where(bad, record, self._last if self._last is not None
                                     else torch.full_like(record, -1))
            self._count = self._count + bad.long()
            return
        if bool(finite):
            return
        where = self._describe(trainer, trainer.global_step, int(code))
        if self.mode == "stop":
            raise NonFiniteError(f"{where}; stopped (guard.mode=stop) before the update: the "
                                 "last checkpoint holds the last good weights")
        self._count = self._count + 1
        self._reported += 1
        log.warning("%s; update skipped (%d so far)", where, self.non_finite_steps)
        for p in pl_module.parameters():
            p.grad = None

    @classmethod
    def _describe(cls, trainer, step: int, code: int) -> str:
        quantity = "loss" if code == cls.LOSS else "gradient"
        return (f"non-finite {quantity} in run {trainer.default_root_dir} at step {step} "
                f"(epoch {trainer.current_epoch})")

    def _report(self, trainer) -> None:
        """Warn about the updates skipped on the device since the last report (one read)."""
        count = self.non_finite_steps
        if count > self._reported and self._first is not None:
            first, last = self._first.tolist(), self._last.tolist()
            log.warning("%s; update skipped (%d so far; last at step %d)",
                        self._describe(trainer, *first), count, last[0])
            self._first = None
        self._reported = count

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer)
        pl_module.log("train/non_finite_steps", float(self.non_finite_steps))

    def on_train_end(self, trainer, pl_module) -> None:
        self._report(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        bad = [name for name, value in checkpoint["state_dict"].items()
               if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if bad:
            raise NonFiniteError(f"refusing to write a checkpoint of run "
                                 f"{trainer.default_root_dir} at step {trainer.global_step}: "
                                 f"non-finite weights in {bad}")

    def state_dict(self) -> dict:
        return {"non_finite_steps": self.non_finite_steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.non_finite_steps = state_dict["non_finite_steps"]


class Figures(L.Callback):
    """The paper's figures (``intvae.figures``) every ``every_n_epochs`` epochs and after the
    last: the reconstruction grid, prior samples and the histogram of decoder standard
    deviations, drawn from the first ``num_images`` validation images, saved as
    ``<output>/figures/<name>_epoch<NNN>.png`` (``<name>_final.png`` after a last partial epoch)
    and sent to the W&B and TensorBoard loggers (images and a histogram).
    ``every_n_epochs="auto"``: at most about ``MAX_DRAWINGS`` sets per run
    (``auto_every``); the last epoch is always drawn."""

    MAX_DRAWINGS = 100

    def __init__(self, every_n_epochs: int | str = "auto", num_images: int = 10,
                 num_prior_samples: int = 64):
        self.every_n_epochs = integer("every_n_epochs", every_n_epochs, 1, word="auto")
        self.num_images = integer("num_images", num_images, 1)
        self.num_prior_samples = integer("num_prior_samples", num_prior_samples, 1)
        self._drawn_step: int | None = None

    @classmethod
    def auto_every(cls, max_epochs: int | None) -> int:
        """Every how many epochs to draw for at most ``MAX_DRAWINGS`` sets in ``max_epochs``
        (1 where the epochs are not bounded)."""
        if max_epochs is None or max_epochs < 1:
            return 1
        return max(1, -(-max_epochs // cls.MAX_DRAWINGS))

    def every(self, trainer) -> int:
        """The period in epochs, ``auto`` resolved from ``trainer.max_epochs``."""
        if self.every_n_epochs == "auto":
            return self.auto_every(trainer.max_epochs)
        return self.every_n_epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epochs = trainer.current_epoch + 1
        if epochs % self.every(trainer) == 0 or epochs == trainer.max_epochs:
            self.draw(trainer, pl_module, f"epoch{epochs:03d}")

    def on_train_end(self, trainer, pl_module) -> None:
        if self._drawn_step != trainer.global_step:
            self.draw(trainer, pl_module, "final")

    @rank_zero_only
    def draw(self, trainer, pl_module, label: str) -> None:
        self._drawn_step = trainer.global_step
        datamodule = trainer.datamodule
        datamodule.setup("validate")
        x = next(iter(datamodule.val_dataloader())).to(pl_module.device)
        interval = getattr(pl_module.bound, "interval", None)
        drawn = figures.draw(pl_module.vae, x, datamodule.image_shape, self.num_images,
                             self.num_prior_samples, delta=getattr(interval, "delta", None))
        folder = Path(trainer.default_root_dir) / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, fig in drawn.figures.items():
            paths[name] = write_atomic(folder / f"{name}_{label}.png",
                                       lambda file, fig=fig: fig.savefig(file, format="png",
                                                                         dpi=100))
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                for name, path in paths.items():
                    logger.log_image(f"figures/{name}", [str(path)], step=step)
                if drawn.log10_std is not None:
                    histogram = wandb.Histogram(drawn.log10_std.numpy(), num_bins=128)
                    logger.experiment.log({"decoder/log10_std": histogram,
                                           "trainer/global_step": step})
            elif isinstance(logger, TensorBoardLogger):
                for name, fig in drawn.figures.items():
                    logger.experiment.add_figure(f"figures/{name}", fig, step, close=False)
                if drawn.log10_std is not None:
                    logger.experiment.add_histogram("decoder/log10_std", drawn.log10_std, step)
