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


def test_the_module_adds_noise_to_training_batches_only():
    """VAEModule applies the noise to what training sees; validation sees the clean data."""
    from functools import partial

    from intvae.app.module import VAEModule
    from intvae.bounds import ELBO
    from intvae.likelihoods import GaussianHead
    from intvae.networks import VAE

    seen = []

    class Recorder(ELBO):
        def __call__(self, vae, x):
            seen.append((torch.is_grad_enabled(), x.clone()))
            return super().__call__(vae, x)

    torch.manual_seed(0)
    module = VAEModule(VAE(4, GaussianHead(), hidden=[4], latent=2), Recorder(),
                       partial(torch.optim.Adam, lr=1e-3), noise=GaussianNoise(std=0.1))
    x = torch.full((3, 4), 0.5)
    module.training_step(x, 0)
    with torch.no_grad():
        module.validation_step(x, 0)
    (train_grad, train_x), (val_grad, val_x) = seen
    assert train_grad and not val_grad
    assert not torch.equal(train_x, x) and torch.equal(val_x, x)
