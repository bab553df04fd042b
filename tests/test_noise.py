"""The training-data noises of intvae.noise (the fixes the paper argues against)."""

import pytest
import torch
from scipy import stats
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from intvae.noise import GaussianNoise, UniformDequantization


def test_uniform_dequantization_fills_each_bin_uniformly():
    torch.manual_seed(0)
    eps = 0.001
    noise = UniformDequantization(levels=256, eps=eps)
    width = (1 - 2 * eps) / 255
    assert noise.width == pytest.approx(width)
    x = torch.full((200_000,), eps + 7 * width)
    u = (noise(x) - x) / width + 0.5  # should be U(0, 1)
    assert u.min() >= 0 and u.max() <= 1
    assert stats.kstest(u.double().numpy(), "uniform").pvalue > 1e-3


def test_gaussian_noise_has_the_requested_std():
    torch.manual_seed(0)
    x = torch.full((200_000,), 0.5)
    n = (GaussianNoise(std=0.01)(x) - x) / 0.01
    assert stats.kstest(n.double().numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("make, message", [
    (lambda: UniformDequantization(levels=1), "noise.levels=1 is invalid"),
    (lambda: UniformDequantization(eps=0.5), "noise.eps=0.5 is invalid"),
    (lambda: GaussianNoise(std=0), "noise.std=0 is invalid"),
    (lambda: GaussianNoise(std=float("nan")), "noise.std=nan is invalid"),
])
def test_bad_settings_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
