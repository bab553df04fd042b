"""The ELBO (Kingma and Welling 2014), the density baseline that fails on high-contrast data.

ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z)), estimated with K samples of z and the KL in
closed form. Each Gaussian pixel contributes -log sigma - (x - mu)^2 / (2 sigma^2) - log(2 pi)/2,
which grows without limit as sigma -> 0 (``docs/math.md#density-bounds``).
"""

from intvae.bounds.base import Bound, BoundResult, register


@register("elbo")
class ELBO(Bound):
    """ELBO with ``samples`` draws of z averaged in the data term."""

    def __call__(self, vae, x) -> BoundResult:
        s = self.draw(vae, x)
        recon = s.likelihood.log_prob(x).sum(-1).mean(0)
        return BoundResult(recon - s.kl, recon, s.kl, None, s.likelihood)
