"""The importance-weighted autoencoder bound (Burda, Grosse and Salakhutdinov 2016).

IWAE_K = log (1/K) sum_k exp(log p(x | z_k) + log w_k),  z_k ~ q(z | x).
With K = 1 it is the single-sample ELBO; it increases with K towards log p(x).
"""

from intvae.bounds.base import (
    Bound,
    BoundResult,
    log_weights,
    mean_over_samples_logsumexp,
    register,
)


@register("iwae")
class IWAE(Bound):
    """IWAE with K = ``samples`` importance samples."""

    single_sample = "ELBO"

    def __init__(self, samples: int = 5):
        super().__init__(samples)

    def __call__(self, vae, x) -> BoundResult:
        s = self.draw(vae, x)
        data, weights = log_weights(s, x)
        return BoundResult(mean_over_samples_logsumexp(weights), data.mean(0), s.kl,
                           weights, s.likelihood)
