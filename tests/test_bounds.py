"""The bounds of ``intvae.bounds`` on a linear-Gaussian model where log P(I) and log p(x) are
known exactly (``tests/linear_gaussian.py``), plus validation and float32 robustness.

Monte Carlo comparisons use a batch of B identical observations, so that each call returns B
independent estimates; the margins ("mean <= reference + 3 or 4 standard errors") are stated at
each test. All random draws are seeded, so every run sees the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linear_gaussian import LinearGaussianVAE, log_normal_interval, logmeanexp
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from torch import distributions as dist

from intvae.bounds import (
    ELBO,
    IELBO,
    IRELBO,
    IWAE,
    IWIELBO,
    MIWAE,
    REGISTRY,
    VR,
    BoundResult,
    VRMax,
    get_bound,
)
from intvae.intervals import Bins, Fixed
from intvae.likelihoods import Gaussian

# ------------------------------------------------------------------------------ the models

MODELS = {
    "D1": (dict(w=[1.5], b=[0.3], s=[0.5]), [0.8]),
    "D2": (dict(w=[1.0, -0.7], b=[0.2, 0.1], s=[0.4, 0.6]), [0.9, -0.3]),
    "D3": (dict(w=[0.8, 1.2, -0.5], b=[0.0, 0.3, -0.2], s=[0.5, 0.3, 0.7]), [0.5, 1.0, -0.4]),
}
# q(z | x): the exact posterior of x, one shifted and widened (importance weights with
# moderate variance), one shifted and narrowed (heavier-tailed weights).
PROPOSALS = {"exact": dict(shift=0.0, widen=1.0), "wide": dict(shift=2.0, widen=1.5),
             "narrow": dict(shift=-1.0, widen=0.8)}
DELTA = 0.1


def model(name: str, proposal: str = "exact") -> tuple[LinearGaussianVAE, np.ndarray]:
    params, x = MODELS[name]
    return LinearGaussianVAE(**params, **PROPOSALS[proposal]), np.asarray(x, dtype=float)


def batch(x: np.ndarray, size: int) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).expand(size, x.shape[0]).contiguous()


def run(bound, vae, x: np.ndarray, size: int, seed: int = 0) -> BoundResult:
    torch.manual_seed(seed)
    return bound(vae, batch(x, size))


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.detach().numpy()
    assert np.all(np.isfinite(v))
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def interval_of(x: np.ndarray, delta: float = DELTA) -> tuple[np.ndarray, np.ndarray]:
    return x - delta, x + delta


# ------------------------------------------------------------------------------ references


def test_reference_interval_probability_is_independent_and_exact():
    """The test's own reference: quadrature over z agrees with the closed form (D = 1) and
    with scipy's multivariate normal CDF of the box (D = 2)."""
    from scipy import stats

    vae, x = model("D1")
    lo, hi = interval_of(x)
    assert vae.log_interval_prob_quad(lo, hi) == pytest.approx(
        math.log(stats.norm.cdf(hi[0], 0.3, math.sqrt(0.25 + 2.25))
                 - stats.norm.cdf(lo[0], 0.3, math.sqrt(0.25 + 2.25))), abs=1e-12)
    vae, x = model("D2")
    lo, hi = interval_of(x)
    cov = np.outer(vae.w, vae.w) + np.diag(vae.s**2)
    mvn = stats.multivariate_normal(vae.b, cov)
    box = (mvn.cdf(hi) - mvn.cdf([lo[0], hi[1]]) - mvn.cdf([hi[0], lo[1]]) + mvn.cdf(lo))
    assert vae.log_interval_prob(lo, hi) == pytest.approx(math.log(box), abs=1e-4)


# ------------------------------------------------------------- every bound is a lower bound

# (bound, batch size): K * B * D stays small so the whole grid runs in a few seconds.
INTERVAL_BOUNDS = [
    pytest.param(lambda: IELBO(Fixed(DELTA), samples=1), 4000, id="ielbo-K1"),
    pytest.param(lambda: IELBO(Fixed(DELTA), samples=1000), 50, id="ielbo-K1000"),
    pytest.param(lambda: IWIELBO(Fixed(DELTA), samples=1), 4000, id="iw_ielbo-K1"),
    pytest.param(lambda: IWIELBO(Fixed(DELTA), samples=10), 1000, id="iw_ielbo-K10"),
    pytest.param(lambda: IWIELBO(Fixed(DELTA), samples=100), 100, id="iw_ielbo-K100"),
    pytest.param(lambda: IWIELBO(Fixed(DELTA), samples=1000), 50, id="iw_ielbo-K1000"),
] + [
    pytest.param(lambda a=a, k=k: IRELBO(Fixed(DELTA), alpha=a, samples=k), b,
                 id=f"irelbo-a{a}-K{k}")
    for a in (0.5, 2.0, 5.0) for k, b in ((1, 4000), (10, 1000), (100, 100))
]


@pytest.mark.parametrize("proposal", ["exact", "wide", "narrow"])
@pytest.mark.parametrize("name", ["D1", "D2", "D3"])
@pytest.mark.parametrize("make, size", INTERVAL_BOUNDS)
def test_interval_bounds_stay_below_log_interval_probability(make, size, name, proposal):
    """E[estimate] <= log P(I): the mean of B independent estimates is at most log P(I) plus
    4 standard errors (4 rather than 3 because the grid has 135 cases; with the exact posterior
    as q the true gaps are ~1e-4 nats, so this is a sharp check there)."""
    vae, x = model(name, proposal)
    exact = vae.log_interval_prob(*interval_of(x))
    mean, se = mean_se(run(make(), vae, x, size).bound)
    assert mean <= exact + 4.0 * se + 1e-12, (mean - exact, se)


@pytest.mark.parametrize("name", ["D1", "D2", "D3"])
@pytest.mark.parametrize("make, size", [
    pytest.param(lambda: IWAE(1), 4000, id="iwae-K1"),
    pytest.param(lambda: IWAE(100), 100, id="iwae-K100"),
    pytest.param(lambda: ELBO(10), 400, id="elbo-K10"),
    pytest.param(lambda: VR(0.5, 10), 400, id="vr-0.5-K10"),
    pytest.param(lambda: VR(3.0, 10), 400, id="vr-3-K10"),
    pytest.param(lambda: MIWAE(5, 5), 400, id="miwae-5-5"),
])
def test_density_bounds_stay_below_log_density(make, size, name):
    vae, x = model(name, "wide")
    exact = vae.log_marginal_density(x)
    mean, se = mean_se(run(make(), vae, x, size).bound)
    assert mean <= exact + 3.0 * se, (mean - exact, se)


# ------------------------------------------------------- expectations against quadrature


@pytest.mark.parametrize("proposal", ["exact", "wide"])
@pytest.mark.parametrize("name", ["D1", "D2", "D3"])
def test_ielbo_expectation_matches_quadrature(name, proposal):
    """E[IELBO estimate] = E_q[log P(I | z)] - KL (reference: quadrature over z), within
    4 standard errors, for 1 and 100 samples; IW-IELBO_1 has the same expectation."""
    vae, x = model(name, proposal)
    lo, hi = interval_of(x)
    exact_ielbo = vae.ielbo(x, lo, hi)
    assert exact_ielbo < vae.log_interval_prob(lo, hi)
    for bound, size in ((IELBO(Fixed(DELTA), 1), 8000), (IELBO(Fixed(DELTA), 100), 200),
                        (IWIELBO(Fixed(DELTA), 1), 8000)):
        mean, se = mean_se(run(bound, vae, x, size, seed=3).bound)
        assert abs(mean - exact_ielbo) <= 4.0 * se + 1e-9, (bound, mean - exact_ielbo, se)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("name", ["D1", "D2", "D3"])
def test_irelbo_single_sample_expectation_matches_quadrature(name, alpha):
    """E[IRELBO_alpha, K = 1] = -KL + E_q[(log J_beta(z) - alpha log |I|) / beta] with J_beta
    integrated numerically; it lies below the IELBO for every alpha in (0, 1) U (1, inf)."""
    vae, x = model(name, "wide")
    lo, hi = interval_of(x)
    reference = vae.irelbo_single_sample(x, lo, hi, alpha)
    assert reference < vae.ielbo(x, lo, hi)
    mean, se = mean_se(run(IRELBO(Fixed(DELTA), alpha, 1), vae, x, 8000, seed=4).bound)
    assert abs(mean - reference) <= 4.0 * se, (mean - reference, se)


# ----------------------------------------------------------------- convergence in K


def _gaps(make, vae, x, exact, plan):
    """(K, mean gap log P - estimate, its standard error) for each (K, B) of ``plan``."""
    out = []
    for k, size in plan:
        mean, se = mean_se(run(make(k), vae, x, size, seed=k).bound)
        out.append((k, exact - mean, se))
    return out


CONVERGENCE_PLAN = ((1, 8000), (10, 2000), (100, 400), (1000, 200))


@pytest.mark.parametrize("make", [
    pytest.param(lambda k: IWIELBO(Fixed(DELTA), k), id="iw_ielbo"),
    pytest.param(lambda k: IRELBO(Fixed(DELTA), 1e-3, k), id="irelbo-a1e-3"),
    pytest.param(lambda k: IRELBO(Fixed(DELTA), 1e-2, k), id="irelbo-a1e-2"),
])
def test_importance_weighted_interval_bounds_approach_log_interval_probability(make):
    """With a mismatched q the gap log P(I) - E[estimate] is about 2.2 nats at K = 1 and
    shrinks with K: significantly (by more than 3 combined SE) from 1 to 10 to 100, not
    significantly increasing from 100 to 1000, and below 0.02 nats at K = 1000 (where the
    theory of importance sampling predicts about 1e-3 for this q)."""
    vae, x = model("D2", "wide")
    exact = vae.log_interval_prob(*interval_of(x))
    gaps = _gaps(make, vae, x, exact, CONVERGENCE_PLAN)
    for (k0, g0, s0), (k1, g1, s1) in zip(gaps[:-2], gaps[1:-1], strict=True):
        assert g0 - g1 > 3.0 * math.hypot(s0, s1), (k0, k1, gaps)
    (_, g100, s100), (_, g1000, s1000) = gaps[-2:]
    assert g1000 <= g100 + 3.0 * math.hypot(s100, s1000), gaps
    assert -3.0 * s1000 <= g1000 < 0.02, gaps
    assert gaps[0][1] > 1.0, gaps


def test_bounds_with_bins_on_the_exact_discrete_likelihood():
    """Bins(8): the level probabilities P(I_k) of the exact model (open end bins) sum to 1;
    for every level the IELBO stays below log P(I_k) and IW-IELBO_200 is within 0.05 nats of
    it, also for the end levels whose bins are unbounded."""
    vae = LinearGaussianVAE(w=[0.3], b=[0.5], s=[0.12], shift=0.5, widen=1.2)
    bins = Bins(8, 0.0)
    levels = np.linspace(0.0, 1.0, 8)[:, None]
    lo, hi = (t.numpy() for t in bins(torch.as_tensor(levels)))
    assert lo[0, 0] == -np.inf and hi[-1, 0] == np.inf
    exact = np.array([vae.log_interval_prob(lo[k], hi[k]) for k in range(8)])
    assert np.exp(exact).sum() == pytest.approx(1.0, abs=1e-12)
    for k, x in enumerate(levels):
        mean, se = mean_se(run(IELBO(bins, 1), vae, x, 2000, seed=k).bound)
        assert mean <= exact[k] + 4.0 * se, (k, mean - exact[k], se)
        mean, se = mean_se(run(IWIELBO(bins, 200), vae, x, 50, seed=k).bound)
        assert exact[k] - 0.05 <= mean <= exact[k] + 4.0 * se, (k, mean - exact[k], se)


def test_iwae_approaches_log_density():
    """The same protocol as for the interval bounds, against the exact log p(x)."""
    vae, x = model("D2", "wide")
    exact = vae.log_marginal_density(x)
    gaps = _gaps(IWAE, vae, x, exact, CONVERGENCE_PLAN)
    for (k0, g0, s0), (k1, g1, s1) in zip(gaps[:-2], gaps[1:-1], strict=True):
        assert g0 - g1 > 3.0 * math.hypot(s0, s1), (k0, k1, gaps)
    (_, g100, s100), (_, g1000, s1000) = gaps[-2:]
    assert g1000 <= g100 + 3.0 * math.hypot(s100, s1000), gaps
    assert -3.0 * s1000 <= g1000 < 0.02, gaps


# ------------------------------------------------------------------ the alpha limits


@pytest.mark.parametrize("samples", [1, 10, 100])
@pytest.mark.parametrize("proposal", ["exact", "wide"])
def test_irelbo_tends_to_iw_ielbo_as_alpha_tends_to_zero(samples, proposal):
    """For the same z samples, IRELBO_alpha - IW-IELBO_K = O(alpha): below 2 alpha per example
    and shrinking tenfold with alpha."""
    vae, x = model("D2", proposal)
    iw = run(IWIELBO(Fixed(DELTA), samples), vae, x, 200, seed=7).bound
    diffs = {}
    for alpha in (1e-2, 1e-3, 1e-4):
        ir = run(IRELBO(Fixed(DELTA), alpha, samples), vae, x, 200, seed=7).bound
        diffs[alpha] = (ir - iw).abs().max().item()
        assert diffs[alpha] <= 2.0 * alpha, diffs
    assert diffs[1e-3] <= 0.12 * diffs[1e-2] and diffs[1e-4] <= 0.12 * diffs[1e-3], diffs


def _alpha_one_limit_per_sample(vae, z: np.ndarray, x: np.ndarray, lo, hi) -> np.ndarray:
    """The alpha -> 1 limit of the IRELBO estimator for given samples z (K, B):
    mean_k [log w_k + log |I| + mean over x' in I of log p(x' | z_k)]."""
    log_volume = float(np.sum(np.log(hi - lo)))
    xb = np.broadcast_to(x, z.shape[1:] + x.shape)
    mean_log_p = np.vectorize(lambda zz: vae.mean_log_density_given_z(zz, lo, hi))(z)
    return (vae.log_weights_of(z, xb) + log_volume + mean_log_p).mean(0)


@pytest.mark.parametrize("alpha", [1.0 - 1e-4, 1.0 + 1e-4])
def test_irelbo_alpha_to_one_limit(alpha):
    """alpha = 1 -+ 1e-4: per sample set the estimator is within 20 |1 - alpha| of
    mean_k[log w_k + log|I| + mean_{x' in I} log p(x' | z_k)]; its mean is within 4 SE of
    log |I| + E_q[mean_{x' in I} log p(x' | z)] - KL (quadrature), which is below the IELBO."""
    vae, x = model("D2", "wide")
    lo, hi = interval_of(x)
    result = run(IRELBO(Fixed(DELTA), alpha, 5), vae, x, 50, seed=11)
    limit = _alpha_one_limit_per_sample(vae, vae.last_z[..., 0].numpy(), x, lo, hi)
    np.testing.assert_allclose(result.bound.numpy(), limit, rtol=0, atol=20 * abs(1 - alpha))

    reference = vae.irelbo_alpha_one_limit(x, lo, hi)
    exact_ielbo = vae.ielbo(x, lo, hi)
    assert reference < exact_ielbo - 0.03  # -7.153 against -7.110 nats
    irelbo = run(IRELBO(Fixed(DELTA), alpha, 1), vae, x, 8000, seed=12)
    mean, se = mean_se(irelbo.bound)
    assert abs(mean - reference) <= 4.0 * se + 1e-3, (mean - reference, se)
    # Below the IELBO sample by sample: for the same z, the data term
    # log |I| + mean_{x' in I} log p(x' | z) < log P(I | z) (Jensen over the uniform x').
    ielbo = run(IELBO(Fixed(DELTA), 1), vae, x, 8000, seed=12)
    assert torch.all(irelbo.reconstruction < ielbo.reconstruction)


# ----------------------------------------------- estimators against the formulas, same z


@pytest.fixture(params=["D1", "D3"])
def sampled(request):
    """A model and 7 distinct observations near its x, with the narrowed, shifted q."""
    vae, x = model(request.param, "narrow")
    rng = np.random.default_rng(0)
    xs = x + 0.3 * rng.standard_normal((7, x.shape[0]))
    return vae, xs


def _call(bound, vae, xs, seed=5):
    torch.manual_seed(seed)
    result = bound(vae, torch.as_tensor(xs, dtype=torch.float64))
    return result, vae.last_z[..., 0].numpy()


def _interval_terms(vae, z, xs, delta):
    """log P(I(x) | z_k) per sample and example, (K, B)."""
    return log_normal_interval(xs - delta, xs + delta, vae.w * z[..., None] + vae.b,
                               vae.s).sum(-1)


def _kl(vae, xs):
    return np.array([vae.kl(x) for x in xs])


@pytest.mark.parametrize("samples", [1, 6])
def test_elbo_and_ielbo_match_their_formulas(sampled, samples):
    vae, xs = sampled
    result, z = _call(ELBO(samples), vae, xs)
    recon = vae.log_density_given_z(z, xs).mean(0)
    np.testing.assert_allclose(result.kl.numpy(), _kl(vae, xs), rtol=1e-12)
    np.testing.assert_allclose(result.reconstruction.numpy(), recon, rtol=1e-12)
    np.testing.assert_allclose(result.bound.numpy(), recon - _kl(vae, xs), rtol=1e-12)
    assert result.log_weights is None and isinstance(result.likelihood, Gaussian)

    delta = 0.05
    for normalized, tolerance in ((False, 0.0), (True, 0.0), (False, 1e-3), (True, 1e-7)):
        bound = IELBO(Fixed(delta), samples, normalized=normalized, tolerance=tolerance)
        result, z = _call(bound, vae, xs)
        per_pixel = log_normal_interval(xs - delta, xs + delta, vae.w * z[..., None] + vae.b,
                                        vae.s)
        if normalized:
            per_pixel = per_pixel - math.log(2 * delta)
        if tolerance:
            per_pixel = np.log(np.exp(per_pixel) + tolerance)
        recon = per_pixel.sum(-1).mean(0)
        np.testing.assert_allclose(result.reconstruction.numpy(), recon, rtol=1e-11)
        np.testing.assert_allclose(result.bound.numpy(), recon - _kl(vae, xs), rtol=1e-11)
        assert result.log_weights is None


@pytest.mark.parametrize("samples", [1, 6])
def test_iw_ielbo_matches_its_formula(sampled, samples):
    vae, xs = sampled
    result, z = _call(IWIELBO(Fixed(0.05), samples), vae, xs)
    data = _interval_terms(vae, z, xs, 0.05)
    log_w = vae.log_weights_of(z, xs)
    np.testing.assert_allclose(result.bound.numpy(), logmeanexp(data + log_w), rtol=1e-11)
    np.testing.assert_allclose(result.log_weights.numpy(), data + log_w, rtol=1e-11)
    np.testing.assert_allclose(result.reconstruction.numpy(), data.mean(0), rtol=1e-11)
    np.testing.assert_allclose(result.kl.numpy(), _kl(vae, xs), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.3, 0.9, 1.5, 4.0])
@pytest.mark.parametrize("samples", [1, 6])
def test_irelbo_matches_its_formula(sampled, samples, alpha):
    """(1/beta)[logsumexp_k(beta log w_k + log J_beta(z_k)) - log K] - (alpha/beta) log|I|
    with J_beta by Gauss-Legendre quadrature."""
    vae, xs = sampled
    delta, beta = 0.05, 1.0 - alpha
    result, z = _call(IRELBO(Fixed(delta), alpha, samples), vae, xs)
    log_j = np.array([[vae.log_power_integral_given_z(z[k, i], xs[i] - delta, xs[i] + delta,
                                                      beta) for i in range(z.shape[1])]
                      for k in range(z.shape[0])])
    log_volume = xs.shape[1] * math.log(2 * delta)
    log_w = vae.log_weights_of(z, xs)
    expected = logmeanexp(beta * log_w + log_j) / beta - alpha / beta * log_volume
    np.testing.assert_allclose(result.bound.numpy(), expected, rtol=1e-9)
    data = (log_j - alpha * log_volume) / beta
    np.testing.assert_allclose(result.reconstruction.numpy(), data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(result.log_weights.numpy(), data + log_w, rtol=1e-9)


@pytest.mark.parametrize("samples", [1, 6])
def test_density_bounds_match_their_formulas(sampled, samples):
    vae, xs = sampled
    for bound, combine in (
        (IWAE(samples), logmeanexp),
        (VR(0.5, samples), lambda lw: logmeanexp(0.5 * lw) / 0.5),
        (VR(-2.0, samples), lambda lw: logmeanexp(3.0 * lw) / 3.0),
        (VR(3.0, samples), lambda lw: logmeanexp(-2.0 * lw) / -2.0),
        (VRMax(samples), lambda lw: lw.max(0)),
    ):
        result, z = _call(bound, vae, xs)
        log_weights = vae.log_density_given_z(z, xs) + vae.log_weights_of(z, xs)
        np.testing.assert_allclose(result.bound.numpy(), combine(log_weights), rtol=1e-11)
        np.testing.assert_allclose(result.log_weights.numpy(), log_weights, rtol=1e-11)
        np.testing.assert_allclose(result.reconstruction.numpy(),
                                   vae.log_density_given_z(z, xs).mean(0), rtol=1e-11)


@pytest.mark.parametrize("outer, inner", [(1, 1), (3, 1), (1, 4), (3, 4)])
def test_miwae_matches_its_formula(sampled, outer, inner):
    """The M * K draws are split into M groups of K (any fixed split gives an estimator with
    the same distribution; the check is on the value for the package's contiguous split)."""
    vae, xs = sampled
    result, z = _call(MIWAE(outer, inner), vae, xs)
    assert z.shape[0] == outer * inner
    log_weights = vae.log_density_given_z(z, xs) + vae.log_weights_of(z, xs)
    groups = log_weights.reshape(outer, inner, -1)
    expected = np.mean([logmeanexp(g) for g in groups], axis=0)
    np.testing.assert_allclose(result.bound.numpy(), expected, rtol=1e-11)


# --------------------------------------------------- relations between density bounds


@pytest.mark.parametrize("name", ["D1", "D2"])
def test_iwae_single_sample_is_the_single_sample_elbo(name):
    """IWAE_1 = log p(x | z) + log p(z) - log q(z | x): the same data term as the ELBO for the
    same z, with the sampled instead of the analytic KL, so equal in expectation."""
    vae, x = model(name, "wide")
    iwae = run(IWAE(1), vae, x, 4000, seed=21)
    z = vae.last_z[..., 0].numpy()
    elbo = run(ELBO(1), vae, x, 4000, seed=21)
    np.testing.assert_array_equal(iwae.reconstruction.numpy(), elbo.reconstruction.numpy())
    log_w = vae.log_weights_of(z, np.broadcast_to(x, (4000, x.size)))[0]
    np.testing.assert_allclose(iwae.bound.numpy(), elbo.reconstruction.numpy() + log_w,
                               rtol=1e-12)
    mean_iwae, se_iwae = mean_se(iwae.bound)
    mean_elbo, se_elbo = mean_se(elbo.bound)
    assert abs(mean_iwae - mean_elbo) <= 4.0 * math.hypot(se_iwae, se_elbo)


@pytest.mark.parametrize("samples", [1, 10])
def test_vr_limits(samples):
    """VR_0 = IWAE exactly (same z); VR_{1 -+ 1e-6} = mean_k l_k + (beta/2) var_k l_k to 1e-7,
    l_k = log p(x|z_k) + log w_k, whose expectation is the ELBO's; VR-max >= IWAE for the same
    samples."""
    vae, x = model("D2", "wide")
    iwae = run(IWAE(samples), vae, x, 500, seed=2)
    vr0 = run(VR(0.0, samples), vae, x, 500, seed=2)
    torch.testing.assert_close(vr0.bound, iwae.bound, rtol=0, atol=1e-12)
    average = iwae.log_weights.mean(0)
    # Second order in beta: VR = mean_k l_k + (beta / 2) var_k(l) + O(beta^2).
    spread = iwae.log_weights.var(0, unbiased=False)
    for alpha in (1.0 - 1e-6, 1.0 + 1e-6):
        vr1 = run(VR(alpha, samples), vae, x, 500, seed=2)
        torch.testing.assert_close(vr1.bound, average + 0.5 * (1 - alpha) * spread, rtol=0,
                                   atol=1e-7)
    elbo = run(ELBO(samples), vae, x, 500, seed=3)
    (m_vr, s_vr), (m_e, s_e) = mean_se(average), mean_se(elbo.bound)
    assert abs(m_vr - m_e) <= 4.0 * math.hypot(s_vr, s_e)
    vrmax = run(VRMax(samples), vae, x, 500, seed=2)
    assert torch.all(vrmax.bound >= iwae.bound - 1e-12)
    if samples > 1:
        assert torch.all(vrmax.bound > iwae.bound)


def test_vr_is_monotone_in_alpha_for_the_same_samples():
    """The power mean (1/beta) log mean exp(beta l) decreases as alpha increases."""
    vae, x = model("D2", "wide")
    values = [run(VR(a, 10), vae, x, 100, seed=9).bound for a in (-3.0, 0.0, 0.5, 2.0, 5.0)]
    for hi, lo in zip(values[:-1], values[1:], strict=True):
        assert torch.all(hi >= lo - 1e-12)
    vrmax = run(VRMax(10), vae, x, 100, seed=9).bound
    assert torch.all(vrmax >= values[0] - 1e-12)


@pytest.mark.parametrize("samples", [1, 5])
def test_miwae_limits(samples):
    """MIWAE_{1,K} = IWAE_K (same z); MIWAE_{M,1} is the M-sample ELBO with the sampled KL."""
    vae, x = model("D2", "wide")
    torch.testing.assert_close(run(MIWAE(1, samples), vae, x, 300, seed=4).bound,
                               run(IWAE(samples), vae, x, 300, seed=4).bound, rtol=0, atol=0)
    miwae = run(MIWAE(samples, 1), vae, x, 300, seed=4)
    z = vae.last_z[..., 0].numpy()
    elbo = run(ELBO(samples), vae, x, 300, seed=4)
    log_w = vae.log_weights_of(z, np.broadcast_to(x, (300, x.size))).mean(0)
    np.testing.assert_allclose(miwae.bound.numpy(), elbo.reconstruction.numpy() + log_w,
                               rtol=1e-12)


# ---------------------------------------------------------- Jensen, per set of samples


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dims=st.integers(1, 3),
    data=st.data(),
    samples=st.integers(1, 20),
    delta=st.floats(0.005, 0.5),
    shift=st.floats(-2.0, 2.0),
    widen=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_iw_ielbo_dominates_the_average_ielbo_term_for_the_same_samples(
        dims, data, samples, delta, shift, widen, seed):
    """For one set of samples z_1..z_K: IW-IELBO_K = log mean_k exp(l_k) >= mean_k l_k with
    l_k = log P(I | z_k) + log w_k (Jensen), where mean_k log P(I | z_k) is the K-sample IELBO's
    data term. Both sides are recomputed from the samples with scipy."""
    floats = st.floats
    w = np.array(data.draw(st.lists(floats(-2.0, 2.0), min_size=dims, max_size=dims)))
    b = np.array(data.draw(st.lists(floats(-1.0, 1.0), min_size=dims, max_size=dims)))
    s = np.array(data.draw(st.lists(floats(0.05, 2.0), min_size=dims, max_size=dims)))
    x = np.array(data.draw(st.lists(floats(-2.0, 2.0), min_size=dims, max_size=dims)))
    vae = LinearGaussianVAE(w, b, s, shift=shift, widen=widen)
    xs = x[None, :]
    torch.manual_seed(seed)
    iw = IWIELBO(Fixed(delta), samples)(vae, torch.as_tensor(xs))
    z = vae.last_z[..., 0].numpy()
    torch.manual_seed(seed)
    ielbo = IELBO(Fixed(delta), samples)(vae, torch.as_tensor(xs))
    np.testing.assert_array_equal(vae.last_z[..., 0].numpy(), z)
    data_terms = _interval_terms(vae, z, xs, delta)
    log_w = vae.log_weights_of(z, xs)
    np.testing.assert_allclose(ielbo.reconstruction.numpy(), data_terms.mean(0), rtol=1e-9,
                               atol=1e-9)
    average = ielbo.reconstruction.numpy() + log_w.mean(0)
    assert iw.bound.item() >= average.item() - 1e-9 * (1 + abs(average.item()))
    np.testing.assert_allclose(iw.bound.numpy(), logmeanexp(data_terms + log_w), rtol=1e-9,
                               atol=1e-9)


# ------------------------------------------------------------------ the registry


NAMES = {"elbo": ELBO, "ielbo": IELBO, "iw_ielbo": IWIELBO, "irelbo": IRELBO, "iwae": IWAE,
         "vr": VR, "vr_max": VRMax, "miwae": MIWAE}
"""The names users type (``bound=<name>``, docs/configuration.md) and the estimators they mean;
each class is checked against its formula above."""


def test_each_name_gives_the_estimator_it_names():
    assert sorted(REGISTRY) == sorted(NAMES)
    for name, cls in NAMES.items():
        assert get_bound(name) is cls, name
    with pytest.raises(ValueError, match=r"^bound='nope' is invalid: bound must be one of .*elbo"):
        get_bound("nope")


def test_registering_a_name_twice_is_refused():
    from intvae.bounds import register

    with pytest.raises(ValueError, match=r"'elbo' is registered twice"):
        register("elbo")(type("Other", (ELBO,), {}))
    assert REGISTRY["elbo"] is ELBO


# ------------------------------------------------------------------ invalid parameters

ALL_BOUNDS = {
    "elbo": lambda samples: ELBO(samples),
    "ielbo": lambda samples: IELBO(Fixed(0.01), samples),
    "iw_ielbo": lambda samples: IWIELBO(Fixed(0.01), samples),
    "irelbo": lambda samples: IRELBO(Fixed(0.01), 2.0, samples),
    "iwae": lambda samples: IWAE(samples),
    "vr": lambda samples: VR(0.5, samples),
    "vr_max": lambda samples: VRMax(samples),
    "miwae": lambda samples: MIWAE(2, samples),
}


def test_every_registered_bound_is_covered_by_the_validation_tests():
    assert set(ALL_BOUNDS) == set(REGISTRY)


@pytest.mark.parametrize("value, shown", [(0, "0"), (-1, "-1"), (1.5, "1.5"), (True, "True"),
                                          ("3", "'3'"), (None, "None")])
@pytest.mark.parametrize("name", sorted(ALL_BOUNDS))
def test_samples_must_be_a_positive_integer(name, value, shown):
    with pytest.raises(ValueError, match=rf"samples={shown} is invalid.*integer >= 1"):
        ALL_BOUNDS[name](value)


@pytest.mark.parametrize("value, shown", [(0, "0"), (-3, "-3"), (0.5, "0.5")])
def test_miwae_outer_samples_must_be_a_positive_integer(value, shown):
    with pytest.raises(ValueError, match=rf"outer_samples={shown} is invalid.*integer >= 1"):
        MIWAE(value, 5)


@pytest.mark.parametrize("alpha, shown", [(0, "0"), (0.0, "0.0"), (-0.5, "-0.5"), (1, "1"),
                                          (1.0, "1.0"), (math.nan, "nan"), (math.inf, "inf"),
                                          (-math.inf, "-inf")])
def test_irelbo_alpha_must_be_positive_and_not_one(alpha, shown):
    with pytest.raises(ValueError, match=rf"alpha={shown} is invalid: alpha must be .*> 0"):
        IRELBO(Fixed(0.01), alpha)


@pytest.mark.parametrize("alpha, shown", [(1, "1"), (1.0, "1.0"), (math.nan, "nan"),
                                          (math.inf, "inf")])
def test_vr_alpha_must_be_finite_and_not_one(alpha, shown):
    with pytest.raises(ValueError, match=rf"alpha={shown} is invalid: alpha must be .*other "
                                         r"than 1"):
        VR(alpha)


def test_vr_accepts_negative_and_zero_alpha():
    assert VR(-2.0).alpha == -2.0 and VR(0).alpha == 0.0


def test_irelbo_refuses_the_unbounded_bins():
    with pytest.raises(ValueError, match=r"interval=Bins\(levels=256.*is invalid.*finite"):
        IRELBO(Bins(256), 2.0)


def test_normalized_ielbo_refuses_the_unbounded_bins():
    with pytest.raises(ValueError, match=r"normalized=True is invalid.*bins"):
        IELBO(Bins(16), normalized=True)
    assert IELBO(Bins(16), normalized=False).normalized is False


@pytest.mark.parametrize("tolerance, shown", [(-1e-7, "-1e-07"), (math.nan, "nan"),
                                              (math.inf, "inf")])
def test_ielbo_tolerance_must_be_finite_and_non_negative(tolerance, shown):
    with pytest.raises(ValueError, match=rf"tolerance={shown} is invalid"):
        IELBO(Fixed(0.01), tolerance=tolerance)


# ------------------------------------------------- gradients against finite differences


class TorchLinearVAE:
    """The linear-Gaussian model with its parameters as float64 tensors: decoder w, b, log s
    (D = 2, latent L = 2 so that z mixes) and q's loc and log-scale per latent dimension."""

    def __init__(self, w, b, log_s, q_loc, q_log_scale):
        self.w, self.b, self.log_s = w, b, log_s
        self.q_loc, self.q_log_scale = q_loc, q_log_scale

    def encode(self, x):
        shape = (x.shape[0], self.q_loc.shape[0])
        return dist.Normal(self.q_loc.expand(shape), self.q_log_scale.exp().expand(shape))

    def decode(self, z):
        loc = z @ self.w + self.b  # (K, B, L) @ (L, D)
        return Gaussian(loc, self.log_s.exp().expand_as(loc))


GRADIENT_BOUNDS = [
    pytest.param(lambda: ELBO(3), id="elbo"),
    pytest.param(lambda: IELBO(Fixed(0.1), 3), id="ielbo"),
    pytest.param(lambda: IELBO(Fixed(0.1), 3, normalized=True, tolerance=1e-3),
                 id="ielbo-normalized-tolerance"),
    pytest.param(lambda: IELBO(Bins(8, 0.01), 3), id="ielbo-bins"),
    pytest.param(lambda: IWIELBO(Fixed(0.1), 4), id="iw_ielbo"),
    pytest.param(lambda: IRELBO(Fixed(0.1), 0.5, 4), id="irelbo-0.5"),
    pytest.param(lambda: IRELBO(Fixed(0.1), 2.0, 4), id="irelbo-2"),
    pytest.param(lambda: IWAE(4), id="iwae"),
    pytest.param(lambda: VR(0.5, 4), id="vr"),
    pytest.param(lambda: VRMax(4), id="vr_max"),
    pytest.param(lambda: MIWAE(2, 3), id="miwae"),
]


@pytest.mark.parametrize("make", GRADIENT_BOUNDS)
def test_reparameterized_gradients_match_finite_differences(make):
    """With the noise of z = m + s * eps fixed (same seed on every call), each bound is a smooth
    function of the encoder's and decoder's parameters; autograd's gradient (through the
    reparameterized samples, log q, the KL and the interval functions) must match central
    differences."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift
              for shape, scale, shift in (((2, 2), 0.7, 0.0), ((2,), 0.3, 0.4), ((2,), 0.2, -1.2),
                                          ((2,), 0.5, 0.0), ((2,), 0.2, -0.5))]
    for p in params:
        p.requires_grad_()
    x = torch.tensor([[0.55, 0.2], [0.3, 0.9]], dtype=torch.float64)
    bound = make()

    def value(*p):
        torch.manual_seed(123)
        return bound(TorchLinearVAE(*p), x).bound

    assert torch.autograd.gradcheck(value, params, eps=1e-6, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------- float32 robustness


class TinyScaleVAE(torch.nn.Module):
    """float32 decoder with learnable loc and log-scale per pixel and a learnable q."""

    def __init__(self, loc: list[float], scale: float):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.tensor(loc, dtype=torch.float32))
        self.log_scale = torch.nn.Parameter(torch.full((len(loc),), math.log(scale),
                                                       dtype=torch.float32))
        self.q_loc = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float32))
        self.q_log_scale = torch.nn.Parameter(torch.tensor([-0.5, 0.1], dtype=torch.float32))

    def encode(self, x):
        shape = (x.shape[0], 2)
        return dist.Normal(self.q_loc.expand(shape), self.q_log_scale.exp().expand(shape))

    def decode(self, z):
        # The decoder ignores z except for a tiny dependence that keeps gradients flowing.
        loc = self.loc + 0.0 * z.sum(-1, keepdim=True)
        return Gaussian(loc, self.log_scale.exp().expand_as(loc))


FLOAT32_BOUNDS = [
    pytest.param(lambda: IELBO(Fixed(0.01), 3), id="ielbo"),
    pytest.param(lambda: IELBO(Fixed(0.01), 3, normalized=True), id="ielbo-normalized"),
    pytest.param(lambda: IELBO(Fixed(0.01), 3, tolerance=1e-7), id="ielbo-tolerance"),
    pytest.param(lambda: IELBO(Bins(256, 0.001), 3), id="ielbo-bins"),
    pytest.param(lambda: IWIELBO(Fixed(0.01), 5), id="iw_ielbo"),
    pytest.param(lambda: IWIELBO(Bins(256, 0.001), 5), id="iw_ielbo-bins"),
    pytest.param(lambda: IRELBO(Fixed(0.01), 0.5, 3), id="irelbo-0.5"),
    pytest.param(lambda: IRELBO(Fixed(0.01), 2.0, 3), id="irelbo-2"),
    pytest.param(lambda: IRELBO(Fixed(0.01), 5.0, 3), id="irelbo-5"),
]


@pytest.mark.parametrize("scale", [1e-9, 1e-30])
@pytest.mark.parametrize("offset", [0.0, 0.5, 10.0, -1e3, 1e30])
@pytest.mark.parametrize("make", FLOAT32_BOUNDS)
def test_float32_tiny_scales_give_finite_values_and_gradients(make, offset, scale):
    """x = 0.4 and 0.6 per pixel; the decoder's loc is x + offset (inside the interval for
    offset 0, far outside otherwise) with a scale of 1e-9 or 1e-30."""
    x = torch.tensor([[0.4, 0.6], [0.6, 0.4]], dtype=torch.float32)
    vae = TinyScaleVAE([0.4 + offset, 0.6 + offset], scale)
    vae.zero_grad()
    result = make()(vae, x)
    assert result.bound.dtype == torch.float32 and result.bound.shape == (2,)
    assert torch.all(torch.isfinite(result.bound)), result.bound
    assert torch.all(torch.isfinite(result.reconstruction)), result.reconstruction
    result.bound.sum().backward()
    for name, param in vae.named_parameters():
        assert param.grad is not None and torch.all(torch.isfinite(param.grad)), (name, param.grad)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: IELBO(Fixed(0.01), 1), id="ielbo"),
    pytest.param(lambda: IWIELBO(Fixed(0.01), 1), id="iw_ielbo"),
])
def test_float32_tiny_scales_keep_the_sign_and_order_of_the_data_term(make):
    """Inside the interval the interval probability tends to 1 (data term ~ 0); outside it is
    very small and gets smaller with the distance."""
    x = torch.tensor([[0.4, 0.6]], dtype=torch.float32)
    inside = make()(TinyScaleVAE([0.4, 0.6], 1e-9), x).reconstruction
    assert torch.all(inside.abs() <= 1e-6)
    values = [make()(TinyScaleVAE([0.4 + d, 0.6 + d], 1e-9), x).reconstruction.item()
              for d in (0.02, 0.5, 10.0)]
    # -(distance - delta)^2 / (2 scale^2), summed over 2 pixels.
    assert values[0] == pytest.approx(-2 * (0.01 / 1e-9) ** 2 / 2, rel=1e-3)
    assert values[0] > values[1] > values[2]


@pytest.mark.parametrize("make, warns", [
    (lambda k: IWAE(k), True), (lambda k: VR(0.5, k), True), (lambda k: VRMax(k), True),
    (lambda k: MIWAE(3, k), True), (lambda k: IWIELBO(Fixed(DELTA), k), True),
    (lambda k: ELBO(k), False), (lambda k: IELBO(Fixed(DELTA), k), False),
    (lambda k: IRELBO(Fixed(DELTA), 0.5, k), False)])
def test_an_importance_weighted_bound_at_one_sample_warns(make, warns):
    """K = 1 is allowed for an importance-weighted bound only with a warning that it equals the
    single-sample ELBO (IELBO) in expectation; K > 1, and the single-sample bounds, are silent."""
    import warnings

    from intvae.bounds.base import SingleSampleWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make(2)
        make(1)
    found = [w for w in caught if issubclass(w.category, SingleSampleWarning)]
    assert len(found) == (1 if warns else 0)
    if warns:
        assert "samples=1 equals the single-sample" in str(found[0].message)
