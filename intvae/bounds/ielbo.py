"""The integral ELBO (IELBO): paper eq. (2), ``docs/math.md#the-ielbo``.

IELBO = E_q[log P(I | z)] - KL(q(z | x) || p(z)),  log P(I | z) = sum_d log(Phi(b_d) - Phi(a_d)),
a lower bound on log P(I) = log int_I p(x') dx' by Jensen's inequality, with q fixed at the
observed x. "Normalized" (the authors' code): each pixel's probability is divided by its
interval width, log(P_d / |I_d| + tolerance), putting the value on a density ELBO's scale; with
tolerance = 0 this changes no gradient. The authors' code used tolerance 1e-7, which caps each
pixel's loss near -log(1e-7) = 16 nats.
"""

import math

import torch

from intvae.bounds.base import Bound, BoundResult, register
from intvae.checks import finite_float, require
from intvae.likelihoods import INTERVAL


@register("ielbo")
class IELBO(Bound):
    """IELBO with ``samples`` draws of z averaged in the data term."""

    requires = INTERVAL

    def __init__(self, interval, samples: int = 1, normalized: bool = False,
                 tolerance: float = 0.0):
        super().__init__(samples)
        self.interval = interval
        self.normalized = bool(normalized)
        self.tolerance = finite_float("tolerance", tolerance, "a finite number >= 0")
        require("tolerance", tolerance, self.tolerance >= 0, "a finite number >= 0")
        require("normalized", normalized, not (normalized and not interval.finite),
                "false with the unbounded bins intervals (their end bins have no width)")

    def pixel_terms(self, likelihood, x) -> torch.Tensor:
        """Per-pixel data terms log(P_d [/ |I_d|] + tolerance), shape (K, B, D)."""
        lo, hi = self.interval(x)
        terms = likelihood.log_interval_prob(lo, hi)
        if self.normalized:
            terms = terms - self.interval.log_width(x)
        if self.tolerance > 0:
            terms = torch.logaddexp(terms, torch.full_like(terms, math.log(self.tolerance)))
        return terms

    def __call__(self, vae, x) -> BoundResult:
        s = self.draw(vae, x)
        recon = self.pixel_terms(s.likelihood, x).sum(-1).mean(0)
        return BoundResult(recon - s.kl, recon, s.kl, None, s.likelihood)
