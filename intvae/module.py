"""The LightningModule: a VAE trained by maximizing one bound of the registry.

Training maximizes the mean over the batch of the per-example bound (``intvae.bounds``, e.g.
the IELBO of the integral bounds paper, eq. 2) with Adam; the authors used learning rate 1e-4
and gradient clipping by global norm 3 (``../shared/spec/references.md``). Every stage (train,
val, test) logs per epoch, in nats per image, ``<stage>/bound``, ``<stage>/reconstruction`` and
``<stage>/kl``, and for decoders with a standard deviation (gaussian, logit_normal)
``<stage>/std_min``, ``<stage>/std_median`` and ``<stage>/std_below_1e-3``: the collapse of the
decoder's standard deviations is what the integral bounds prevent (paper figure 3).

No metric update synchronizes with the host: values are accumulated on the device and read and
logged once per epoch (no per-step call into Lightning's logging, whose cost grows with the
number of logged keys).
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
    (``intvae.numerics.compile_kernels``: 2 to 4 times faster on a CPU) and run it again,
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


def bound_tensors(bound, vae, x: torch.Tensor) -> tuple:
    """(bound, reconstruction, kl, decoder scale or None) of ``bound(vae, x)``: only tensors, so
    that ``torch.compile`` can return them."""
    result = bound(vae, x)
    return (result.bound, result.reconstruction, result.kl,
            getattr(result.likelihood, "scale", None))


def fused_option(optimizer: Callable, device: torch.device) -> dict:
    """``{"fused": True}`` for a partial of Adam or AdamW without its own ``fused`` (or
    ``foreach``) setting, on a device with fused kernels (CPU, CUDA); else ``{}``."""
    func = getattr(optimizer, "func", None)
    keywords = getattr(optimizer, "keywords", {}) or {}
    if (func in (torch.optim.Adam, torch.optim.AdamW) and "fused" not in keywords
            and "foreach" not in keywords and device.type in ("cpu", "cuda")):
        return {"fused": True}
    return {}


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

    The median is read from a histogram of the float32 bit patterns of sigma (8 bins per
    factor of 2, i.e. bins of 0.038 in log10, from the smallest subnormal to infinity, with
    ``threshold`` on a bin edge), linearly interpolated within its bin; the minimum and the
    fraction below ``threshold`` are exact. Integer arithmetic on the bits makes an update a
    few passes over the scales, with no logarithm and no host synchronization.
    """

    full_state_update = False
    SHIFT = 20  # bits below the bin: 3 mantissa bits stay, 8 bins per octave
    BINS = 2**31 >> SHIFT  # every non-negative float32, nan and inf in the last

    def __init__(self, threshold: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        bits = int(torch.tensor(threshold, dtype=torch.float32).view(torch.int32))
        self._offset = bits & ((1 << self.SHIFT) - 1)  # puts the threshold on a bin edge
        self._below_bins = bits >> self.SHIFT  # bins below the threshold
        self.add_state("counts", torch.zeros(self.BINS, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("minimum", torch.tensor(math.inf), dist_reduce_fx="min")

    def update(self, scale: torch.Tensor) -> None:
        scale = scale.detach().flatten()
        index = scale.float().view(torch.int32) - self._offset  # sigma > 0: bits >= 0
        index = index.clamp_(min=0).bitwise_right_shift_(self.SHIFT)  # < BINS
        if index.is_cuda:  # bincount would size its output from the data: a device sync
            one = torch.ones((), dtype=torch.long, device=index.device)
            self.counts.scatter_add_(0, index.long(), one.expand(index.shape))
        else:
            self.counts += torch.bincount(index, minlength=self.BINS)
        self.minimum = torch.minimum(self.minimum, scale.min().float())

    def _edge(self, position: torch.Tensor) -> torch.Tensor:
        """The float32 value at a (fractional) bin position."""
        bits = (position * (1 << self.SHIFT)).round().long() + self._offset
        return bits.clamp(0, 0x7F7FFFFF).to(torch.int32).view(torch.float32)

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.counts.sum()
        cumulative = self.counts.cumsum(0)
        half = total.float() / 2
        k = torch.searchsorted(cumulative.float(), half).clamp(max=self.counts.numel() - 1)
        before = torch.where(k > 0, cumulative[k - 1], 0).float()
        fraction = (half - before) / self.counts[k].clamp(min=1).float()
        below = cumulative[self._below_bins - 1] if self._below_bins > 0 else total * 0
        return {"std_min": self.minimum, "std_median": self._edge(k.double() + fraction),
                "std_below_1e-3": below.float() / total.clamp(min=1).float()}


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
        ranks would draw the same noise (``ecosystem-pitfalls.md`` section 7)."""
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """``optimizer(params)``; Adam and AdamW in their fused form (one kernel for all
        parameters, and a step the non-finite guard can skip on the device without a host
        synchronization) unless the config says ``fused`` itself."""
        return self.optimizer(self.parameters(), **fused_option(self.optimizer, self.device))
