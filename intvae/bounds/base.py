"""What every bound shares: the result structure, importance sampling and the registry.

Notation (``docs/math.md#notation``): q(z | x) = N(m(x), diag s(x)^2) the encoder, p(z) =
N(0, I) the prior, p(x | z) the decoder likelihood, log w_k = log p(z_k) - log q(z_k | x) the
importance log-weight of a sample z_k ~ q.

A bound is called as ``bound(vae, x)`` where ``vae.encode(x)`` returns q as a
``torch.distributions.Normal`` of batch shape (B, L) and ``vae.decode(z)`` maps z of shape
(K, B, L) to a ``Likelihood`` of batch shape (K, B, D).
"""

import math
import warnings
from dataclasses import dataclass

import torch
from torch import distributions as dist

from intvae.checks import ParameterError, positive_int
from intvae.likelihoods import DENSITY, INTERVAL, POWER, Likelihood

REGISTRY: dict[str, type["Bound"]] = {}


def register(name: str):
    """Class decorator: make a bound available under ``name`` (and ``conf/bound/<name>.yaml``)."""

    def add(cls):
        if name in REGISTRY:
            raise ValueError(f"bound {name!r} is registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def get_bound(name: str) -> type["Bound"]:
    """The bound class registered as ``name``."""
    if name not in REGISTRY:
        raise ParameterError(f"bound={name!r} is invalid: bound must be one of {sorted(REGISTRY)}")
    return REGISTRY[name]


@dataclass
class BoundResult:
    """Per-example quantities in nats, each of shape (B,).

    bound: the bound's estimate for each example (the training objective is its negated mean).
    reconstruction: the bound's data term averaged over the samples of z.
    kl: KL(q(z | x) || p(z)) in closed form.
    log_weights: (K, B) per-sample log-weights of the importance-weighted bounds (data term plus
        log w_k), None for the single-sample-average bounds.
    likelihood: the decoder's likelihood for the samples, for diagnostics.
    """

    bound: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    log_weights: torch.Tensor | None
    likelihood: Likelihood


@dataclass
class Samples:
    """What the bounds compute from K reparameterized samples z_k ~ q(z | x)."""

    log_w: torch.Tensor  # (K, B): log p(z_k) - log q(z_k | x)
    kl: torch.Tensor  # (B,)
    likelihood: Likelihood  # batch shape (K, B, D)


def mean_over_samples_logsumexp(log_terms: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k exp(log_terms[k]) over the leading dimension."""
    return torch.logsumexp(log_terms, dim=0) - math.log(log_terms.shape[0])


NEEDS = {DENSITY: "the density", INTERVAL: "interval probabilities",
         POWER: "the integral of the density to the power beta over the interval"}
SUITED = {DENSITY: "any likelihood", INTERVAL: "gaussian, logit_normal or continuous_bernoulli",
          POWER: "gaussian"}


def check_likelihood(bound: str, requires: str, likelihood: type[Likelihood]) -> None:
    """Refuse, with a message naming both, a likelihood class without the capability
    ``requires`` that bound ``bound`` needs (``Likelihood.capabilities``)."""
    if requires not in likelihood.capabilities:
        raise ParameterError(
            f"likelihood={likelihood.__name__} is invalid with bound={bound}: the bound needs "
            f"{NEEDS[requires]}, which the {likelihood.__name__} likelihood does not provide; "
            f"use {SUITED[requires]}")


class SingleSampleWarning(UserWarning):
    """An importance-weighted bound built with one sample (``Bound.single_sample``)."""


class Bound:
    """A lower bound on log p(x) or log P(I(x)) estimated with ``samples`` draws of z; it needs
    the capability ``requires`` of the decoder's likelihood.

    ``single_sample``: for an importance-weighted bound, the single-sample bound it equals in
    expectation at K = 1: its estimate is then log p(x | z_1) + log p(z_1) - log q(z_1 | x)
    (or with P(I(x) | z_1)), whose expectation over z_1 ~ q is the ELBO (the IELBO). Building
    it with ``samples=1`` is allowed (e.g. to compare) but warns: compared with that
    single-sample bound at K = 1 it is one objective compared with itself."""

    name = "bound"
    requires = DENSITY
    single_sample: str | None = None

    def __init__(self, samples: int = 1):
        self.samples = positive_int("samples", samples)
        if self.samples == 1 and self.single_sample:
            warnings.warn(f"bound={self.name} with samples=1 equals the single-sample "
                          f"{self.single_sample} in expectation (one importance weight is no "
                          f"weighting); use samples > 1 for an importance-weighted bound",
                          SingleSampleWarning, stacklevel=3)  # the caller of the subclass

    def check_likelihood(self, likelihood: type[Likelihood]) -> None:
        """Refuse a likelihood class that lacks what this bound needs."""
        check_likelihood(self.name, self.requires, likelihood)

    def draw(self, vae, x: torch.Tensor, samples: int | None = None) -> Samples:
        """Encode x, draw ``samples`` (default ``self.samples``) z's, decode them (after
        checking that the decoder's likelihood has what this bound needs)."""
        q = vae.encode(x)
        z = q.rsample((samples or self.samples,))
        prior = dist.Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))
        log_w = (prior.log_prob(z) - q.log_prob(z)).sum(-1)
        kl = dist.kl_divergence(q, prior).sum(-1)
        likelihood = vae.decode(z)
        self.check_likelihood(type(likelihood))
        return Samples(log_w=log_w, kl=kl, likelihood=likelihood)

    def __call__(self, vae, x: torch.Tensor) -> BoundResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def log_data(likelihood: Likelihood, x: torch.Tensor, interval=None) -> torch.Tensor:
    """The data term of each sample, shape (K, B): log p(x | z_k) = sum_d log p(x_d | z_k) for
    ``interval`` None, else log P(I(x) | z_k) = sum_d log P(lo_d < X_d < hi_d | z_k)."""
    if interval is None:
        return likelihood.log_prob(x).sum(-1)
    lo, hi = interval(x)
    return likelihood.log_interval_prob(lo, hi).sum(-1)


def log_weights(s: Samples, x: torch.Tensor, interval=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(data term, importance log-weight data + log w_k) of each sample, each (K, B), for the
    density (``interval`` None) or the interval likelihood (``log_data``)."""
    data = log_data(s.likelihood, x, interval)
    return data, data + s.log_w
