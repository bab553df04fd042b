"""MIWAE (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better").

MIWAE_{M,K} = (1/M) sum_m log (1/K) sum_k exp(log p(x | z_{m,k}) + log w_{m,k}):
the average of M independent IWAE_K estimates. M = 1 is IWAE_K; K = 1 the ELBO with M samples.
"""

from intvae.bounds.base import (
    Bound,
    BoundResult,
    log_weights,
    mean_over_samples_logsumexp,
    register,
)
from intvae.checks import positive_int


@register("miwae")
class MIWAE(Bound):
    """MIWAE with M = ``outer_samples`` groups of K = ``samples`` importance samples."""

    single_sample = "ELBO"

    def __init__(self, outer_samples: int = 5, samples: int = 5):
        super().__init__(samples)
        self.outer_samples = positive_int("outer_samples", outer_samples)

    def __call__(self, vae, x) -> BoundResult:
        m, k = self.outer_samples, self.samples
        s = self.draw(vae, x, samples=m * k)
        data, weights = log_weights(s, x)
        grouped = weights.reshape(m, k, -1).transpose(0, 1)  # (K, M, B)
        value = mean_over_samples_logsumexp(grouped).mean(0)
        return BoundResult(value, data.mean(0), s.kl, weights, s.likelihood)
