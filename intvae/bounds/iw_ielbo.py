"""The importance-weighted IELBO, ``docs/math.md#the-importance-weighted-ielbo``.

IW-IELBO_K = log (1/K) sum_k exp(log P(I | z_k) + log w_k),  z_k ~ q(z | x),
the IWAE construction (Burda, Grosse and Salakhutdinov 2016) applied to the interval
likelihood of the integral bounds paper. It increases with K, equals the single-sample IELBO
for K = 1, and tends to log P(I) as K -> infinity: with large K (5000) it is the evaluation
metric "interval log-likelihood".
"""

from intvae.bounds.base import (
    Bound,
    BoundResult,
    log_weights,
    mean_over_samples_logsumexp,
    register,
)
from intvae.likelihoods import INTERVAL


@register("iw_ielbo")
class IWIELBO(Bound):
    """IW-IELBO with K = ``samples`` importance samples."""

    requires = INTERVAL
    single_sample = "IELBO"

    def __init__(self, interval, samples: int = 5):
        super().__init__(samples)
        self.interval = interval

    def __call__(self, vae, x) -> BoundResult:
        s = self.draw(vae, x)
        data, weights = log_weights(s, x, self.interval)
        return BoundResult(mean_over_samples_logsumexp(weights), data.mean(0), s.kl, weights,
                           s.likelihood)
