"""Interval policies: which interval I(x) = prod_d [lo_d, hi_d] each observed pixel stands for.

The integral bounds replace the density p(x | z) by the probability P(I(x) | z) of an interval
around the observation (paper section 3.1; ``docs/math.md#interval-likelihood-of-one-pixel``
and ``docs/math.md#discrete-likelihood-and-bits-per-dimension``).
"""

import math

import torch

from intvae.checks import finite_float, integer, require


class Fixed:
    """I(x) = [x - delta, x + delta], the paper's choice (delta is the half-width)."""

    finite = True

    def __init__(self, delta: float):
        self.delta = finite_float("delta", delta, "a finite number > 0")
        require("delta", delta, self.delta > 0, "a finite number > 0")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x - self.delta, x + self.delta

    def log_width(self, x: torch.Tensor) -> torch.Tensor:
        """log(hi - lo) for each pixel."""
        return torch.full_like(x, math.log(2.0 * self.delta))

    def is_discrete(self, levels: int, eps: float) -> bool:
        """True when the intervals of neighbouring levels do not overlap
        (``docs/math.md#discrete-likelihood-and-bits-per-dimension``)."""
        return 2.0 * self.delta <= (1.0 - 2.0 * eps) / (levels - 1)

    def __repr__(self) -> str:
        return f"Fixed(delta={self.delta})"


class Bins:
    """The quantization bin that contains the pixel: an exact discrete likelihood.

    Pixels hold ``levels`` equally spaced values v_k = eps + (1 - 2 eps) k / (levels - 1)
    (the data rescaled to [eps, 1 - eps]). Level k owns [v_k - h, v_k + h] with h half the
    spacing, except that the lowest bin extends to -inf and the highest to +inf, so the
    probabilities of all levels sum to one.
    """

    finite = False

    def __init__(self, levels: int = 256, eps: float = 0.0):
        self.levels = integer("levels", levels, 2)
        self.eps = finite_float("eps", eps, "a number in [0, 0.5)")
        require("eps", eps, 0.0 <= self.eps < 0.5, "a number in [0, 0.5)")
        self.spacing = (1.0 - 2.0 * self.eps) / (self.levels - 1)

    def level(self, x: torch.Tensor) -> torch.Tensor:
        """The level index k of each pixel (nearest level)."""
        return torch.round((x - self.eps) / self.spacing).clamp(0, self.levels - 1)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.level(x)
        lo = self.eps + (k - 0.5) * self.spacing
        hi = self.eps + (k + 0.5) * self.spacing
        lo = torch.where(k == 0, -math.inf, lo)
        hi = torch.where(k == self.levels - 1, math.inf, hi)
        return lo, hi

    def log_width(self, x: torch.Tensor) -> torch.Tensor:
        """log of the nominal bin width (the spacing), also for the two unbounded end bins."""
        return torch.full_like(x, math.log(self.spacing))

    def is_discrete(self, levels: int, eps: float) -> bool:
        return True

    def __repr__(self) -> str:
        return f"Bins(levels={self.levels}, eps={self.eps})"
