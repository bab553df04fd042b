"""Interval policies: ``Fixed`` half-width intervals and the ``Bins`` of quantized pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from intvae.intervals import Bins, Fixed
from intvae.likelihoods import ContinuousBernoulli, Gaussian, LogitNormal

LEVELS = [4, 16, 256]
EPS = [0.0, 1e-3]


def level_values(levels: int, eps: float) -> torch.Tensor:
    """v_k = eps + (1 - 2 eps) k / (levels - 1), k = 0..levels-1, float64."""
    k = torch.arange(levels, dtype=torch.float64)
    return eps + (1.0 - 2.0 * eps) * k / (levels - 1)


# ------------------------------------------------------------------------------ Bins


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("levels", LEVELS)
def test_bins_partition_the_real_line(levels, eps):
    """Lowest bin open below, highest open above, neighbours share their boundary exactly,
    every finite bin is one spacing wide and centred on its level value."""
    bins = Bins(levels, eps)
    v = level_values(levels, eps)
    lo, hi = bins(v)
    assert lo[0].item() == -math.inf and hi[-1].item() == math.inf
    assert torch.all(torch.isfinite(lo[1:])) and torch.all(torch.isfinite(hi[:-1]))
    assert torch.equal(hi[:-1], lo[1:])
    spacing = (1.0 - 2.0 * eps) / (levels - 1)
    torch.testing.assert_close(hi[1:-1] - lo[1:-1], torch.full((levels - 2,), spacing,
                                                               dtype=torch.float64),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(0.5 * (hi[1:-1] + lo[1:-1]), v[1:-1], rtol=0, atol=1e-15)
    assert torch.all(lo < v) and torch.all(v < hi)
    torch.testing.assert_close(bins.log_width(v), torch.full_like(v, math.log(spacing)))


LOCS = [-0.3, 0.0, 0.2, 0.37, 0.5, 0.9999, 1.0, 1.7]
SCALES = [1e-6, 1e-3, 0.1, 1.0, 1e3]


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("levels", LEVELS)
def test_gaussian_bin_probabilities_sum_to_one(levels, eps):
    """sum_k P(I_k | z) = 1 within 1e-10 for locs inside, outside and on the level grid,
    tiny and huge scales; each P(I_k | z) agrees with scipy's normal CDF differences."""
    bins = Bins(levels, eps)
    v = level_values(levels, eps)
    lo, hi = bins(v)
    boundary = float(hi[levels // 2 - 1])  # loc exactly on a bin boundary
    for loc in [*LOCS, float(v[1]), boundary]:
        for scale in SCALES:
            likelihood = Gaussian(torch.full_like(v, loc), torch.full_like(v, scale))
            log_p = likelihood.log_interval_prob(lo, hi)
            assert torch.all(log_p <= 0.0) and not torch.any(torch.isnan(log_p))
            total = torch.logsumexp(log_p, 0).exp().item()
            assert total == pytest.approx(1.0, abs=1e-10), (loc, scale, total)
            reference = (stats.norm.cdf(hi.numpy(), loc, scale)
                         - stats.norm.cdf(lo.numpy(), loc, scale))
            np.testing.assert_allclose(log_p.exp().numpy(), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("levels", LEVELS)
def test_other_interval_likelihoods_bin_probabilities_sum_to_one(levels, eps):
    bins = Bins(levels, eps)
    v = level_values(levels, eps)
    lo, hi = bins(v)
    for loc in (-4.0, 0.0, 0.3, 6.0):
        for scale in (1e-3, 0.5, 30.0):
            ln = LogitNormal(torch.full_like(v, loc), torch.full_like(v, scale))
            total = torch.logsumexp(ln.log_interval_prob(lo, hi), 0).exp().item()
            assert total == pytest.approx(1.0, abs=1e-10), ("logit_normal", loc, scale)
    for logit in (-30.0, -2.0, 0.0, 1e-4, 0.7, 25.0):
        cb = ContinuousBernoulli(torch.full_like(v, logit))
        total = torch.logsumexp(cb.log_interval_prob(lo, hi), 0).exp().item()
        assert total == pytest.approx(1.0, abs=1e-10), ("continuous_bernoulli", logit)


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("levels", LEVELS)
def test_bins_level_recovers_the_level(levels, eps):
    bins = Bins(levels, eps)
    v = level_values(levels, eps)
    spacing = (1.0 - 2.0 * eps) / (levels - 1)
    expected = torch.arange(levels, dtype=torch.float64)
    for jitter in (0.0, 0.49, -0.49, 0.2):
        x = v + jitter * spacing
        torch.testing.assert_close(bins.level(x), expected, rtol=0, atol=0)
        # Every point of a bin gets that bin's interval.
        lo, hi = bins(x)
        lo_v, hi_v = bins(v)
        assert torch.equal(lo, lo_v) and torch.equal(hi, hi_v)
    # Out-of-range values go to the end (open) bins.
    far = torch.tensor([-5.0, -1e-3, 1.0 + 1e-3, 7.0], dtype=torch.float64)
    torch.testing.assert_close(bins.level(far), torch.tensor([0.0, 0.0, levels - 1.0,
                                                              levels - 1.0],
                                                             dtype=torch.float64))
    # 8-bit data rescaled to [eps, 1 - eps] comes back as its integer.
    if levels == 256:
        raw = torch.arange(256, dtype=torch.float64)
        x = eps + (1.0 - 2.0 * eps) * raw / 255.0
        assert torch.equal(bins.level(x.float()).double(), raw)


def test_bins_works_in_float32_and_on_batches():
    bins = Bins(256, 0.001)
    x = torch.rand(3, 5, 7)
    lo, hi = bins(x)
    assert lo.shape == hi.shape == x.shape and lo.dtype == torch.float32
    assert torch.all((lo < x) & (x < hi))


def test_bins_is_always_discrete_and_not_finite():
    assert Bins(16).is_discrete(256, 0.0) and Bins(256, 0.1).is_discrete(4, 0.3)
    assert Bins.finite is False and Fixed.finite is True
    assert repr(Bins(16, 0.25)) == "Bins(levels=16, eps=0.25)"


@pytest.mark.parametrize("levels, shown", [
    (1, "1"),
    (0, "0"),
    (-4, "-4"),
    (2.5, "2.5"),
    (True, "True"),
])
def test_bins_levels_must_be_an_integer_of_at_least_two(levels, shown):
    with pytest.raises(ValueError, match=rf"levels={shown} is invalid: levels must be") as info:
        Bins(levels)
    assert "integer >= 2" in str(info.value), str(info.value)


@pytest.mark.parametrize("eps, shown", [(-0.1, "-0.1"), (0.5, "0.5"), (0.7, "0.7"),
                                        (math.nan, "nan"), (math.inf, "inf")])
def test_bins_eps_must_be_in_range(eps, shown):
    with pytest.raises(ValueError, match=rf"eps={shown} is invalid: eps must be a number in "
                                         r"\[0, 0.5\)"):
        Bins(256, eps)


# ------------------------------------------------------------------------------ Fixed


def test_fixed_interval_and_width():
    x = torch.tensor([[0.0, 0.25, 1.0]], dtype=torch.float64)
    lo, hi = Fixed(0.01)(x)
    torch.testing.assert_close(lo, x - 0.01)
    torch.testing.assert_close(hi, x + 0.01)
    torch.testing.assert_close(Fixed(0.01).log_width(x), torch.full_like(x, math.log(0.02)))
    assert Fixed(1).delta == 1.0 and isinstance(Fixed(1).delta, float)
    assert repr(Fixed(0.005)) == "Fixed(delta=0.005)"


def _neighbours_overlap(delta: float, levels: int, eps: float) -> bool:
    """Do the intervals [v_k - delta, v_k + delta] of neighbouring levels overlap (share more
    than a boundary point)?"""
    v = level_values(levels, eps)
    lo, hi = Fixed(delta)(v)
    return bool(torch.any(hi[:-1] > lo[1:] + 1e-15))


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("levels", [2, 16, 256])
def test_fixed_is_discrete_when_neighbouring_intervals_do_not_overlap(levels, eps):
    half_spacing = 0.5 * (1.0 - 2.0 * eps) / (levels - 1)
    for factor in (0.01, 0.5, 0.9, 0.999, 1.001, 1.1, 2.0, 100.0):
        delta = factor * half_spacing
        assert Fixed(delta).is_discrete(levels, eps) == (not _neighbours_overlap(delta, levels,
                                                                                 eps)), factor
        assert Fixed(delta).is_discrete(levels, eps) == (factor < 1)
    # The paper's delta = 0.01 on 8-bit data is only an interval likelihood; 1/512 is discrete.
    assert not Fixed(0.01).is_discrete(256, 0.0)
    assert Fixed(1 / 512).is_discrete(256, 0.0)
    assert Fixed(half_spacing).is_discrete(levels, eps)  # touching intervals are fine


@pytest.mark.parametrize("delta, shown", [(0, "0"), (0.0, "0.0"), (-1, "-1"), (-0.01, "-0.01"),
                                          (math.nan, "nan"), (math.inf, "inf"),
                                          (-math.inf, "-inf"), (True, "True"), ("0.1", "'0.1'"),
                                          (None, "None")])
def test_fixed_delta_must_be_finite_and_positive(delta, shown):
    with pytest.raises(ValueError, match=rf"^delta={shown} is invalid: delta must be a finite "
                                         r"number > 0$"):
        Fixed(delta)
