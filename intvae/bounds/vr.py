"""The Renyi variational bound VR-alpha (Li and Turner 2016), ``docs/math.md#density-bounds``.

VR_alpha = (1/beta) [logsumexp_k(beta (log p(x | z_k) + log w_k)) - log K],  beta = 1 - alpha.
alpha = 0 is the IWAE bound; alpha -> 1 the ELBO; alpha -> -infinity VR-max. For alpha < 0 the
estimate is an upper bound of the Renyi divergence objective, as in the original paper.
"""

from intvae.bounds.base import (
    Bound,
    BoundResult,
    log_weights,
    mean_over_samples_logsumexp,
    register,
)
from intvae.checks import finite_float, require


@register("vr")
class VR(Bound):
    """VR bound of order ``alpha`` (any finite alpha other than 1) with K = ``samples``."""

    single_sample = "ELBO"

    def __init__(self, alpha: float, samples: int = 5):
        super().__init__(samples)
        allowed = "a finite number other than 1 (alpha = 1 is the ELBO: use bound=elbo)"
        self.alpha = finite_float("alpha", alpha, allowed)
        require("alpha", alpha, self.alpha != 1, allowed)

    def __call__(self, vae, x) -> BoundResult:
        s = self.draw(vae, x)
        data, weights = log_weights(s, x)
        beta = 1.0 - self.alpha
        value = mean_over_samples_logsumexp(beta * weights) / beta
        return BoundResult(value, data.mean(0), s.kl, weights, s.likelihood)
