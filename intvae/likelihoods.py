"""Decoder likelihoods p(x | z) for pixels, in the style of ``torch.distributions``.

Each likelihood holds per-pixel parameters (sample dimensions first: shape (K, B, D) for K
samples of z) and returns per-pixel terms; the bounds sum them over pixels. Beside ``log_prob``
(a density) they offer ``log_interval_prob(lo, hi)`` = log P(lo < X < hi | z) wherever a
differentiable CDF exists, which the integral bounds need.

Each likelihood class declares what it can compute in ``capabilities``: ``"density"``
(``log_prob``), ``"interval"`` (``log_interval_prob``) and ``"power"`` (``log_power_integral``,
the integral of the density raised to a power, which the IRELBO needs). A bound declares the
one it needs (``intvae.bounds.Bound.requires``), so a bound and a likelihood that do not fit
are refused before any computation.

A *head* turns the decoder network's raw output (K, B, n_params * D) into a likelihood of its
class ``Head.likelihood``; the Hydra group ``likelihood`` selects the head.
"""

import math

import torch
import torch.nn.functional as F
from torch import distributions as dist

from intvae.checks import finite_float, require
from intvae.numerics import (
    EAGER,
    Kernels,
    log1mexp,
    log_normal_interval,
    log_normal_power_integral,
)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


DENSITY, INTERVAL, POWER = "density", "interval", "power"


class Likelihood:
    """Per-pixel distribution over x. Subclasses define ``log_prob`` and ``mean``; those with a
    differentiable CDF also ``log_interval_prob``, and list what they offer in
    ``capabilities``."""

    capabilities = frozenset({DENSITY})

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError


class Gaussian(Likelihood):
    """N(x; loc, scale^2) per pixel: the paper's decoder (section 3.1)."""

    capabilities = frozenset({DENSITY, INTERVAL, POWER})

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, kernels: Kernels = EAGER):
        self.loc, self.scale, self.kernels = loc, scale, kernels

    def log_prob(self, x):
        """-log scale - (x - loc)^2 / (2 scale^2) - log(2 pi) / 2: unbounded as scale -> 0."""
        return -torch.log(self.scale) - 0.5 * ((x - self.loc) / self.scale) ** 2 - _HALF_LOG_2PI

    def log_interval_prob(self, lo, hi):
        """log(Phi((hi - loc)/scale) - Phi((lo - loc)/scale)), at most 0
        (``docs/math.md#interval-likelihood-of-one-pixel``)."""
        return log_normal_interval(lo, hi, self.loc, self.scale, self.kernels)

    def log_power_integral(self, lo, hi, power: float):
        """log int_lo^hi N(x; loc, scale^2)^power dx, the IRELBO's J
        (``docs/math.md#per-pixel-integrals``)."""
        return log_normal_power_integral(lo, hi, self.loc, self.scale, power, self.kernels)

    @property
    def mean(self):
        return self.loc


class LogitNormal(Likelihood):
    """logit(x) ~ N(loc, scale^2): a density on (0, 1) (the paper's future work).

    log p(x) = log N(logit x; loc, scale^2) - log x - log(1 - x); the interval probability
    goes through the monotone logit transform, with ends clipped to [0, 1].
    """

    capabilities = frozenset({DENSITY, INTERVAL})

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, kernels: Kernels = EAGER):
        self.loc, self.scale, self.kernels = loc, scale, kernels

    def log_prob(self, x):
        y = torch.logit(x)
        normal = -torch.log(self.scale) - 0.5 * ((y - self.loc) / self.scale) ** 2 - _HALF_LOG_2PI
        return normal - torch.log(x) - torch.log1p(-x)

    def log_interval_prob(self, lo, hi):
        return log_normal_interval(torch.logit(lo.clamp(0.0, 1.0)),
                                   torch.logit(hi.clamp(0.0, 1.0)), self.loc, self.scale,
                                   self.kernels)

    @property
    def mean(self):
        """The median sigmoid(loc) (the mean has no closed form)."""
        return torch.sigmoid(self.loc)


class Bernoulli(Likelihood):
    """Bernoulli(x; sigmoid(logits)) for binarized data."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def log_prob(self, x):
        return -F.binary_cross_entropy_with_logits(self.logits, x.expand_as(self.logits),
                                                   reduction="none")

    @property
    def mean(self):
        return torch.sigmoid(self.logits)


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli of Loaiza-Ganem and Cunningham (2019), a density on [0, 1]
    (``log_prob`` from ``torch.distributions.ContinuousBernoulli``).

    With logit l its CDF is expm1(l x) / expm1(l), so for lo < hi in [0, 1] and l > 0
    log P(lo < X < hi) = l hi + log1mexp(l (lo - hi)) - l - log1mexp(-l), and for l < 0 the
    same with (l, lo, hi) -> (-l, 1 - hi, 1 - lo). Near l = 0 (|l| < 1e-6) the expansion
    log(hi - lo) + l (hi + lo - 1) / 2 serves (error O(l^2)). Unlike torch's ``cdf``, this
    has the right value and gradient for small |l| too.
    """

    capabilities = frozenset({DENSITY, INTERVAL})

    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        self.dist = dist.ContinuousBernoulli(logits=logits, validate_args=False)

    def log_prob(self, x):
        return self.dist.log_prob(x)

    def log_interval_prob(self, lo, hi):
        lo, hi, logit = torch.broadcast_tensors(lo.clamp(0.0, 1.0), hi.clamp(0.0, 1.0),
                                                self.logits)
        # An interval clipped to nothing keeps the smallest positive width: finite values.
        width = (hi - lo).clamp(min=torch.finfo(lo.dtype).tiny)
        small = logit.abs() < 1e-6
        series = torch.log(width) + logit * (hi + lo - 1.0) / 2.0
        negative = logit < 0
        lo, hi = torch.where(negative, 1.0 - hi, lo), torch.where(negative, 1.0 - lo, hi)
        a = torch.where(small, 1.0, logit.abs())
        exact = a * hi + log1mexp(-a * width) - a - log1mexp(-a)
        return torch.where(small, series, exact)

    @property
    def mean(self):
        return self.dist.mean


class Beta(Likelihood):
    """Beta(x; a, b) per pixel; no differentiable CDF in torch, so density bounds only."""

    def __init__(self, concentration1: torch.Tensor, concentration0: torch.Tensor):
        self.dist = dist.Beta(concentration1, concentration0, validate_args=False)

    def log_prob(self, x):
        return self.dist.log_prob(x)

    @property
    def mean(self):
        return self.dist.mean


# ---------------------------------------------------------------------------------------------
# Heads: decoder output -> likelihood
# ---------------------------------------------------------------------------------------------


def _log_scale_to_scale(raw: torch.Tensor, sigma_min: float, var_min: float) -> torch.Tensor:
    """scale = sigma_min + sqrt(exp(raw)^2 + var_min), with exp(raw) kept within
    [finfo.tiny, exp(-log finfo.tiny)] (about [1.2e-38, 8.5e37] in float32): a scale of exactly
    0 has no interval probability. With var_min = 0 the scale is sigma_min + exp(raw)."""
    tiny = torch.finfo(raw.dtype).tiny
    scale = torch.exp(raw.clamp(max=-math.log(tiny))).clamp(min=tiny)
    if var_min > 0:
        scale = torch.hypot(scale, torch.tensor(math.sqrt(var_min), dtype=raw.dtype))
    return sigma_min + scale


class Head:
    """Turns the decoder's raw output (..., params_per_pixel * D) into a ``Likelihood`` of class
    ``likelihood``."""

    params_per_pixel = 1
    likelihood: type[Likelihood] = Likelihood
    kernels: Kernels = EAGER
    """How the interval kernels of its likelihoods run (``intvae.numerics.Kernels``); the app
    sets ``Kernels(compiled=True)`` where ``torch.compile`` works."""

    def __call__(self, raw: torch.Tensor) -> Likelihood:
        raise NotImplementedError


class GaussianHead(Head):
    """The paper's decoder: loc = sigmoid(net), scale = sigma_min + sqrt(exp(net)^2 + var_min).

    ``sigma_min`` (a floor on the standard deviation) and ``var_min`` (a floor on the variance,
    the authors' code: 1e-7) are the "noise in the model" fixes the paper argues against; both
    default to 0, the paper's own setting, where scale = exp(net).
    """

    likelihood = Gaussian

    params_per_pixel = 2

    def __init__(self, sigma_min: float = 0.0, var_min: float = 0.0):
        for name, value in (("sigma_min", sigma_min), ("var_min", var_min)):
            require(name, value, finite_float(name, value, "a finite number >= 0") >= 0,
                    "a finite number >= 0")
        self.sigma_min = float(sigma_min)
        self.var_min = float(var_min)

    def _scale(self, raw: torch.Tensor) -> torch.Tensor:
        return _log_scale_to_scale(raw, self.sigma_min, self.var_min)

    def __call__(self, raw):
        mean_raw, scale_raw = raw.chunk(2, dim=-1)
        return Gaussian(torch.sigmoid(mean_raw), self._scale(scale_raw), self.kernels)


class LogitNormalHead(GaussianHead):
    """logit(x) ~ N(net, scale^2), scale as in ``GaussianHead``."""

    likelihood = LogitNormal

    def __call__(self, raw):
        loc, scale_raw = raw.chunk(2, dim=-1)
        return LogitNormal(loc, self._scale(scale_raw), self.kernels)


class BernoulliHead(Head):
    """Bernoulli with logits = net."""

    likelihood = Bernoulli

    def __call__(self, raw):
        return Bernoulli(raw)


class ContinuousBernoulliHead(Head):
    """Continuous Bernoulli with logits = net."""

    likelihood = ContinuousBernoulli

    def __call__(self, raw):
        return ContinuousBernoulli(raw)


class BetaHead(Head):
    """Beta with both concentrations = softplus(net) + 1e-4."""

    likelihood = Beta

    params_per_pixel = 2

    def __call__(self, raw):
        a, b = raw.chunk(2, dim=-1)
        return Beta(F.softplus(a) + 1e-4, F.softplus(b) + 1e-4)
