"""The LightningModule, its metrics and the non-finite guard, with a tiny VAE on random data;
bits per dimension of a model whose discrete likelihood is known in closed form."""

import math
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from linear_gaussian import log_normal_interval

from intvae.app.callbacks import NonFiniteGuard
from intvae.app.errors import NonFiniteError
from intvae.app.evaluate import evaluate
from intvae.app.metrics import DecoderStdStats, FiniteMean
from intvae.app.module import VAEModule
from intvae.bounds import IELBO
from intvae.data import ImageDataModule, IndexBatches
from intvae.intervals import Fixed
from intvae.likelihoods import GaussianHead
from intvae.networks import VAE

PIXELS = 16


class FlakyBound(IELBO):
    """The IELBO, except that the given training calls return a NaN bound."""

    def __init__(self, nan_calls: set[int]):
        super().__init__(Fixed(0.05), samples=2)
        self.nan_calls, self.calls = nan_calls, 0

    def __call__(self, vae, x):
        result = super().__call__(vae, x)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.nan_calls:
                result.bound = result.bound * math.nan
        return result


def batches(n: int = 4, size: int = 8) -> IndexBatches:
    """``n`` batches of ``size`` random images, in order."""
    images = torch.rand(n * size, PIXELS, generator=torch.Generator().manual_seed(0))
    return IndexBatches(images.mul(0.9).add(0.05), size, train=False)


def fit(bound, guard: NonFiniteGuard, tmp_path, epochs: int = 2) -> VAEModule:
    torch.manual_seed(0)
    module = VAEModule(VAE(PIXELS, GaussianHead(), hidden=[8], latent=2), bound,
                       partial(torch.optim.Adam, lr=1e-2))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=epochs, accelerator="cpu",
                        callbacks=[guard, checkpoint], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=batches(), val_dataloaders=batches(1))
    return module


def test_skip_mode_skips_and_counts_non_finite_steps(tmp_path):
    guard = NonFiniteGuard("skip")
    module = fit(FlakyBound({2, 7}), guard, tmp_path)
    assert guard.non_finite_steps == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    adam = module.trainer.optimizers[0]
    steps = {int(state["step"]) for state in adam.state.values()}
    assert steps == {8 - 2}  # the skipped updates moved no Adam state either
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["callbacks"]["NonFiniteGuard"] == {"non_finite_steps": 2}
    assert module.trainer.callback_metrics["train/non_finite_steps"] == 2
    assert math.isfinite(module.trainer.callback_metrics["train/bound"])  # NaNs left out


def test_stop_mode_stops_with_run_step_and_quantity_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite loss in run .* at step 5 \(epoch 1\)"):
        fit(FlakyBound({6}), NonFiniteGuard("stop"), tmp_path)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_no_checkpoint_with_non_finite_weights(tmp_path):
    guard = NonFiniteGuard("skip")
    state = {"state_dict": {"w": torch.tensor([1.0, math.inf]), "n": torch.tensor([3])}}
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False)
    with pytest.raises(NonFiniteError, match=r"refusing to write a checkpoint.*\['w'\]"):
        guard.on_save_checkpoint(trainer, None, state)


def test_guard_mode_is_validated():
    with pytest.raises(ValueError, match="guard.mode='sometimes' is invalid"):
        NonFiniteGuard("sometimes")


def test_finite_mean_leaves_out_non_finite_values():
    metric = FiniteMean()
    metric.update(torch.tensor([1.0, math.nan, 3.0, -math.inf]))
    metric.update(torch.tensor([5.0]))
    assert metric.compute() == 3.0
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(FiniteMean().compute())


def test_decoder_std_stats_against_exact_values():
    scales = [10 ** torch.empty(1000).uniform_(-6, 1, generator=torch.Generator().manual_seed(i))
              for i in range(3)]
    metric = DecoderStdStats()
    for scale in scales:
        metric.update(scale.reshape(10, 100))
    stats = metric.compute()
    everything = torch.cat(scales)
    assert stats["std_min"] == everything.min()
    assert stats["std_below_1e-3"] == pytest.approx((everything < 1e-3).float().mean().item())
    assert abs(stats["std_median"].log10() - everything.median().log10()) < 0.05
    metric.reset()
    metric.update(torch.tensor([1e-30, 2e-30, 1e30]))
    assert metric.compute()["std_median"] == pytest.approx(2e-30, rel=0.13)


def test_every_stage_logs_its_quantities(tmp_path):
    """The test stage logs each quantity; test/kl is the mean over all test images (20, in
    batches of 7, 7 and 6: a mean of the batch means would differ) of the KL of q(z | x) from
    the prior, 0.5 sum_j (m_j^2 + s_j^2 - 1 - 2 log s_j), computed here from the encoder."""
    module = fit(IELBO(Fixed(0.05), samples=2), NonFiniteGuard(), tmp_path, epochs=1)
    images = torch.rand(20, PIXELS, generator=torch.Generator().manual_seed(5)) * 0.9 + 0.05
    test = IndexBatches(images, 7, train=False)
    assert [len(b) for b in test] == [7, 7, 6]
    module.trainer.test(module, test, verbose=False)
    logged = module.trainer.callback_metrics
    for key in ("test/bound", "test/reconstruction", "test/kl", "test/std_min",
                "test/std_median", "test/std_below_1e-3"):
        assert torch.isfinite(logged[key]), key
    with torch.no_grad():
        q = module.vae.encode(images)
    m, s = q.loc.double().numpy(), q.scale.double().numpy()
    kl = 0.5 * (m**2 + s**2 - 1.0 - 2.0 * np.log(s)).sum(-1)
    assert logged["test/kl"].item() == pytest.approx(kl.mean(), rel=1e-5)


def test_bits_per_dim_of_a_model_with_a_known_discrete_likelihood():
    """A VAE whose q(z | x) is the prior (the encoder's last layer outputs 0) and whose decoder
    ignores z (zero weights into its last layer): P(I | z) = P(I) for every z and every
    importance weight is 1, so the estimate with K = 3 samples is exact. With delta = 0.01 the
    intervals overlap, so bits per dimension come from the 8-bit bins: -mean_x sum_d log
    P(bin of x_d) / (D log 2), with the bins built here from the level of each pixel (width
    (1 - 2 eps) / 255 around it, the end bins open) and P from scipy's normal CDF."""
    torch.manual_seed(0)
    vae = VAE(784, GaussianHead(), hidden=[8], latent=2)
    with torch.no_grad():
        for layer in (vae.encoder[-1], vae.decoder[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        vae.decoder[-1].bias.copy_(torch.cat([torch.randn(784), torch.empty(784).uniform_(-5, 0)]))
    datamodule = ImageDataModule("synthetic", batch_size=16, sizes={"train": 16, "val": 16,
                                                                     "test": 40})
    fields = evaluate(vae, Fixed(0.01), datamodule, 3, torch.device("cpu"), progress=False)

    eps, bias = datamodule.eps, vae.decoder[-1].bias.detach().double()
    loc, scale = torch.sigmoid(bias[:784]).numpy(), torch.exp(bias[784:]).numpy()
    x = torch.cat(list(datamodule.whole_split("test"))).double().numpy()
    width = (1 - 2 * eps) / 255
    level = np.rint((x - eps) / width)
    assert np.abs(x - (eps + level * width)).max() < 1e-6  # the pixels are on the 8-bit grid
    lo = np.where(level == 0, -np.inf, eps + (level - 0.5) * width)
    hi = np.where(level == 255, np.inf, eps + (level + 0.5) * width)
    log_p = log_normal_interval(lo, hi, loc, scale).sum(-1)
    assert fields["eval_images"] == 40 and fields["k"] == 3
    assert fields["test_log_likelihood_bins"] == pytest.approx(log_p.mean(), rel=1e-6)
    assert fields["bits_per_dim"] == pytest.approx(-log_p.mean() / (784 * math.log(2)), rel=1e-6)
