"""The LightningModule: a VAE trained by maximizing one bound of the registry.

Training maximizes the mean over the batch of the per-example bound (``intvae.bounds``, e.g.
the IELBO of the integral bounds paper, eq. 2) with Adam; the authors used learning rate 1e-4
and gradient clipping by global norm 3 (``docs/references.md#the-authors-settings``). Every
stage (train, val, test) logs per epoch, in nats per image, ``<stage>/bound``,
``<stage>/reconstruction`` and ``<stage>/kl``, and for decoders with a standard deviation
(gaussian, logit_normal) ``<stage>/std_min``, ``<stage>/std_median`` and
``<stage>/std_below_1e-3``: the collapse of the decoder's standard deviations is what the
integral bounds prevent (paper figure 3).

No metric update synchronizes with the host: values are accumulated on the device and read and
logged once per epoch (no per-step call into Lightning's logging, whose cost grows with the
number of logged keys).
"""

import logging
from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from torch import nn

from intvae.app.metrics import DecoderStdStats, FiniteMean
from intvae.networks import VAE

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")
QUANTITIES = ("bound", "reconstruction", "kl")


def bound_tensors(bound, vae, x: torch.Tensor) -> tuple:
    """(bound, reconstruction, kl, decoder scale or None) of ``bound(vae, x)``: only tensors, so
    that ``torch.compile`` can return them."""
    result = bound(vae, x)
    return (result.bound, result.reconstruction, result.kl,
            getattr(result.likelihood, "scale", None))


FUSED_PRECISIONS = ("32-true", "64-true")
"""The trainer precisions under which Adam is built fused: those without autocast's gradient
handling, where Lightning clips a fused optimizer's gradients like any other's."""


def fused_option(optimizer: Callable, device: torch.device, precision: str = "32-true") -> dict:
    """``{"fused": True}`` for a partial of Adam or AdamW without its own ``fused`` (or
    ``foreach``) setting, on a device with fused kernels (CPU, CUDA), under a trainer
    ``precision`` of ``FUSED_PRECISIONS``; else ``{}``.

    Under ``16-mixed`` and ``bf16-mixed`` Lightning refuses to clip the gradients of a fused
    optimizer (``MixedPrecision.clip_gradients`` refuses every optimizer that can unscale a
    ``GradScaler``'s gradients in its own step, after the clipping would have seen them still
    scaled), and the authors' clipping by norm 3 is the default; there, and under
    ``16-true``/``bf16-true``, Adam is the plain one and the non-finite guard skips a step by
    dropping its gradients."""
    func = getattr(optimizer, "func", None)
    keywords = getattr(optimizer, "keywords", {}) or {}
    if (func in (torch.optim.Adam, torch.optim.AdamW) and "fused" not in keywords
            and "foreach" not in keywords and device.type in ("cpu", "cuda")
            and str(precision) in FUSED_PRECISIONS):
        return {"fused": True}
    return {}


class VAEModule(L.LightningModule):
    """Trains ``vae`` on the objective -mean(bound(vae, x)).

    Args:
        vae: encoder and decoder (``intvae.networks.VAE``).
        bound: a bound of the registry (``intvae.bounds``), called as ``bound(vae, x)``.
        optimizer: ``params -> torch.optim.Optimizer`` (``conf/train.yaml: optimizer``).
        hparams: what to record as hyperparameters (the run's resolved config, with the bound
            name, delta, alpha and samples at the top); stored in every checkpoint, where
            ``intvae.evaluate`` reads it to rebuild the model.
        noise: applied to each training batch (``intvae.noise``); None: clean data.
        compile_step: run the whole bound (encoder, sampling, decoder, likelihood, bound) and its
            backward through ``torch.compile`` (``benchmarks/training.py`` measures it: on a
            CPU the ELBO's step takes about 0.65 of the eager time, the IELBO's about 0.9; the
            first steps pay the compilation, and shapes that change recompile).
    """

    def __init__(self, vae: VAE, bound, optimizer: partial, hparams: dict | None = None,
                 noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 compile_step: bool = False):
        super().__init__()
        self.noise = noise
        self.compile_step = compile_step
        self._bound_step = None  # the torch.compile'd bound, built on first use
        self.save_hyperparameters(hparams or {})
        self.vae = vae
        self.bound = bound
        self.optimizer = optimizer
        # Keys "<stage>_<quantity>": a ModuleDict key "train" would clash with Module.train.
        self.metrics = nn.ModuleDict({f"{stage}_{q}": FiniteMean()
                                      for stage in STAGES for q in QUANTITIES})
        self.std_stats = nn.ModuleDict({f"{stage}_std": DecoderStdStats() for stage in STAGES})
        self.last_loss: torch.Tensor | None = None  # read by the non-finite guard

    def model_step(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        """The bound on batch ``x``; accumulates its epoch means (logged at the epoch's end under
        ``<stage>/<quantity>``: no per-step call into Lightning's logging)."""
        bound, *quantities, scale = self._bound(x)
        for quantity, value in zip(QUANTITIES, (bound, *quantities), strict=True):
            self.metrics[f"{stage}_{quantity}"].update(value.detach())
        if scale is not None:
            self.std_stats[f"{stage}_std"].update(scale)
        return bound

    def _bound(self, x: torch.Tensor) -> tuple:
        """(bound, reconstruction, kl, decoder scale or None) of batch ``x``."""
        if not self.compile_step:
            return bound_tensors(self.bound, self.vae, x)
        if self._bound_step is None:
            self._bound_step = torch.compile(bound_tensors, dynamic=False)
        return self._bound_step(self.bound, self.vae, x)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.noise is not None:
            x = self.noise(x)
        loss = -self.model_step(x, "train").mean()
        self.last_loss = loss.detach()
        return loss

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self.model_step(x, "val")

    def test_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self.model_step(x, "test")

    def _log_epoch(self, stage: str) -> None:
        """Log the epoch's means and decoder statistics of ``stage`` (computed over all ranks)
        and reset them."""
        values = {}
        for quantity in QUANTITIES:
            metric = self.metrics[f"{stage}_{quantity}"]
            if metric.update_called:
                values[f"{stage}/{quantity}"] = metric.compute()
            metric.reset()
        stats = self.std_stats[f"{stage}_std"]
        if stats.update_called:
            values.update({f"{stage}/{k}": v for k, v in stats.compute().items()})
        stats.reset()
        if values:
            self.log_dict(values)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_fit_start(self) -> None:
        """Under DDP every rank was seeded alike: offset the sampling of z by the rank, or all
        ranks would draw the same noise
        (``docs/configuration.md#multi-gpu-training-of-one-run-ddp``)."""
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """``optimizer(params)``; Adam and AdamW in their fused form (one kernel for all
        parameters, and a step the non-finite guard can skip on the device without a host
        synchronization) under the trainer's precision 32-true or 64-true, unless the config
        says ``fused`` itself (``fused_option``: not under mixed precision, where Lightning
        cannot clip a fused optimizer's gradients)."""
        precision = self._trainer.precision if self._trainer is not None else "32-true"
        return self.optimizer(self.parameters(),
                              **fused_option(self.optimizer, self.device, precision))
