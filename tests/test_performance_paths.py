"""The code paths added for speed: the float32 fast path of the interval kernels and its
float64 fallback, the non-finite guard without a host synchronization, and the automatic
chunk size of the evaluation."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.special
import torch
from single_thread import one_thread  # noqa: F401  (autouse)

from intvae import estimate as ev
from intvae import numerics
from intvae.app.callbacks import NonFiniteGuard
from intvae.app.config import check_evaluation
from intvae.checks import ParameterError
from intvae.intervals import Fixed
from intvae.numerics import fast32, interval, special

F32 = torch.float32
POWERS = (1.0, 0.5, 2.0, -1.0, -0.25)


def random_points(n: int, seed: int) -> list[torch.Tensor]:
    """(lo, hi, loc, scale) in float32 over the contract's range: scales 1e-8..1e4, widths
    1e-7..1, offsets from the interval to the mean up to 1e4 scales or 1e6."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(a, b):
        return a + (b - a) * torch.rand(n, generator=gen, dtype=torch.float64)

    scale = 10 ** uniform(-8, 4)
    width = 10 ** uniform(-7, 0)
    offset = torch.randn(n, generator=gen, dtype=torch.float64) * scale * 10 ** uniform(-1, 3)
    far = torch.randn(n, generator=gen, dtype=torch.float64) * 10 ** uniform(-6, 6)
    offset = torch.where(torch.rand(n, generator=gen) < 0.3, far, offset)
    loc = uniform(-0.5, 1.5)
    return [t.to(F32) for t in (loc + offset, loc + offset + width, loc, scale)]


@pytest.mark.parametrize("power", POWERS)
def test_fast_path_meets_the_contract_where_it_is_used(power):
    """Against the float64 kernel (itself within 1e-10 of mpmath) on 200,000 random points:
    values within 1e-5 and gradients within 1e-4 relative (plus float32's tiny) wherever the
    fast path keeps its result, and it keeps most of them."""
    cols = random_points(200_000, seed=int(100 * abs(power)))
    value, grads, ok = fast32.fast_power_integral(*cols, power, (True,) * 4)
    want, want_grads = interval.power_integral64(*(c.double() for c in cols), power, F32)
    limit, tiny = numerics.log_limit(F32), torch.finfo(F32).tiny
    inside = ok & (want.abs() < limit)
    assert ok.float().mean() > 0.6  # the random points are harder than training's
    error = (value.double() - want).abs() - 1e-5 * want.abs() - tiny
    assert (error[inside] <= 0).all(), error[inside].max()
    for got, expected in zip(grads, want_grads, strict=True):
        keep = inside & (expected.abs() < limit)
        error = (got.double() - expected).abs() - 1e-4 * expected.abs() - tiny
        assert (error[keep] <= 0).all(), error[keep].max()


def test_fast_path_serves_a_trained_decoder():
    """Decoder outputs like those of an IELBO model after a few hundred MNIST steps (half the
    pixels with the mean inside the interval and sigma down to 1e-4): the float64 fallback
    takes under 1% of them for the IELBO's power 1 (0.4% measured with a real model after 600
    steps) and under 5% for the IRELBO's power -1 (2.2%): where the Dawson branch's value
    crosses 0 its terms cancel."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(10, 100, 784, generator=gen) * 0.998 + 0.001
    inside = torch.rand(x.shape, generator=gen) < 0.5
    loc = torch.where(inside, x + 0.009 * (2 * torch.rand(x.shape, generator=gen) - 1),
                      torch.rand(x.shape, generator=gen))
    scale = torch.where(inside, 10 ** (-4 + 2 * torch.rand(x.shape, generator=gen)),
                        10 ** (-2 + 1.5 * torch.rand(x.shape, generator=gen)))
    for power, most in ((1.0, 0.01), (-1.0, 0.05)):
        ok = fast32.fast_power_integral(x - 0.01, x + 0.01, loc, scale, power,
                                           (False, False, True, True))[2]
        assert 1 - ok.float().mean() < most, power


@pytest.mark.parametrize("power", [1.0, -1.0])
def test_fallback_elements_get_the_float64_result(power):
    """A tensor mixing fast elements with ones the fast path refuses (ends far beyond its
    range, a tiny width; infinite ends of the Dawson branch, power < 0) gives, element by
    element, the float64 kernel's saturated result. Infinite ends with power > 0 (the open end
    bins of ``intvae.intervals.Bins``) stay on the fast path, with the same result."""
    lo = torch.tensor([0.1, -math.inf, 1e9, 0.3, 0.2, -0.5])
    hi = torch.tensor([0.12, 0.4, 1e9 + 1e3, 0.3 + 1e-7, 0.25, math.inf])
    loc = torch.tensor([0.11, 0.2, 0.0, 0.3, 0.9, 0.1], requires_grad=True)
    scale = torch.tensor([0.05, 0.1, 1e-3, 1e30, 0.01, 0.3], requires_grad=True)
    out = numerics.log_normal_power_integral(lo, hi, loc, scale, power)
    grads = torch.autograd.grad(out.sum(), (loc, scale))
    _, _, ok = fast32.fast_power_integral(lo, hi, loc.detach(), scale.detach(), power,
                                             (False, False, True, True))
    open_ends = power > 0
    assert ok.tolist() == [True, open_ends, False, False, True, open_ends]
    want, want_grads = interval.power_integral64(
        *(t.detach().double() for t in (lo, hi, loc, scale)), power, F32)
    torch.testing.assert_close(out, special._saturate(want, F32).float(), rtol=1e-5, atol=0)
    for got, expected in zip(grads, want_grads[2:], strict=True):
        torch.testing.assert_close(got, special._saturate(expected, F32).float(), rtol=1e-4,
                                   atol=1e-30)


def test_gradients_only_for_the_inputs_that_need_them():
    """The data (lo, hi) needs no gradient: none is computed or stored for it."""
    x = torch.rand(3, 5)
    loc = torch.rand(2, 3, 5, requires_grad=True)
    scale = torch.rand(2, 3, 5).add(0.1).requires_grad_()
    out = numerics.log_normal_interval(x - 0.01, x + 0.01, loc, scale)
    assert len(out.grad_fn.saved_tensors) == 2
    lo = (x - 0.01).requires_grad_()
    out = numerics.log_normal_interval(lo, x + 0.01, loc, scale)
    (g_lo,) = torch.autograd.grad(out.sum(), lo)
    assert g_lo.shape == lo.shape  # summed over the samples by autograd


# ---------------------------------------------------------------------------------- guard


class TinyModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.last_loss = None

    def step(self, poison: bool) -> None:
        loss = self.linear(torch.ones(4, 3)).sum() * (math.nan if poison else 1.0)
        self.zero_grad(set_to_none=True)
        loss.backward()
        self.last_loss = loss.detach()


def fake_trainer(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, current_epoch=0, default_root_dir="run")


@pytest.fixture
def no_host_reads(monkeypatch):
    """Within the ``with`` block, reading a tensor's value on the host raises."""

    class Forbidden:
        def __enter__(self):
            for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__",
                         "numpy", "cpu"):
                monkeypatch.setattr(torch.Tensor, name, self.fail)

        def __exit__(self, *exc):
            monkeypatch.undo()

        @staticmethod
        def fail(*args, **kwargs):
            raise AssertionError("host read of a tensor in the training step")

    return Forbidden()


def test_skip_mode_skips_on_the_device_without_reading_it(no_host_reads):
    torch.manual_seed(0)
    module = TinyModule()
    adam = torch.optim.Adam(module.parameters(), lr=0.1, fused=True)
    guard = NonFiniteGuard("skip")
    assert guard.on_device_skip(adam)
    weights = []
    for step, poison in enumerate([False, True, False, True, True, False]):
        module.step(poison)
        before = [p.detach().clone() for p in module.parameters()]
        with no_host_reads:
            guard.on_before_optimizer_step(fake_trainer(step), module, adam)
            adam.step()
        moved = any(not torch.equal(a, p) for a, p in zip(before, module.parameters(),
                                                          strict=True))
        assert moved != poison, step
        weights.append(moved)
    assert guard.non_finite_steps == 3
    assert {int(s["step"]) for s in adam.state.values()} == {3}  # Adam counted 3 updates
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert guard._first.tolist() == [1, NonFiniteGuard.LOSS]
    assert guard._last.tolist()[0] == 4
    guard.load_state_dict(guard.state_dict())
    assert guard.non_finite_steps == 3


def test_skip_mode_with_an_optimizer_that_cannot_skip_on_the_device():
    """Adam without ``fused``: the guard reads the flag and drops the gradients itself."""
    module = TinyModule()
    adam = torch.optim.Adam(module.parameters(), lr=0.1, foreach=False)
    guard = NonFiniteGuard("skip")
    assert not guard.on_device_skip(adam)
    module.step(poison=True)
    before = [p.detach().clone() for p in module.parameters()]
    guard.on_before_optimizer_step(fake_trainer(0), module, adam)
    adam.step()
    assert all(torch.equal(a, p) for a, p in zip(before, module.parameters(), strict=True))
    assert guard.non_finite_steps == 1 and adam.state == {} or all(
        int(s["step"]) == 0 for s in adam.state.values())


def test_vae_module_builds_adam_fused():
    from functools import partial

    from intvae.app.module import fused_option

    cpu = torch.device("cpu")
    assert fused_option(partial(torch.optim.Adam, lr=1e-3), cpu) == {"fused": True}
    assert fused_option(partial(torch.optim.AdamW, lr=1e-3), cpu) == {"fused": True}
    assert fused_option(partial(torch.optim.Adam, lr=1e-3, fused=False), cpu) == {}
    assert fused_option(partial(torch.optim.Adam, foreach=True), cpu) == {}
    assert fused_option(partial(torch.optim.SGD, lr=1e-3), cpu) == {}


# ------------------------------------------------------------------------- chunk sizing


def test_auto_chunk_size_follows_the_available_memory(monkeypatch):
    cpu = torch.device("cpu")
    low, high = ev.AUTO_CHUNK_RANGE["cpu"]
    per_element = ev.BYTES_PER_CHUNK_ELEMENT / ev.AUTO_MEMORY_FRACTION
    monkeypatch.setattr(ev, "available_memory", lambda device: int(per_element * 3 * low))
    assert ev.resolve_chunk_elements("auto", cpu) == 3 * low
    monkeypatch.setattr(ev, "available_memory", lambda device: 1000)
    assert ev.resolve_chunk_elements("auto", cpu) == low
    monkeypatch.setattr(ev, "available_memory", lambda device: 2**50)
    assert ev.resolve_chunk_elements("auto", cpu) == high
    assert ev.resolve_chunk_elements(12345, cpu) == 12345
    for bad in (0, -1, 2.5, "lots", True):
        with pytest.raises(ParameterError, match=f"^evaluate.chunk_elements={bad!r} is invalid"):
            check_evaluation({"samples": "auto", "split": "test", "chunk_elements": bad,
                              "limit_batches": None, "bits_per_dim": True})


def test_available_memory_is_plausible():
    free = ev.available_memory(torch.device("cpu"))
    assert 2**20 < free < 2**50


def test_log_likelihood_with_auto_chunks(monkeypatch):
    """``auto`` picks the chunk from the batch's device; a small budget gives several chunks
    whose estimate agrees with one chunk's (same K, independent draws)."""
    from linear_gaussian import LinearGaussianVAE

    seen = []

    def fake(device):
        seen.append(device)
        return 0  # the smallest chunk: 2**16 outputs = 16384 samples of 4 images

    monkeypatch.setattr(ev, "available_memory", fake)
    vae = LinearGaussianVAE(w=[1.0], b=[0.2], s=[0.4], shift=0.3)
    x = torch.full((4, 1), 0.7, dtype=torch.float64)
    torch.manual_seed(0)
    chunked = ev.log_likelihoods(vae, [x], 40_000, {"p": Fixed(0.1)}, "auto", progress=False)
    whole = ev.log_likelihoods(vae, [x], 40_000, {"p": Fixed(0.1)}, 10**9, progress=False)
    assert seen == [torch.device("cpu")]
    assert torch.allclose(chunked["p"], whole["p"], atol=0.02)


@pytest.mark.parametrize("t", [-3000.0, -40.0, -5.0, 0.0, 5.0, 39.0, 41.0, 4463.0])
def test_open_end_bins_stay_on_the_fast_path_with_the_right_value(t):
    """An end bin, (-inf, hi] or [lo, +inf) (``intvae.intervals.Bins``), on the float32 fast
    path: log Phi(t) and log Phi(-t) against scipy's ``norm.logcdf``, for standardized ends on
    both sides of the mode and far in the tails (t = 4463 once came out as log P(4423 < X <
    4463) instead of log P(X < 4463))."""
    from scipy.stats import norm

    scale = torch.tensor([1e-3], dtype=F32)
    loc = torch.tensor([0.5], dtype=F32)
    end = (loc.double() + t * scale.double()).float()
    t_end = ((end.double() - 0.5) / scale.double()).item()  # the float32 end, standardized
    for lo, hi, want in ((torch.tensor([-math.inf]), end, norm.logcdf(t_end)),
                         (end, torch.tensor([math.inf]), norm.logcdf(-t_end))):
        value, _, ok = fast32.fast_power_integral(lo, hi, loc, scale, 1.0, (False,) * 4)
        assert ok.item()
        assert value.item() == pytest.approx(want, rel=1e-5, abs=1e-30)


def test_float32_log_dawson_against_scipy():
    """``fast32._log_dawson32`` (two polynomials, no table) against scipy's Dawson function in
    float64, from 1e-6 to 1e6 and densely around the split at 2: within 3e-7 max(1, |log D|)
    (about one float32 ulp of the result); -inf at 0."""
    x = torch.cat([torch.logspace(-6, 6, 50_001, dtype=torch.float64),
                   torch.linspace(1.9, 2.1, 10_001, dtype=torch.float64)]).float()
    want = np.log(scipy.special.dawsn(x.double().numpy()))
    got = fast32._log_dawson32(x).double().numpy()
    assert np.all(np.abs(got - want) <= 3e-7 * np.maximum(1.0, np.abs(want)))
    assert fast32._log_dawson32(torch.zeros(1)).item() == -math.inf
