"""The epoch metrics of the LightningModule, accumulated on the device with no host
synchronization per step: the mean of the finite values of a bound, and the decoder's
standard-deviation statistics (smallest, median, fraction below 1e-3) whose collapse the
integral bounds prevent (paper figure 3)."""

import math

import torch
from torchmetrics import MeanMetric, Metric


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
