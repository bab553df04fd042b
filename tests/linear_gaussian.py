"""A linear-Gaussian "VAE" whose interval probabilities and densities are known exactly.

Prior z ~ N(0, 1) (one latent dimension), decoder x_d | z ~ N(w_d z + b_d, s_d^2) for d = 1..D.
The encoder returns a fixed-form Normal q(z | x): the exact posterior of the observed x, moved
by ``shift`` posterior standard deviations and widened by ``widen`` (shift = 0, widen = 1 is the
exact posterior; anything else is a deliberately mismatched q).

The reference functions below are written with numpy / scipy only (no code from ``intvae``):
they are the independent side of the comparisons in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import integrate, special, stats
from torch import distributions as dist

from intvae.likelihoods import Gaussian

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)


@dataclass
class LinearGaussianVAE:
    """The linear-Gaussian model, callable by the bounds as ``bound(vae, x)``."""

    w: np.ndarray
    b: np.ndarray
    s: np.ndarray
    shift: float = 0.0
    widen: float = 1.0
    dtype: torch.dtype = torch.float64
    last_z: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        self.w = np.asarray(self.w, dtype=float)
        self.b = np.asarray(self.b, dtype=float)
        self.s = np.asarray(self.s, dtype=float)
        assert self.w.shape == self.b.shape == self.s.shape and self.w.ndim == 1

    @property
    def num_pixels(self) -> int:
        return self.w.shape[0]

    # ---------------------------------------------------------------- the "networks"
    def q_params(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of q(z | x) for x of shape (..., D)."""
        precision = 1.0 + np.sum(self.w**2 / self.s**2)
        sd = 1.0 / math.sqrt(precision)
        mean = np.sum(self.w * (np.asarray(x) - self.b) / self.s**2, axis=-1) / precision
        return mean + self.shift * sd, np.full_like(mean, self.widen * sd)

    def encode(self, x: torch.Tensor) -> dist.Normal:
        mean, sd = self.q_params(x.detach().cpu().numpy().astype(float))
        loc = torch.as_tensor(mean, dtype=self.dtype).reshape(-1, 1)
        scale = torch.as_tensor(sd, dtype=self.dtype).reshape(-1, 1)
        return dist.Normal(loc, scale)

    def decode(self, z: torch.Tensor) -> Gaussian:
        """z (K, B, 1) -> Gaussian with loc, scale of shape (K, B, D)."""
        self.last_z = z.detach().clone()
        w = torch.as_tensor(self.w, dtype=self.dtype)
        b = torch.as_tensor(self.b, dtype=self.dtype)
        s = torch.as_tensor(self.s, dtype=self.dtype)
        loc = z * w + b
        return Gaussian(loc, s.expand_as(loc))

    # ---------------------------------------------------------------- exact references
    def log_marginal_density(self, x: np.ndarray) -> float:
        """log p(x): x ~ N(b, w w^T + diag s^2)."""
        cov = np.outer(self.w, self.w) + np.diag(self.s**2)
        return float(stats.multivariate_normal(self.b, cov).logpdf(x))

    def log_interval_prob_given_z(self, z: np.ndarray, lo, hi) -> np.ndarray:
        """log P(lo < X < hi | z) summed over pixels, for z of any shape."""
        z = np.asarray(z, dtype=float)[..., None]
        return log_normal_interval(lo, hi, self.w * z + self.b, self.s).sum(-1)

    def log_interval_prob(self, lo, hi) -> float:
        """log P(I), I = prod_d [lo_d, hi_d]: closed form for D = 1, quadrature over z else."""
        lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        if self.num_pixels == 1:
            marginal_sd = math.sqrt(self.s[0] ** 2 + self.w[0] ** 2)
            return float(log_normal_interval(lo[0], hi[0], self.b[0], marginal_sd))
        return self.log_interval_prob_quad(lo, hi)

    def log_interval_prob_quad(self, lo, hi) -> float:
        """log int N(z; 0, 1) prod_d P(lo_d < X_d < hi_d | z) dz by adaptive quadrature."""
        lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)

        def log_integrand(z):
            return stats.norm.logpdf(z) + self.log_interval_prob_given_z(z, lo, hi)

        # Scale by the integrand's maximum (located on a grid) and tell quad where it is;
        # the prior's mass beyond |z| = 30 is below 1e-190.
        grid = np.linspace(-30.0, 30.0, 6001)
        log_values = log_integrand(grid)
        peak = float(np.max(log_values))
        z_peak = float(grid[np.argmax(log_values)])
        value, error = integrate.quad(lambda z: math.exp(log_integrand(z) - peak), -30.0, 30.0,
                                      points=[z_peak], limit=500, epsabs=0.0, epsrel=1e-12)
        assert error < 1e-9 * value
        return peak + math.log(value)

    def kl(self, x: np.ndarray) -> float:
        """KL(q(z | x) || N(0, 1)) in closed form."""
        m, sd = self.q_params(x)
        return float(-np.log(sd) + 0.5 * (sd**2 + m**2) - 0.5)

    def expect_q(self, x: np.ndarray, f) -> float:
        """E_{q(z|x)}[f(z)] by adaptive quadrature (f scalar -> scalar)."""
        m, sd = (float(v) for v in self.q_params(x))
        value, error = integrate.quad(lambda z: math.exp(_log_normal_pdf(z, m, sd)) * f(z),
                                      m - 14.0 * sd, m + 14.0 * sd, points=[m], limit=200,
                                      epsabs=1e-13, epsrel=1e-11)
        assert error < 1e-8 * max(1.0, abs(value))
        return value

    def ielbo(self, x: np.ndarray, lo, hi) -> float:
        """E_q[log P(I | z)] - KL, the exact IELBO."""
        return self.expect_q(x, lambda z: float(self.log_interval_prob_given_z(z, lo, hi))) \
            - self.kl(x)

    def log_power_integral_given_z(self, z: float, lo, hi, power: float) -> float:
        """log J_power(z) = sum_d log int_lo^hi N(x'; w_d z + b_d, s_d^2)^power dx' by
        64-point Gauss-Legendre quadrature in log space (the intervals are a few s wide)."""
        total = 0.0
        for lo_d, hi_d, mu, s in zip(lo, hi, self.w * z + self.b, self.s, strict=True):
            half = 0.5 * (hi_d - lo_d)
            xs = 0.5 * (hi_d + lo_d) + half * _GL_NODES
            logs = power * _log_normal_pdf(xs, mu, s) + np.log(half * _GL_WEIGHTS)
            total += float(special.logsumexp(logs))
        return total

    def mean_log_density_given_z(self, z: float, lo, hi) -> float:
        """sum_d (1 / (hi_d - lo_d)) int_lo^hi log N(x'; w_d z + b_d, s_d^2) dx' by 64-point
        Gauss-Legendre quadrature (exact for this quadratic integrand)."""
        total = 0.0
        for lo_d, hi_d, mu, s in zip(lo, hi, self.w * z + self.b, self.s, strict=True):
            xs = 0.5 * (hi_d + lo_d) + 0.5 * (hi_d - lo_d) * _GL_NODES
            total += 0.5 * float(np.sum(_GL_WEIGHTS * _log_normal_pdf(xs, mu, s)))
        return total

    def irelbo_single_sample(self, x: np.ndarray, lo, hi, alpha: float) -> float:
        """E_q of the K = 1 IRELBO estimator: E_q[log w + (log J_beta(z) - alpha log|I|)/beta]
        = -KL + E_q[(log J_beta(z) - alpha log |I|) / beta]."""
        beta = 1.0 - alpha
        log_volume = float(np.sum(np.log(np.asarray(hi) - np.asarray(lo))))
        inner = self.expect_q(
            x, lambda z: (self.log_power_integral_given_z(z, lo, hi, beta)
                          - alpha * log_volume) / beta)
        return inner - self.kl(x)

    def irelbo_alpha_one_limit(self, x: np.ndarray, lo, hi) -> float:
        """log |I| + E_q[mean over x' in I of log p(x' | z)] - KL
        (``docs/math.md#limits-in-alpha``)."""
        log_volume = float(np.sum(np.log(np.asarray(hi) - np.asarray(lo))))
        return log_volume + self.expect_q(x, lambda z: self.mean_log_density_given_z(z, lo, hi)) \
            - self.kl(x)

    # ---------------------------------------------------------------- per-sample references
    def log_weights_of(self, z: np.ndarray, x: np.ndarray) -> np.ndarray:
        """log p(z) - log q(z | x) for z of shape (K, B) and x of shape (B, D)."""
        m, sd = self.q_params(x)
        return stats.norm.logpdf(z) - stats.norm.logpdf(z, m, sd)

    def log_density_given_z(self, z: np.ndarray, x: np.ndarray) -> np.ndarray:
        """log p(x | z) summed over pixels, z (K, B), x (B, D) -> (K, B)."""
        return stats.norm.logpdf(x, self.w * z[..., None] + self.b, self.s).sum(-1)


def log_normal_interval(lo, hi, mu, s) -> np.ndarray:
    """log(Phi((hi - mu)/s) - Phi((lo - mu)/s)) with scipy, mirrored into the lower tail so
    that the difference of the log-CDFs has no cancellation of large numbers."""
    a = (np.asarray(lo, dtype=float) - mu) / s
    b = (np.asarray(hi, dtype=float) - mu) / s
    a, b = np.broadcast_arrays(a, b)
    mirror = a + b > 0
    a, b = np.where(mirror, -b, a), np.where(mirror, -a, b)
    log_b = special.log_ndtr(b)
    log_a = special.log_ndtr(a)
    with np.errstate(divide="ignore"):
        return log_b + np.log(-np.expm1(log_a - log_b))


def _log_normal_pdf(x, mu, s):
    return -0.5 * ((x - mu) / s) ** 2 - math.log(s) - 0.5 * math.log(2.0 * math.pi)


def logmeanexp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    return special.logsumexp(values, axis=axis) - math.log(values.shape[axis])
