"""Mixed precision: ``trainer.precision=bf16-mixed`` (CPU and GPU) and ``16-mixed`` (GPU).

* The optimizer is fused Adam only under 32-true and 64-true: under the mixed precisions
  Lightning refuses to clip a fused optimizer's gradients, and clipping by norm 3 is the
  default (``trainer/default.yaml``).
* The interval kernels compute in float32 under autocast (autocast is off inside them) from
  the decoder's bfloat16/float16 outputs, and return float32.
* The bound under bf16-mixed equals the 32-true bound on the same batch and weights within
  the first-order effect of bfloat16's rounding in the networks (below).
* A bf16-mixed run of the app trains with clipping and the non-finite guard; under 16-mixed
  (run here on the CPU with Lightning's ``MixedPrecision("16-mixed", "cpu")`` plugin and a CPU
  ``GradScaler``, the code path of a GPU) the gradient scaler's overflow skips are its own, and
  the guard counts and stops only for the model's non-finite losses.

Tolerance of bf16-mixed against 32-true. Autocast runs every ``nn.Linear`` in bfloat16: its
weights and inputs are rounded to bfloat16, the products accumulate in float32, the output is
rounded to bfloat16 again; the elementwise layers (ELU) then compute in bfloat16. bfloat16 keeps
8 significant bits, so each rounding is a relative error of at most u = 2**-8. To first order
the bound b_i of image i then moves by at most u * S_i, with S_i = sum over the rounded
tensors t (every weight and bias, the input and output of every Linear and ELU layer, the
decoder's Gaussian loc and scale) of sum |d b_i / d t| |t|, computed by autograd in float32,
plus u |KL_i| for the KL term, which the bounds compute from the encoder's bfloat16 outputs.
The measured differences are 2% to 5% of that worst case (the roundings' signs are random);
the test asserts the worst case itself.

With and without a gradient the kernels need not give the same bits: the checks of the
gradients' accuracy send some elements on to another branch or to the float64 kernel (0.3% of
random inputs, half of which then differ in their last bits), and with other elements left for
each branch a vectorized loop may compute an element in its scalar remainder on one path only
(on an AVX-512 CPU 0.1% to 0.4% of the kernel's elements differed by one float32 ulp). Either
way each value is within the kernels' float32 contract, 1e-5 relative of the true value
(``tests/test_numerics.py``), so two of them differ by at most 2e-5 of it. With V_i = sum over
the kernel's outputs v of |d b_i / d v| |v| (autograd, as S_i) the bound moves by at most
2e-5 V_i to first order; each path's float32 sum of the D pixels' terms is within (D - 1) u V_i
of its exact sum whatever the summation order (u = 2**-24; Higham, *Accuracy and Stability of
Numerical Algorithms*, section 4.2), and the handful of operations after the sums (the mean or
logsumexp over the samples, the KL, the interval volume), on numbers the size of b_i, round it
by a few ulp. The bound with a gradient (which S needs) is compared with the one without
within that sum (``kernel_paths_tolerance``).
"""

from __future__ import annotations

import math
from functools import partial
from unittest import mock

import lightning as L
import pytest
import torch
from conftest import TINY
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from test_module import FlakyBound

from intvae import numerics
from intvae.app.build import build_vae
from intvae.app.callbacks import NonFiniteGuard
from intvae.app.errors import NonFiniteError
from intvae.app.module import VAEModule, fused_option
from intvae.app.train import train
from intvae.bounds import IELBO
from intvae.data import IndexBatches
from intvae.intervals import Fixed
from intvae.likelihoods import GaussianHead
from intvae.networks import VAE
from intvae.numerics import interval

U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
U_F32 = 2.0**-24  # unit roundoff of float32
KERNEL_RTOL = 1e-5  # the kernels' float32 contract (tests/test_numerics.py)
PIXELS = 16


def tiny_module(bound=None) -> VAEModule:
    torch.manual_seed(0)
    return VAEModule(VAE(PIXELS, GaussianHead(), hidden=[8], latent=2),
                     bound or IELBO(Fixed(0.05), samples=2), partial(torch.optim.Adam, lr=1e-2))


def quiet_trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


# --------------------------------------------------------------------------- the optimizer


@pytest.mark.parametrize("precision, fused", [
    ("32-true", True), (32, True), ("64-true", True),
    ("bf16-mixed", False), ("bf16", False), ("bf16-true", False),
])
def test_adam_is_fused_only_under_32_and_64_true(tmp_path, precision, fused):
    """The module reads the trainer's precision (Lightning's unified name, so 32 and bf16
    count as 32-true and bf16-mixed)."""
    module = tiny_module()
    module.trainer = quiet_trainer(tmp_path, precision=precision)
    adam = module.configure_optimizers()
    assert isinstance(adam, torch.optim.Adam)
    assert bool(adam.defaults.get("fused")) is fused


def test_fused_option_by_precision():
    cpu = torch.device("cpu")
    adam = partial(torch.optim.Adam, lr=1e-3)
    assert fused_option(adam, cpu) == {"fused": True}  # 32-true unless told otherwise
    assert fused_option(adam, cpu, "64-true") == {"fused": True}
    for precision in ("bf16-mixed", "16-mixed", "bf16-true", "16-true"):
        assert fused_option(adam, cpu, precision) == {}, precision
    assert tiny_module().configure_optimizers().defaults["fused"]  # no trainer: 32-true


# --------------------------------------------------------------- the kernels under autocast


@pytest.mark.parametrize("power", [1.0, -1.0])
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_kernels_compute_in_float32_under_autocast(monkeypatch, half, power):
    """Under CPU autocast a decoder's Linear gives ``half`` loc and scale; the kernels see
    autocast off and float32 inputs, return float32, the same as without autocast and within
    the float32 contract (1e-5 relative, ``tests/test_numerics.py``) of the float64 kernel on
    the values the half tensors hold; the gradients go back to the decoder output in ``half``,
    finite."""
    seen = []
    evaluate = interval.Kernels.evaluate

    def spy(self, lo, hi, loc, scale, *rest):
        seen.append((torch.is_autocast_enabled("cpu"), {t.dtype for t in (lo, hi, loc, scale)}))
        return evaluate(self, lo, hi, loc, scale, *rest)

    monkeypatch.setattr(interval.Kernels, "evaluate", spy)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 30, generator=gen)
    decoder = torch.nn.Linear(3, 60)
    z = torch.randn(4, 3, generator=gen)
    with torch.autocast("cpu", dtype=half):
        raw = decoder(z)
        loc, log_scale = raw.chunk(2, dim=-1)
        scale = torch.exp(0.5 * log_scale - 1.0)  # 0.2 to 0.7: float16 gradients in range
        out = numerics.log_normal_power_integral(x - 0.01, x + 0.01, torch.sigmoid(loc), scale,
                                                 power)
    assert raw.dtype == half  # autocast was on around the kernels
    assert seen == [(False, {torch.float32})]
    assert out.dtype == torch.float32
    (grad,) = torch.autograd.grad(out.sum(), raw)
    assert grad.dtype == half and torch.isfinite(grad).all()
    loc_held = torch.sigmoid(loc)  # outside autocast: the same half values
    plain = numerics.log_normal_power_integral(x - 0.01, x + 0.01, loc_held, scale, power)
    assert torch.equal(out, plain)
    want, _ = interval.power_integral64(*(t.detach().double() for t in torch.broadcast_tensors(
        x - 0.01, x + 0.01, loc_held, scale)), power, torch.float32, with_grads=False)
    torch.testing.assert_close(out.detach().double(), want, rtol=1e-5, atol=1e-30)


# ----------------------------------------------------------- bf16-mixed against 32-true


def bound_under(plugin, bound, vae, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Per-image bound with Lightning's forward context of ``plugin`` (autocast for
    ``MixedPrecision``), the samples of z drawn from ``seed``."""
    torch.manual_seed(seed)
    with torch.no_grad(), plugin.forward_context():
        return bound(vae, x).bound


def bf16_sensitivity(bound, vae, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """(32-true bound, S, V) per image: S = sum over the tensors bf16-mixed rounds of
    |d bound / d t| |t| (module docstring), plus |KL|; V = the same sum over the interval
    kernels' outputs."""
    rounded, kernel_values = {}, []

    def keep(module, inputs, output):
        for t in (*inputs, output):
            if t.requires_grad:
                rounded[id(t)] = t

    apply = interval._PowerIntegral.apply

    def keep_kernel_value(*args):
        kernel_values.append(apply(*args))
        return kernel_values[-1]

    hooks = [m.register_forward_hook(keep) for m in vae.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.ELU))]
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)
    try:
        with mock.patch.object(interval._PowerIntegral, "apply", keep_kernel_value):
            result = bound(vae, x)
    finally:
        for hook in hooks:
            hook.remove()
    tensors = [x, *rounded.values(), result.likelihood.loc, result.likelihood.scale,
               *vae.parameters()]
    assert kernel_values
    sensitivity, kernel_sensitivity = [], []
    for i, b in enumerate(result.bound):
        grads = torch.autograd.grad(b, [*tensors, *kernel_values], retain_graph=True,
                                    allow_unused=True)
        terms = [(g.abs() * t.abs()).sum() if g is not None else torch.zeros(())
                 for g, t in zip(grads, [*tensors, *kernel_values], strict=True)]
        sensitivity.append(sum(terms[:len(tensors)]) + result.kl[i].abs())
        kernel_sensitivity.append(sum(terms[len(tensors):]))
    return (result.bound.detach(), torch.stack(sensitivity).detach(),
            torch.stack(kernel_sensitivity).detach())


def kernel_paths_tolerance(bound: torch.Tensor, kernel_sensitivity: torch.Tensor,
                           pixels: int) -> torch.Tensor:
    """How far apart the bound computed with and without a gradient may be (module
    docstring): the kernels' contract and the float32 sums over the pixels on both paths, and
    2 ulp of the bound per path for the operations after the sums."""
    return (2 * (KERNEL_RTOL + pixels * U_F32) * kernel_sensitivity
            + 4 * U_F32 * bound.abs())


@pytest.mark.parametrize("bound_name", ["ielbo", "irelbo"])
def test_bf16_mixed_bound_equals_32_true_within_bf16_rounding(compose_train, bound_name):
    """On a batch of the tiny app configuration, at the initial weights (decoder scales near
    0.5: the float32 fast path), after 5 float32 Adam steps (where the IRELBO with and without
    a gradient differed in its last bits, with ATEN_CPU_CAPABILITY default and avx2 on an AMD
    CPU) and after 20 (scales down to 1e-5: the float64 fallback too), for the IELBO (power 1)
    and the IRELBO (power -1)."""
    cfg = compose_train(*TINY, f"bound={bound_name}")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    x = next(iter(datamodule.train_dataloader()))
    torch.manual_seed(0)
    vae = build_vae(cfg, datamodule.num_pixels)
    bound = instantiate(cfg.bound)
    adam = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for step in range(21):
        if step in (0, 5, 20):
            # with a gradient (S needs it), against the same bound without
            want, sensitivity, kernel_sensitivity = bf16_sensitivity(bound, vae, x, seed=step)
            plain = bound_under(Precision(), bound, vae, x, seed=step)
            gap = (plain - want).abs() - kernel_paths_tolerance(want, kernel_sensitivity,
                                                                x.shape[-1])
            assert (gap <= 0).all(), (step, gap.max(), (plain - want).abs().max())
            # bf16-mixed against 32-true, both without a gradient
            got = bound_under(MixedPrecision("bf16-mixed", "cpu"), bound, vae, x, seed=step)
            assert got.dtype == torch.float32 and torch.isfinite(got).all()
            assert not torch.equal(got, plain)  # autocast did change the networks' arithmetic
            excess = (got - plain).abs() - U_BF16 * sensitivity
            assert (excess <= 0).all(), (step, excess.max(), (got - plain).abs().max())
        adam.zero_grad()
        (-bound(vae, x).bound.mean()).backward()
        adam.step()


# ------------------------------------------------------------------- training, the guard


def test_bf16_mixed_app_run_trains_with_clipping_and_the_guard(compose_train, monkeypatch):
    """``train(... trainer.precision=bf16-mixed)`` (it ended on the first step with Lightning's
    refusal to clip a fused optimizer's gradients): plain Adam, clipping by norm 3 at every
    step, the kernels run with autocast off on float32 inputs (the decoder's linear layers run
    in bfloat16, ``VAE.decode`` upcasts their output), no non-finite step, finite bounds and
    log-likelihood."""
    optimizers, clips, kernel_calls, decoder_dtypes = [], [], [], set()
    configure = VAEModule.configure_optimizers
    clip = torch.nn.utils.clip_grad_norm_
    evaluate = interval.Kernels.evaluate
    power_integral = interval.log_normal_power_integral

    def record_optimizer(self):
        optimizers.append(configure(self))
        return optimizers[-1]

    def record_clip(parameters, max_norm, *args, **kwargs):
        clips.append(max_norm)
        return clip(parameters, max_norm, *args, **kwargs)

    def record_kernels(self, lo, hi, loc, scale, *rest):
        kernel_calls.append((torch.is_autocast_enabled("cpu"), loc.dtype, scale.dtype))
        return evaluate(self, lo, hi, loc, scale, *rest)

    def record_inputs(lo, hi, loc, scale, *rest, **kwargs):
        if torch.is_autocast_enabled("cpu"):
            decoder_dtypes.update({loc.dtype, scale.dtype})
        return power_integral(lo, hi, loc, scale, *rest, **kwargs)

    monkeypatch.setattr(VAEModule, "configure_optimizers", record_optimizer)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record_clip)
    monkeypatch.setattr(interval.Kernels, "evaluate", record_kernels)
    monkeypatch.setattr(interval, "log_normal_power_integral", record_inputs)
    cfg = compose_train(*TINY, "bound=ielbo", "trainer.precision=bf16-mixed",
                        "trainer.max_epochs=2")
    assert cfg.trainer.gradient_clip_val == 3.0
    results = train(cfg)
    assert results["status"] == "completed" and results["steps"] == 4
    assert results["non_finite_steps"] == 0
    for key in ("train_bound", "val_bound", "test_bound", "test_log_likelihood"):
        assert math.isfinite(results[key]), key
    assert len(optimizers) == 1 and not optimizers[0].defaults.get("fused")
    assert clips == [3.0] * 4
    # the training steps ran under autocast, and VAE.decode upcast the linear layers' bfloat16
    # so that the likelihood's parameters are float32
    assert decoder_dtypes == {torch.float32}
    assert kernel_calls and all(call == (False, torch.float32, torch.float32)
                                for call in kernel_calls)


def fit(bound, guard: NonFiniteGuard, tmp_path, plugin=None, precision=None) -> L.Trainer:
    """Two epochs of 8 batches of 8 random images, clipping by norm 3."""
    images = torch.rand(64, PIXELS, generator=torch.Generator().manual_seed(0))
    module = tiny_module(bound)
    trainer = quiet_trainer(tmp_path, max_epochs=2, gradient_clip_val=3.0, callbacks=[guard],
                            plugins=[plugin] if plugin else None, precision=precision)
    trainer.fit(module, train_dataloaders=IndexBatches(images.mul(0.9).add(0.05), 8,
                                                       train=False))
    return trainer


def adam_steps(trainer: L.Trainer) -> set[int]:
    return {int(state["step"]) for state in trainer.optimizers[0].state.values()}


def test_bf16_mixed_guard_skips_non_finite_steps_with_plain_adam(tmp_path):
    guard = NonFiniteGuard("skip")
    trainer = fit(FlakyBound({3, 10}), guard, tmp_path, precision="bf16-mixed")
    assert trainer.precision == "bf16-mixed" and not trainer.optimizers[0].defaults["fused"]
    assert guard.non_finite_steps == 2
    assert adam_steps(trainer) == {16 - 2}  # the skipped updates moved no Adam state
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def float16_plugin(init_scale: float) -> MixedPrecision:
    """16-mixed as on a GPU, here on the CPU: float16 autocast and a ``GradScaler`` starting at
    ``init_scale`` (each overflow halves it)."""
    return MixedPrecision("16-mixed", "cpu",
                          scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))


def scaler_skips(plugin: MixedPrecision, init_scale: float) -> int:
    """The steps the scaler skipped: it halves its scale at each (no growth within 2000)."""
    return round(math.log2(init_scale / plugin.scaler.get_scale()))


def test_16_mixed_scaler_overflows_are_not_the_guards_non_finite_steps(tmp_path):
    """A loss scale of 2**24 overflows float16 in the backward of the first steps: the scaler
    skips them and halves its scale, and the guard does not count them; the NaN loss of call 12
    is the model's: the guard counts it (the scaler, seeing NaN gradients, skips it too)."""
    init = 2.0**24
    plugin = float16_plugin(init)
    guard = NonFiniteGuard("skip")
    trainer = fit(FlakyBound({12}), guard, tmp_path, plugin=plugin)
    assert trainer.precision == "16-mixed" and not trainer.optimizers[0].defaults["fused"]
    skipped = scaler_skips(plugin, init)
    assert skipped >= 3  # overflows besides the NaN step
    assert guard.non_finite_steps == 1
    assert adam_steps(trainer) == {16 - skipped}
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_16_mixed_stop_mode_stops_for_the_model_not_for_the_scaler(tmp_path):
    init = 2.0**24
    plugin = float16_plugin(init)
    guard = NonFiniteGuard("stop")
    trainer = fit(IELBO(Fixed(0.05), samples=2), guard, tmp_path, plugin=plugin)
    assert scaler_skips(plugin, init) >= 2 and guard.non_finite_steps == 0
    assert trainer.global_step == 16
    with pytest.raises(NonFiniteError, match=r"non-finite loss in run .* at step 4"):
        fit(FlakyBound({5}), NonFiniteGuard("stop"), tmp_path, plugin=float16_plugin(init))
