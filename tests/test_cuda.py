"""The kernels and the training step on CUDA (marked ``gpu``: not run by default).

    python -m pytest -m gpu tests/test_cuda.py     # on a machine with a GPU

``-m gpu`` selects them (``pyproject.toml`` excludes them from the default run with ``-m 'not
slow and not gpu'``); without CUDA they fail rather than skip, so a GPU check that ran on a
machine without a usable GPU says so. ``benchmarks/gpu_check.sh`` runs them.
``INTVAE_TEST_DEVICE=cpu`` runs the same tests on the CPU with the kernels of a GPU (the float64
kernel for float32 inputs too, ``Kernels(fast32=False)``) and 16-mixed through Lightning's CPU
plugin: the plumbing check of ``benchmarks/gpu_check.sh --cpu-dry-run``.

* On CUDA the interval kernels never take the float32 fast path (``Kernels.uses_fast_path``):
  float32 and float64 inputs run the float64 kernel. Its values and gradients on CUDA match the
  float64 kernel on the CPU, on a grid of scales, offsets, widths and powers (open ends
  included), within the accuracy contract of ``tests/test_numerics.py`` (1e-5 / 1e-10 relative
  for values, 1e-4 / 1e-8 for gradients, float32 / float64); float32 inputs are compared with
  the CPU kernel on the same (float32-rounded) inputs.
* ``torch.compile``d kernels on CUDA give the eager CUDA kernels' values.
* A training step under ``bf16-mixed`` and under ``16-mixed`` on CUDA runs and updates the
  weights with finite values.
"""

from __future__ import annotations

import itertools
import math
import os
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from intvae.app.module import VAEModule
from intvae.bounds import IELBO, IRELBO
from intvae.data import IndexBatches
from intvae.intervals import Fixed
from intvae.likelihoods import GaussianHead
from intvae.networks import VAE
from intvae.numerics import Kernels

pytestmark = pytest.mark.gpu

F32, F64 = torch.float32, torch.float64
VALUE_RTOL = {F32: 1e-5, F64: 1e-10}
GRAD_RTOL = {F32: 1e-4, F64: 1e-8}
SCALES = (1e-30, 1e-12, 1e-4, 1e-2, 1.0, 1e4, 1e30)
OFFSETS = (-1e6, -3.0, -1e-3, 0.0, 2e-7, 5.0, 1e6)  # lo - loc
WIDTHS = (1e-7, 1e-3, 1.0, math.inf)  # hi - lo; inf: an open upper end
LOCS = (0.3, -1234.5678)
POWERS = (1.0, 0.5, 2.0, -1.0, -0.25)
NEEDS = (True, True, True, True)


DEVICE = os.environ.get("INTVAE_TEST_DEVICE", "cuda")


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    if DEVICE == "cpu":
        return torch.device("cpu")
    assert torch.cuda.is_available(), "tests marked gpu need a CUDA device"
    return torch.device(DEVICE)


def device_kernels(device: torch.device, compiled: bool = False) -> Kernels:
    """The kernels the app uses on ``device`` (on the CPU: those of a GPU, no fast path)."""
    return Kernels(compiled=compiled, fast32=device.type != "cpu")


def grid(dtype: torch.dtype, open_lower: bool = False) -> list[torch.Tensor]:
    """(lo, hi, loc, scale) on the grid, as ``dtype`` tensors; ``open_lower``: lo = -inf."""
    rows = list(itertools.product(SCALES, OFFSETS, WIDTHS, LOCS))
    scale, offset, width, loc = (torch.tensor(c, dtype=F64) for c in zip(*rows, strict=True))
    lo = loc + offset * scale
    hi = lo + width * scale
    if open_lower:
        lo = torch.full_like(lo, -math.inf)
        hi = torch.where(torch.isinf(hi), loc + scale, hi)  # not both ends open
    return [t.to(dtype) for t in (lo, hi, loc, scale)]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    actual = actual.cpu().double()
    expected = expected.double()
    tiny = torch.finfo(F32).tiny
    bad = ~((actual == expected)
            | ((actual - expected).abs() <= rtol * expected.abs() + tiny))
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.numel()} differ, e.g. "
                           f"{actual[bad][:5].tolist()} against {expected[bad][:5].tolist()}")


CASES = [(dtype, power, open_lower) for dtype in (F32, F64) for power in POWERS
         for open_lower in (False, True) if not (open_lower and power < 0)]
# (the Dawson branch, power < 0, takes finite intervals only)


def finite_for(power: float, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    if power > 0:
        return inputs
    keep = torch.isfinite(inputs[0]) & torch.isfinite(inputs[1])
    return [t[keep] for t in inputs]


@pytest.mark.parametrize("dtype, power, open_lower", CASES,
                         ids=[f"{str(d)[6:]}-{p}-{'open' if o else 'finite'}"
                              for d, p, o in CASES])
def test_cuda_kernels_match_the_cpu_float64_kernel(cuda, dtype, power, open_lower):
    """The same dtype-rounded inputs on the device and through the CPU's float64 kernel
    (saturated in ``dtype``, as on the device)."""
    inputs = finite_for(power, grid(dtype, open_lower))
    kernels = device_kernels(cuda)
    on_device = [t.to(cuda) for t in inputs]
    assert not kernels.uses_fast_path(on_device, dtype)
    value, grads = kernels.evaluate(*on_device, power, dtype, NEEDS)
    assert value.device.type == cuda.type and value.dtype == dtype
    reference, reference_grads = Kernels(fast32=False).evaluate(*inputs, power, dtype, NEEDS)
    assert_close(value, reference, VALUE_RTOL[dtype], f"value, power {power}")
    for name, g, r in zip(("lo", "hi", "loc", "scale"), grads, reference_grads, strict=True):
        assert_close(g, r, GRAD_RTOL[dtype], f"d/d{name}, power {power}")


@pytest.mark.parametrize("power", [1.0, -1.0])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_compiled_kernels_on_cuda_match_the_eager_ones(cuda, dtype, power):
    inputs = [t.to(cuda) for t in finite_for(power, grid(dtype))]
    eager, eager_grads = device_kernels(cuda).evaluate(*inputs, power, dtype, NEEDS)
    compiled, compiled_grads = device_kernels(cuda, compiled=True).evaluate(
        *inputs, power, dtype, NEEDS)
    assert compiled.device.type == cuda.type
    rtol = VALUE_RTOL[dtype]
    assert_close(compiled, eager.cpu(), rtol, f"compiled value, power {power}")
    for g, e in zip(compiled_grads, eager_grads, strict=True):
        assert_close(g, e.cpu(), GRAD_RTOL[dtype], f"compiled gradient, power {power}")


@pytest.mark.parametrize("bound", ["ielbo", "irelbo"])
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_steps_on_cuda(cuda, tmp_path, precision, bound):
    torch.manual_seed(0)
    interval = Fixed(0.05)
    module = VAEModule(VAE(16, GaussianHead(), hidden=[8], latent=2),
                       IELBO(interval, 2) if bound == "ielbo" else IRELBO(interval, 2.0, 2),
                       partial(torch.optim.Adam, lr=1e-2))
    before = [p.detach().clone() for p in module.parameters()]
    if cuda.type == "cpu":  # the dry run: 16-mixed through Lightning's CPU plugin
        where = {"accelerator": "cpu"} | (
            {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]}
            if precision == "16-mixed" else {"precision": precision})
    else:
        where = {"accelerator": "gpu", "devices": 1, "precision": precision}
    trainer = L.Trainer(default_root_dir=tmp_path, **where, max_steps=4, gradient_clip_val=3.0,
                        logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    images = torch.rand(32, 16, generator=torch.Generator().manual_seed(0)).mul(0.9).add(0.05)
    trainer.fit(module, train_dataloaders=IndexBatches(images, 8, train=False))
    assert trainer.global_step == 4
    after = list(module.parameters())
    assert all(p.device.type == cuda.type for p in after)
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, p.detach().cpu()) for b, p in zip(before, after, strict=True))
    assert torch.isfinite(module.last_loss)
