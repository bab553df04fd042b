"""VR-max (Li and Turner 2016): the alpha -> -infinity limit of the Renyi bound.

VR-max = max_k (log p(x | z_k) + log w_k): the gradient flows through the largest weight only.
Not a lower bound on log p(x) in general (it can exceed it for small K); reported as trained.
"""

from intvae.bounds.base import Bound, BoundResult, log_weights, register


@register("vr_max")
class VRMax(Bound):
    """VR-max with K = ``samples``."""

    single_sample = "ELBO"

    def __init__(self, samples: int = 5):
        super().__init__(samples)

    def __call__(self, vae, x) -> BoundResult:
        s = self.draw(vae, x)
        data, weights = log_weights(s, x)
        return BoundResult(weights.max(0).values, data.mean(0), s.kl, weights,
                           s.likelihood)
