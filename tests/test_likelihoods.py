"""Decoder likelihoods and heads against scipy (float64), and their use by the bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, special, stats
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from intvae.bounds import ELBO, IELBO, IRELBO, IWAE, IWIELBO, MIWAE, VR, VRMax
from intvae.checks import ParameterError
from intvae.intervals import Bins, Fixed
from intvae.likelihoods import (
    Bernoulli,
    BernoulliHead,
    Beta,
    BetaHead,
    ContinuousBernoulli,
    ContinuousBernoulliHead,
    Gaussian,
    GaussianHead,
    LogitNormal,
    LogitNormalHead,
)
from intvae.networks import VAE


def t64(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=float), dtype=torch.float64)


# Broadcastable grids: x over the last axis, loc and scale over the leading ones.
X = np.array([-1.3, 0.0, 0.2, 0.5, 0.97, 2.5])
LOC = np.array([-0.4, 0.0, 0.3, 1.1])[:, None, None]
SCALE = np.array([1e-3, 0.05, 0.7, 4.0])[None, :, None]


# ------------------------------------------------------------------------------ Gaussian


def test_gaussian_log_prob_matches_scipy():
    got = Gaussian(t64(LOC), t64(SCALE)).log_prob(t64(X)).numpy()
    np.testing.assert_allclose(got, stats.norm.logpdf(X, LOC, SCALE), rtol=1e-13)


def test_gaussian_log_prob_is_unbounded_as_the_scale_vanishes():
    values = [Gaussian(t64(0.5), t64(s)).log_prob(t64(0.5)).item() for s in (1e-2, 1e-8, 1e-30)]
    assert values[0] < values[1] < values[2] and values[2] > 60.0


@pytest.mark.parametrize("width", [0.02, 0.3, 2.0])
def test_gaussian_log_interval_prob_matches_scipy(width):
    """Standardized ends within [-8, 8] so that scipy's CDF difference is accurate."""
    lo = X[X < 1.5]
    hi = lo + width
    loc, scale = LOC, np.array([0.05, 0.7, 4.0])[None, :, None]
    got = Gaussian(t64(loc), t64(scale)).log_interval_prob(t64(lo), t64(hi)).numpy()
    a, b = (lo - loc) / scale, (hi - loc) / scale
    mask = (np.abs(a) < 8) & (np.abs(b) < 8)
    mirror = a + b > 0  # the difference of upper-tail survival functions is the accurate one
    with np.errstate(divide="ignore"):  # entries outside the mask may underflow to 0
        reference = np.log(np.where(mirror, stats.norm.sf(a) - stats.norm.sf(b),
                                    stats.norm.cdf(b) - stats.norm.cdf(a)))
    assert mask.sum() > 20
    np.testing.assert_allclose(got[mask], reference[mask], rtol=1e-11, atol=1e-13)
    assert np.all(got <= 0.0)


def test_gaussian_log_interval_prob_with_infinite_ends_and_deep_tails():
    """lo = -inf gives log Phi(b), hi = +inf gives log Phi(-a): scipy's log_ndtr is accurate far
    into the tails, where the CDF difference itself underflows."""
    b = np.array([-40.0, -10.0, -1.0, 0.0, 3.0, 30.0])
    scale = 0.2
    ones = np.ones_like(b)
    got = Gaussian(t64(0.0 * ones), t64(scale * ones)).log_interval_prob(
        t64(-np.inf * ones), t64(b * scale)).numpy()
    np.testing.assert_allclose(got, special.log_ndtr(b), rtol=1e-12, atol=1e-300)
    got = Gaussian(t64(0.0 * ones), t64(scale * ones)).log_interval_prob(
        t64(-b * scale), t64(np.inf * ones)).numpy()
    np.testing.assert_allclose(got, special.log_ndtr(b), rtol=1e-12, atol=1e-300)
    whole = Gaussian(t64(0.3), t64(2.0)).log_interval_prob(t64(-np.inf), t64(np.inf))
    assert whole.item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("power", [1.0, 0.5, -1.0, 2.0])
@pytest.mark.parametrize("loc, scale, lo, hi", [
    (0.3, 0.5, 0.1, 0.2),
    (0.3, 0.5, -0.4, 1.2),
    (0.0, 0.05, 0.04, 0.11),
    (0.0, 2.0, -1.0, 3.0),
    (0.9, 0.1, 0.5, 0.6),
])
def test_gaussian_log_power_integral_matches_quadrature(power, loc, scale, lo, hi):
    """log int_lo^hi N(x; loc, scale^2)^power dx against scipy.integrate.quad of the
    power of scipy's pdf (power 1: the interval probability, the IELBO's case)."""
    integral, error = integrate.quad(lambda x: stats.norm.pdf(x, loc, scale) ** power, lo, hi,
                                     epsabs=0.0, epsrel=1e-13, limit=200)
    got = Gaussian(t64(loc), t64(scale)).log_power_integral(t64(lo), t64(hi), power).item()
    assert got == pytest.approx(math.log(integral), rel=1e-10, abs=1e-10)


# ------------------------------------------------------------------------------ LogitNormal

UNIT = np.array([1e-6, 0.01, 0.2, 0.5, 0.77, 0.999])


def test_logit_normal_log_prob_is_the_change_of_variables():
    got = LogitNormal(t64(LOC), t64(SCALE[:, 1:])).log_prob(t64(UNIT)).numpy()
    y = special.logit(UNIT)
    reference = stats.norm.logpdf(y, LOC, SCALE[:, 1:]) - np.log(UNIT) - np.log1p(-UNIT)
    np.testing.assert_allclose(got, reference, rtol=1e-12)


@pytest.mark.parametrize("loc, scale", [(0.0, 1.0), (-1.5, 0.4), (2.0, 3.0)])
def test_logit_normal_density_integrates_to_one(loc, scale):
    ln = LogitNormal(t64(loc), t64(scale))

    def density(x):
        return math.exp(ln.log_prob(t64(x)).item())

    total, _ = integrate.quad(density, 0.0, 1.0, limit=200, epsabs=1e-12)
    assert total == pytest.approx(1.0, abs=1e-8)


def test_logit_normal_interval_prob_is_the_normal_interval_of_the_logits():
    lo = np.array([0.01, 0.2, 0.5, 0.9, -0.3, 0.4, -1.0])
    hi = np.array([0.05, 0.21, 0.7, 0.99, 0.1, 1.4, 2.0])
    loc, scale = np.array([[-1.0], [0.2], [2.0]]), np.array([[0.3], [1.0], [2.5]])
    got = LogitNormal(t64(loc), t64(scale)).log_interval_prob(t64(lo), t64(hi)).numpy()
    a = (special.logit(np.clip(lo, 0.0, 1.0)) - loc) / scale
    b = (special.logit(np.clip(hi, 0.0, 1.0)) - loc) / scale
    with np.errstate(invalid="ignore"):  # -inf + inf for the whole of (0, 1): not upper
        upper = a + b > 0  # difference of survival functions there: no underflow to 1 - 1
    reference = np.log(np.where(upper, stats.norm.sf(a) - stats.norm.sf(b),
                                stats.norm.cdf(b) - stats.norm.cdf(a)))
    np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-13)
    assert np.all(got[:, -1] == 0.0)  # the whole of (0, 1)
    # ... and the integral of the density over the interval.
    ln = LogitNormal(t64(0.2), t64(1.0))
    integral, _ = integrate.quad(lambda x: math.exp(ln.log_prob(t64(x)).item()), 0.2, 0.21,
                                 epsabs=0.0, epsrel=1e-12)
    assert got[1, 1] == pytest.approx(math.log(integral), rel=1e-10)


def test_logit_normal_mean_is_the_median():
    torch.testing.assert_close(LogitNormal(t64([-1.0, 0.0, 3.0]), t64([1.0, 1.0, 1.0])).mean,
                               t64(special.expit([-1.0, 0.0, 3.0])))


# ------------------------------------------------------------------------------ Bernoulli


def test_bernoulli_matches_scipy():
    """Against scipy.stats.bernoulli where 1 - p is representable (|logit| <= 10), and against
    log sigmoid(+-logit) = -log(1 + exp(-+logit)) for the extreme logits (scipy's log(1 - p)
    loses all digits there)."""
    logits = np.array([-10.0, -3.0, -0.2, 0.0, 1.5, 10.0])
    for value in (0.0, 1.0):
        got = Bernoulli(t64(logits)).log_prob(t64(np.full_like(logits, value))).numpy()
        reference = stats.bernoulli.logpmf(value, special.expit(logits))
        np.testing.assert_allclose(got, reference, rtol=1e-9)
    extreme = np.array([-30.0, -25.0, 25.0, 30.0])
    got_one = Bernoulli(t64(extreme)).log_prob(t64(np.ones(4))).numpy()
    got_zero = Bernoulli(t64(extreme)).log_prob(t64(np.zeros(4))).numpy()
    np.testing.assert_allclose(got_one, -np.logaddexp(0.0, -extreme), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_zero, -np.logaddexp(0.0, extreme), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(Bernoulli(t64(logits)).mean, t64(special.expit(logits)))


def test_bernoulli_continuous_targets_and_broadcasting():
    """Continuous x in [0, 1] gives the cross-entropy x log p + (1 - x) log(1 - p); x of shape
    (B, D) broadcasts against logits of shape (K, B, D)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 4))
    x = rng.uniform(size=(2, 4))
    got = Bernoulli(t64(logits)).log_prob(t64(x)).numpy()
    p = special.expit(logits)
    np.testing.assert_allclose(got, x * np.log(p) + (1 - x) * np.log1p(-p), rtol=1e-12)
    assert got.shape == (3, 2, 4)


def test_each_likelihood_declares_what_it_can_compute():
    """The declared capabilities match the methods each class really has."""
    methods = {"density": "log_prob", "interval": "log_interval_prob",
               "power": "log_power_integral"}
    declared = {cls: cls.capabilities for cls in
                (Gaussian, LogitNormal, ContinuousBernoulli, Bernoulli, Beta)}
    assert declared == {Gaussian: {"density", "interval", "power"},
                        LogitNormal: {"density", "interval"},
                        ContinuousBernoulli: {"density", "interval"},
                        Bernoulli: {"density"}, Beta: {"density"}}
    for cls, capabilities in declared.items():
        for capability, method in methods.items():
            assert (capability in capabilities) == hasattr(cls, method), (cls, method)


# ------------------------------------------------------------------- ContinuousBernoulli

CB_LOGITS = [-8.0, -1.0, -1e-3, 0.0, 2e-3, 0.5, 4.0]


def _cb_density(logit: float, x: float) -> float:
    """The continuous Bernoulli density C(lam) lam^x (1 - lam)^(1 - x), lam = sigmoid(logit),
    C = 2 artanh(1 - 2 lam) / (1 - 2 lam) (C = 2 at lam = 1/2)."""
    lam = special.expit(logit)
    c = 2.0 if abs(1 - 2 * lam) < 1e-12 else 2 * math.atanh(1 - 2 * lam) / (1 - 2 * lam)
    return c * lam**x * (1 - lam) ** (1 - x)


@pytest.mark.parametrize("logit", CB_LOGITS)
def test_continuous_bernoulli_density_integrates_to_one(logit):
    cb = ContinuousBernoulli(t64(logit))
    total, _ = integrate.quad(lambda x: math.exp(cb.log_prob(t64(x)).item()), 0.0, 1.0,
                              epsabs=0.0, epsrel=1e-12)
    assert total == pytest.approx(1.0, abs=1e-6)
    for x in (0.0, 0.3, 0.999):
        assert math.exp(cb.log_prob(t64(x)).item()) == pytest.approx(_cb_density(logit, x),
                                                                      rel=1e-5)


CB_INTERVAL_LOGITS = [
    -8.0, -1.0, 0.0, 0.5, 4.0, 0.01,
    -1e-3,
    2e-3,
]


@pytest.mark.parametrize("logit", CB_INTERVAL_LOGITS)
@pytest.mark.parametrize("lo, hi", [(0.1, 0.12), (0.0, 0.5), (0.98, 1.0), (-0.3, 0.05),
                                    (0.9, 1.6)])
def test_continuous_bernoulli_interval_prob_matches_quadrature(logit, lo, hi):
    cb = ContinuousBernoulli(t64(logit))
    mass, _ = integrate.quad(lambda x: _cb_density(logit, x), max(lo, 0.0), min(hi, 1.0),
                             epsabs=0.0, epsrel=1e-13)
    got = cb.log_interval_prob(t64(lo), t64(hi)).item()
    assert got == pytest.approx(math.log(mass), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("logit", [-1.0, 0.3, 0.0,
                                   2e-3])
def test_continuous_bernoulli_interval_prob_gradient_in_logit(logit):
    """d/d logit log P([0.97, 0.99]) against a central difference of the quadrature reference
    (about 0.48 near logit 0: the interval sits above 1/2)."""
    def reference(eta):
        mass, _ = integrate.quad(lambda x: _cb_density(eta, x), 0.97, 0.99, epsabs=0.0,
                                 epsrel=1e-13)
        return math.log(mass)

    h = 1e-4
    expected = (reference(logit + h) - reference(logit - h)) / (2 * h)
    param = t64(logit).requires_grad_()
    ContinuousBernoulli(param).log_interval_prob(t64(0.97), t64(0.99)).backward()
    assert param.grad.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_continuous_bernoulli_empty_interval_stays_finite():
    cb = ContinuousBernoulli(t64([0.3, 0.3]))
    got = cb.log_interval_prob(t64([0.4, 2.0]), t64([0.4, 3.0]))
    assert torch.all(torch.isfinite(got)) and torch.all(got < -700)


# ------------------------------------------------------------------------------ Beta


def test_beta_matches_scipy():
    a = np.array([[0.5], [1.0], [3.0], [20.0]])
    b = np.array([[0.7], [2.0], [1.0], [5.0]])
    got = Beta(t64(a), t64(b)).log_prob(t64(UNIT)).numpy()
    np.testing.assert_allclose(got, stats.beta.logpdf(UNIT, a, b), rtol=1e-10)
    torch.testing.assert_close(Beta(t64(a), t64(b)).mean, t64(stats.beta.mean(a, b)))


# ------------------------------------------------------------------------------ heads


@pytest.fixture
def raw():
    """Raw decoder outputs for K = 3 samples, B = 2 examples, 2 * D with D = 4."""
    return torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64) * 3


def test_gaussian_head(raw):
    head = GaussianHead()
    assert head.params_per_pixel == 2 and head.sigma_min == 0.0
    g = head(raw)
    assert isinstance(g, Gaussian) and g.loc.shape == g.scale.shape == (3, 2, 4)
    torch.testing.assert_close(g.loc, torch.sigmoid(raw[..., :4]))
    torch.testing.assert_close(g.scale, torch.exp(raw[..., 4:]))
    torch.testing.assert_close(g.mean, g.loc)


def test_logit_normal_head(raw):
    head = LogitNormalHead(sigma_min=0.01)
    assert head.params_per_pixel == 2
    ln = head(raw)
    assert isinstance(ln, LogitNormal)
    torch.testing.assert_close(ln.loc, raw[..., :4])
    torch.testing.assert_close(ln.scale, 0.01 + torch.exp(raw[..., 4:]))


def test_bernoulli_and_continuous_bernoulli_heads(raw):
    assert BernoulliHead.params_per_pixel == ContinuousBernoulliHead.params_per_pixel == 1
    b = BernoulliHead()(raw[..., :4])
    assert isinstance(b, Bernoulli)
    torch.testing.assert_close(b.logits, raw[..., :4])
    cb = ContinuousBernoulliHead()(raw[..., :4])
    assert isinstance(cb, ContinuousBernoulli)
    torch.testing.assert_close(cb.dist.logits, raw[..., :4])
    assert cb.log_prob(torch.full((2, 4), 0.3, dtype=torch.float64)).shape == (3, 2, 4)


def test_beta_head(raw):
    assert BetaHead.params_per_pixel == 2
    beta = BetaHead()(raw)
    assert isinstance(beta, Beta)
    torch.testing.assert_close(beta.dist.concentration1, F.softplus(raw[..., :4]) + 1e-4)
    torch.testing.assert_close(beta.dist.concentration0, F.softplus(raw[..., 4:]) + 1e-4)
    # Concentrations stay positive for very negative outputs.
    tiny = BetaHead()(torch.full((1, 8), -1e4, dtype=torch.float64))
    assert torch.all(tiny.dist.concentration1 > 0) and torch.all(tiny.dist.concentration0 > 0)


@pytest.mark.parametrize("head_cls", [GaussianHead, LogitNormalHead])
def test_variance_floor(head_cls):
    """var_min (the authors' 1e-7): scale^2 = exp(raw)^2 + var_min, checked in float64 against
    the formula, including where exp(raw)^2 underflows and where var_min is negligible."""
    raw_scale = torch.tensor([-1e4, -50.0, -8.0, 0.0, 30.0], dtype=torch.float64)
    raw = torch.cat([torch.zeros_like(raw_scale), raw_scale])
    scale = head_cls(var_min=1e-7)(raw).scale
    expected = [math.sqrt(math.exp(2 * r) + 1e-7) if r > -300 else math.sqrt(1e-7)
                for r in raw_scale.tolist()]
    torch.testing.assert_close(scale, torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="var_min=-1 is invalid"):
        head_cls(var_min=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("head_cls", [GaussianHead, LogitNormalHead])
def test_scale_floor_is_respected(head_cls, dtype):
    """scale = sigma_min + exp(raw) >= sigma_min; with sigma_min = 0 the scale stays a positive
    normal float for any raw output, so the interval probability stays finite."""
    raw_scale = torch.tensor([-1e4, -200.0, -87.0, 0.0, 50.0], dtype=dtype)
    raw = torch.cat([torch.zeros_like(raw_scale), raw_scale])
    for sigma_min in (0.0, 1e-3, 0.1):
        likelihood = head_cls(sigma_min=sigma_min)(raw)
        scale = likelihood.scale
        assert torch.all(scale >= sigma_min) and torch.all(scale > 0)
        assert torch.all(torch.isfinite(scale))
        if sigma_min > 0:
            assert scale[0].item() == pytest.approx(sigma_min, rel=1e-6)
        else:
            torch.testing.assert_close(scale[3:], torch.exp(raw_scale[3:]))
        x = torch.full((5,), 0.3, dtype=dtype)
        assert torch.all(torch.isfinite(likelihood.log_interval_prob(x - 0.01, x + 0.01)))


@pytest.mark.parametrize("dtype", [
    torch.float32,
    torch.float64,
])
@pytest.mark.parametrize("head_cls", [GaussianHead, LogitNormalHead])
def test_smallest_scale_is_a_positive_normal_float(head_cls, dtype):
    raw = torch.tensor([0.0, -1e4], dtype=dtype)
    scale = head_cls()(raw).scale
    assert scale.item() >= torch.finfo(dtype).tiny, scale.item()


@pytest.mark.parametrize("head_cls", [GaussianHead, LogitNormalHead])
@pytest.mark.parametrize("sigma_min, shown", [(-0.1, "-0.1"), (-1, "-1"), (math.nan, "nan"),
                                              (math.inf, "inf"), ("0.1", "'0.1'")])
def test_sigma_min_must_be_finite_and_non_negative(head_cls, sigma_min, shown):
    with pytest.raises(ValueError, match=rf"^sigma_min={shown} is invalid: sigma_min must be a "
                                         r"finite number >= 0$"):
        head_cls(sigma_min=sigma_min)


# ------------------------------------------------------------- likelihoods in the bounds


def _tiny_vae(head) -> VAE:
    torch.manual_seed(0)
    return VAE(num_pixels=6, head=head, hidden=[5], latent=2)


def _x() -> torch.Tensor:
    return torch.rand(3, 6, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05


INTERVAL_BOUNDS = {
    "ielbo": lambda: IELBO(Fixed(0.01), 2),
    "ielbo-bins": lambda: IELBO(Bins(256), 2),
    "iw_ielbo": lambda: IWIELBO(Fixed(0.01), 2),
    "irelbo": lambda: IRELBO(Fixed(0.01), 2.0, 2),
}
DENSITY_BOUNDS = {
    "elbo": lambda: ELBO(2), "iwae": lambda: IWAE(2), "vr": lambda: VR(0.5, 2),
    "vr_max": lambda: VRMax(2), "miwae": lambda: MIWAE(2, 2),
}


@pytest.mark.parametrize("bound", sorted(INTERVAL_BOUNDS))
@pytest.mark.parametrize("head", [BernoulliHead, BetaHead])
def test_interval_bounds_refuse_interval_less_likelihoods(head, bound):
    name = head.__name__.removesuffix("Head")
    with pytest.raises(ParameterError, match=rf"^likelihood={name} is invalid with "
                                             rf"bound=(ielbo|iw_ielbo|irelbo): .*{name} "):
        INTERVAL_BOUNDS[bound]()(_tiny_vae(head()), _x())


@pytest.mark.parametrize("head", [LogitNormalHead, ContinuousBernoulliHead])
def test_irelbo_needs_the_gaussian_power_integral(head):
    name = head.__name__.removesuffix("Head")
    with pytest.raises(ParameterError, match=rf"bound=irelbo: .*{name} likelihood.*use gaussian"):
        IRELBO(Fixed(0.01), 2.0, 2)(_tiny_vae(head()), _x())


@pytest.mark.parametrize("bound", ["ielbo", "ielbo-bins", "iw_ielbo"])
@pytest.mark.parametrize("head", [GaussianHead, LogitNormalHead, ContinuousBernoulliHead])
def test_interval_bounds_accept_interval_likelihoods(head, bound):
    vae = _tiny_vae(head())
    result = INTERVAL_BOUNDS[bound]()(vae, _x())
    assert result.bound.shape == (3,) and torch.all(torch.isfinite(result.bound))
    assert torch.all(result.reconstruction <= 0.0)  # log-probabilities of intervals
    result.bound.sum().backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in vae.parameters())


@pytest.mark.parametrize("bound", sorted(DENSITY_BOUNDS))
@pytest.mark.parametrize("head", [GaussianHead, LogitNormalHead, BernoulliHead,
                                  ContinuousBernoulliHead, BetaHead])
def test_density_bounds_accept_every_likelihood(head, bound):
    vae = _tiny_vae(head())
    result = DENSITY_BOUNDS[bound]()(vae, _x())
    assert result.bound.shape == (3,) and torch.all(torch.isfinite(result.bound))
    result.bound.sum().backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in vae.parameters())
