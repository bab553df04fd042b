"""The LightningModule: a VAE trained by maximizing one bound of the registry.

Training maximizes the mean over the batch of the per-example bound (``intvae.bounds``, e.g.
the IELBO of the integral bounds paper, eq. 2) with Adam; the authors used learning rate 1e-4
and gradient clipping by global norm 3 (``../shared/spec/references.md``). Every stage (train,
val, test) logs per epoch, in nats per image, ``<stage>/bound``, ``<stage>/reconstruction`` and
``<stage>/kl``, and for decoders with a standard deviation (gaussian, logit_normal)
``<stage>/std_min``, ``<stage>/std_median`` and ``<stage>/std_below_1e-3``: the collapse of the
decoder's standard deviations is what the integral bounds prevent (paper figure 3).

No metric update synchronizes with the host: values are accumulated on the device and read
once per epoch.
"""

import logging
import math
from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MeanMetric, Metric

from intvae.config import describe
from intvae.networks import VAE
from intvae.numerics import compile_kernels

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")
QUANTITIES = ("bound", "reconstruction", "kl")


def build_vae(cfg: DictConfig, num_pixels: int) -> VAE:
    """The VAE of ``cfg.model`` with the likelihood head of ``cfg.likelihood``."""
    return instantiate(cfg.model, num_pixels=num_pixels, head=instantiate(cfg.likelihood))


def select_kernels(compiled: bool, probe: Callable[[], object]) -> bool:
    """Run ``probe()`` (a small forward pass) with the eager interval kernels, letting its
    errors through; then, if ``compiled``, switch to the ``torch.compile``d kernels
    (``intvae.numerics.compile_kernels``: about 3 times faster on a CPU) and run it again,
    which compiles them. If that fails, fall back to the eager kernels with a warning. Returns
    whether the compiled kernels are in use."""
    compile_kernels(False)
    probe()
    if not compiled:
        return False
    compile_kernels(True)
    try:
        probe()
    except Exception as error:  # no C++ compiler, unsupported platform, ...
        log.warning("torch.compile of the interval kernels failed, using the eager ones: %s",
                    describe(error))
        compile_kernels(False)
        return False
    return True


class FiniteMean(MeanMetric):
    """Mean of the finite values only, without the host synchronization of ``MeanMetric``'s
    NaN checks: non-finite values get weight 0 (a step the non-finite guard skipped does not
    turn an epoch's mean into NaN). An epoch with no finite value gives NaN."""

    def __init__(self, **kwargs):
        super().__init__(nan_strategy="disable", **kwargs)

    def update(self, value: torch.Tensor) -> None:
        finite = torch.isfinite(value)
        self.mean_value += torch.where(finite, value, 0.0).sum().to(self.mean_value.dtype)
        self.weight += finite.sum().to(self.weight.dtype)


class DecoderStdStats(Metric):
    """Minimum, median and fraction below ``threshold`` of decoder standard deviations.

    The median is read from a histogram of log10 sigma with ``bins_per_decade`` bins per decade
    over [1e-40, 1e40] (float32 scales lie in [1.2e-38, 8.5e37]), linearly interpolated within
    its bin; the minimum and the fraction are exact.
    """

    full_state_update = False
    LOW, HIGH = -40.0, 40.0

    def __init__(self, threshold: float = 1e-3, bins_per_decade: int = 20, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        self.bins_per_decade = bins_per_decade
        bins = int((self.HIGH - self.LOW) * bins_per_decade)
        self.add_state("counts", torch.zeros(bins, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("minimum", torch.tensor(math.inf), dist_reduce_fx="min")
        self.add_state("below", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scale: torch.Tensor) -> None:
        scale = scale.detach().flatten()
        log10 = torch.nan_to_num(scale.float().log10(), nan=self.HIGH)
        index = ((log10 - self.LOW) * self.bins_per_decade).floor()
        index = index.clamp(0, self.counts.numel() - 1).long()
        self.counts += torch.bincount(index, minlength=self.counts.numel())
        self.minimum = torch.minimum(self.minimum, scale.min().float())
        self.below += (scale < self.threshold).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.counts.sum()
        cumulative = self.counts.cumsum(0)
        half = total.float() / 2
        k = torch.searchsorted(cumulative.float(), half).clamp(max=self.counts.numel() - 1)
        before = torch.where(k > 0, cumulative[k - 1], 0).float()
        fraction = (half - before) / self.counts[k].clamp(min=1).float()
        median = 10 ** (self.LOW + (k.float() + fraction) / self.bins_per_decade)
        return {"std_min": self.minimum, "std_median": median,
                "std_below_1e-3": self.below.float() / total.clamp(min=1).float()}


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
    """

    def __init__(self, vae: VAE, bound, optimizer: partial, hparams: dict | None = None,
                 noise: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.noise = noise
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
        """The bound on batch ``x``; logs its epoch means under ``<stage>/<quantity>``."""
        result = self.bound(self.vae, x)
        for quantity in QUANTITIES:
            metric = self.metrics[f"{stage}_{quantity}"]
            metric.update(getattr(result, quantity).detach())
            self.log(f"{stage}/{quantity}", metric, on_step=False, on_epoch=True,
                     batch_size=len(x))
        scale = getattr(result.likelihood, "scale", None)
        if scale is not None:
            self.std_stats[f"{stage}_std"].update(scale)
        return result.bound

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

    def _log_std_stats(self, stage: str) -> None:
        stats = self.std_stats[f"{stage}_std"]
        if stats.update_called:
            self.log_dict({f"{stage}/{k}": v for k, v in stats.compute().items()})
        stats.reset()

    def on_train_epoch_end(self) -> None:
        self._log_std_stats("train")

    def on_validation_epoch_end(self) -> None:
        self._log_std_stats("val")

    def on_test_epoch_end(self) -> None:
        self._log_std_stats("test")

    def on_fit_start(self) -> None:
        """Under DDP every rank was seeded alike: offset the sampling of z by the rank, or all
        ranks would draw the same noise (``ecosystem-pitfalls.md`` section 7)."""
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer(self.parameters())
