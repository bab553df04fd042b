"""The Hydra configs of the bound registry: one ``conf/bound/<name>.yaml`` per registered bound,
each instantiating to its class and training through the paper's VAE; overrides reach the
objects and invalid values are refused at instantiation."""

from __future__ import annotations

import contextlib

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from intvae.app.config import CONF_DIR
from intvae.bounds import IRELBO, MIWAE, REGISTRY, VR
from intvae.checks import ParameterError
from intvae.intervals import Bins, Fixed
from intvae.likelihoods import (
    BernoulliHead,
    BetaHead,
    ContinuousBernoulliHead,
    GaussianHead,
    LogitNormalHead,
)
from intvae.networks import VAE

CONF = CONF_DIR
INTERVAL_BOUNDS = {"ielbo", "iw_ielbo", "irelbo"}
HEADS = {"gaussian": GaussianHead, "logit_normal": LogitNormalHead, "bernoulli": BernoulliHead,
         "continuous_bernoulli": ContinuousBernoulliHead, "beta": BetaHead}


@contextlib.contextmanager
def hydra_config(*overrides: str):
    """The composed ``train`` config with ``overrides``; Hydra's global state is cleared after."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            yield compose("train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def instantiate_bound(*overrides: str):
    """A bound from the bare root config (without the default experiment's knobs)."""
    with hydra_config("~experiment", *overrides) as cfg:
        return instantiate(cfg.bound), cfg


# ------------------------------------------------------------------ one config per bound


def test_one_config_per_registered_bound():
    assert sorted(path.stem for path in (CONF / "bound").glob("*.yaml")) == sorted(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_bound_config_instantiates_to_the_registered_class(name):
    bound, cfg = instantiate_bound(f"bound={name}")
    assert type(bound) is REGISTRY[name]
    assert cfg.samples is None  # each bound's own K (tests/test_configs.py: OWN_SAMPLES)
    assert bound.samples == (5 if bound.single_sample else 1)
    if name in INTERVAL_BOUNDS:
        assert isinstance(bound.interval, Fixed) and bound.interval.delta == cfg.delta == 0.01
    if name in ("irelbo", "vr"):
        assert bound.alpha == cfg.alpha == 2.0
    if name == "miwae":
        assert bound.outer_samples == 5
    if name == "ielbo":
        assert bound.normalized is False and bound.tolerance == 0.0


# ------------------------------------------------------ forward and backward through the VAE


def _forward_backward(bound, cfg, batch: int = 4):
    torch.manual_seed(0)
    head = instantiate(cfg.likelihood)
    vae = instantiate(cfg.model, num_pixels=784, head=head)
    assert isinstance(vae, VAE)
    eps = cfg.eps
    x = eps + (1.0 - 2.0 * eps) * torch.rand(batch, 784)
    result = bound(vae, x)
    assert result.bound.shape == result.reconstruction.shape == result.kl.shape == (batch,)
    for field in (result.bound, result.reconstruction, result.kl):
        assert torch.all(torch.isfinite(field)), field
    if result.log_weights is not None:
        assert result.log_weights.shape[1] == batch
        assert torch.all(torch.isfinite(result.log_weights))
    (-result.bound.mean()).backward()
    grads = [p.grad for p in vae.parameters()]
    assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads)
    assert any(torch.any(g != 0) for g in grads)
    # Both networks receive a training signal.
    assert any(torch.any(p.grad != 0) for p in vae.encoder.parameters())
    assert any(torch.any(p.grad != 0) for p in vae.decoder.parameters())


@pytest.mark.parametrize("model", ["mlp_200x2_elu_z25", "mlp_200x1_relu_z25"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_bound_trains_the_paper_vae(name, model):
    with hydra_config(f"bound={name}", f"model={model}", "samples=3") as cfg:
        _forward_backward(instantiate(cfg.bound), cfg)


@pytest.mark.parametrize("likelihood", sorted(HEADS))
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_bounds_with_every_compatible_likelihood(name, likelihood):
    compatible = (name not in INTERVAL_BOUNDS
                  or likelihood in {"gaussian", "logit_normal", "continuous_bernoulli"}
                  and (name != "irelbo" or likelihood == "gaussian"))
    overrides = (f"bound={name}", f"likelihood={likelihood}", "samples=2",
                 "model.hidden=[16]")
    with hydra_config(*overrides) as cfg:
        assert type(instantiate(cfg.likelihood)) is HEADS[likelihood]
        bound = instantiate(cfg.bound)
        if compatible:
            _forward_backward(bound, cfg)
        else:
            with pytest.raises(ParameterError, match=rf"^likelihood=\w+ is invalid with "
                                                     rf"bound={name}: the bound needs"):
                _forward_backward(bound, cfg)


@pytest.mark.parametrize("name", ["ielbo", "iw_ielbo"])
def test_interval_bounds_with_bins_train_the_paper_vae(name):
    with hydra_config(f"bound={name}", "interval=bins", "samples=2") as cfg:
        bound = instantiate(cfg.bound)
        assert isinstance(bound.interval, Bins)
        _forward_backward(bound, cfg)


# ------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("name", sorted(INTERVAL_BOUNDS))
def test_delta_override_reaches_the_interval(name):
    bound, _ = instantiate_bound(f"bound={name}", "delta=0.005")
    assert isinstance(bound.interval, Fixed) and bound.interval.delta == 0.005


@pytest.mark.parametrize("name, cls", [("irelbo", IRELBO), ("vr", VR)])
def test_alpha_override_reaches_the_bound(name, cls):
    bound, _ = instantiate_bound(f"bound={name}", "alpha=0.5")
    assert type(bound) is cls and bound.alpha == 0.5
    bound, _ = instantiate_bound(f"bound={name}", "alpha=5")
    assert bound.alpha == 5.0


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_samples_override_reaches_every_bound(name):
    bound, _ = instantiate_bound(f"bound={name}", "samples=3")
    assert bound.samples == 3


@pytest.mark.parametrize("name", ["ielbo", "iw_ielbo"])
def test_bins_interval_override(name):
    bound, _ = instantiate_bound(f"bound={name}", "interval=bins")
    assert isinstance(bound.interval, Bins)
    assert bound.interval.levels == 256 and bound.interval.eps == 0.001
    bound, _ = instantiate_bound(f"bound={name}", "interval=bins", "eps=0.01",
                                 "interval.levels=16")
    assert bound.interval.levels == 16 and bound.interval.eps == 0.01


def test_bound_specific_overrides():
    bound, _ = instantiate_bound("bound=ielbo", "bound.normalized=true", "bound.tolerance=1e-7")
    assert bound.normalized is True and bound.tolerance == 1e-7
    bound, _ = instantiate_bound("bound=miwae", "bound.outer_samples=2", "samples=4")
    assert type(bound) is MIWAE and (bound.outer_samples, bound.samples) == (2, 4)
    with hydra_config("likelihood.sigma_min=0.05") as cfg:
        assert instantiate(cfg.likelihood).sigma_min == 0.05


# ---------------------------------------------------------------------- invalid overrides


def _refused(overrides, target: str = "bound") -> str:
    """The message of the error that instantiating ``target`` raises; a ValueError, possibly
    wrapped by Hydra in an InstantiationException."""
    with hydra_config(*overrides) as cfg:
        with pytest.raises((ValueError, InstantiationException)) as info:
            instantiate(cfg[target])
    error = info.value
    if isinstance(error, InstantiationException):
        causes = []
        while error is not None:
            causes.append(error)
            error = error.__cause__ or error.__context__
        assert any(isinstance(e, ValueError) for e in causes), causes
    return str(info.value)


@pytest.mark.parametrize("overrides, expected", [
    (("bound=ielbo", "delta=0"), "delta=0 is invalid"),
    (("bound=iw_ielbo", "delta=0"), "delta=0 is invalid"),
    (("bound=irelbo", "delta=0"), "delta=0 is invalid"),
    (("bound=ielbo", "delta=-0.01"), "delta=-0.01 is invalid"),
    (("bound=irelbo", "alpha=1"), "alpha=1 is invalid"),
    (("bound=irelbo", "alpha=0"), "alpha=0 is invalid"),
    (("bound=irelbo", "alpha=-2"), "alpha=-2 is invalid"),
    (("bound=vr", "alpha=1"), "alpha=1 is invalid"),
    (("bound=vr", "alpha=1.0"), "alpha=1.0 is invalid"),
    (("bound=elbo", "samples=0"), "samples=0 is invalid"),
    (("bound=iwae", "samples=2.5"), "samples=2.5 is invalid"),
    (("bound=miwae", "bound.outer_samples=0"), "outer_samples=0 is invalid"),
    (("bound=irelbo", "interval=bins"), "interval=Bins("),
    (("bound=ielbo", "interval=bins", "bound.normalized=true"), "normalized=True is invalid"),
    (("bound=ielbo", "bound.tolerance=-1"), "tolerance=-1 is invalid"),
    (("bound=ielbo", "interval=bins", "interval.levels=1"), "levels=1 is invalid"),
    (("bound=ielbo", "interval=bins", "eps=0.5"), "eps=0.5 is invalid"),
])
def test_invalid_overrides_are_refused_at_instantiation(overrides, expected):
    message = _refused(overrides)
    assert expected in message, message
    assert "must be" in message


def test_negative_sigma_min_is_refused_at_instantiation():
    message = _refused(("likelihood.sigma_min=-1",), target="likelihood")
    assert "sigma_min=-1 is invalid" in message and "must be" in message
