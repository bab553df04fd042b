"""The integral Renyi bound (IRELBO): paper eq. (6)-(7), ``docs/math.md#the-irelbo``.

For alpha in (0, 1) or (1, infinity), beta = 1 - alpha, and K samples z_k ~ q(z | x):

IRELBO = (1/beta) [logsumexp_k(beta log w_k + log J_beta(z_k)) - log K] - (alpha/beta) log |I|,
J_beta(z) = prod_d int_{lo_d}^{hi_d} N(x'; mu_d(z), sigma_d(z)^2)^beta dx'.

It is a lower bound on log P(I): the Renyi bound (Li and Turner 2016) holds for every x' in I,
and Hoelder's (Jensen's) inequality over the uniform distribution on I gives the formula. For
beta > 0 the per-pixel integral is a Gaussian CDF difference; for beta < 0 (alpha > 1, the
paper's setting) the integrand grows and needs the Dawson function. As alpha -> 0 it becomes the
IW-IELBO. The paper trains it with one sample.
"""

from intvae.bounds.base import Bound, BoundResult, mean_over_samples_logsumexp, register
from intvae.checks import finite_float, require
from intvae.likelihoods import POWER


@register("irelbo")
class IRELBO(Bound):
    """IRELBO with Renyi order ``alpha`` and K = ``samples``."""

    requires = POWER

    def __init__(self, interval, alpha: float, samples: int = 1):
        super().__init__(samples)
        allowed = ("a finite number > 0 other than 1 (as alpha -> 1 the bound tends to one "
                   "below the IELBO: use bound=ielbo)")
        self.alpha = finite_float("alpha", alpha, allowed)
        require("alpha", alpha, self.alpha > 0 and self.alpha != 1, allowed)
        require("interval", interval, interval.finite,
                "a finite interval policy such as fixed (|I| must be finite)")
        self.interval = interval

    def __call__(self, vae, x) -> BoundResult:
        s = self.draw(vae, x)
        beta = 1.0 - self.alpha
        lo, hi = self.interval(x)
        log_j = s.likelihood.log_power_integral(lo, hi, beta).sum(-1)
        log_volume = self.interval.log_width(x).sum(-1)
        data = (log_j - self.alpha * log_volume) / beta
        log_weights = data + s.log_w
        value = mean_over_samples_logsumexp(beta * log_weights) / beta
        return BoundResult(value, data.mean(0), s.kl, log_weights, s.likelihood)
