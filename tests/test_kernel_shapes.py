"""Every tensor shape, memory layout and floating dtype through the interval kernels.

``log_normal_interval`` (power 1) and ``log_normal_power_integral`` (power -1, the IRELBO's
Dawson branch) take 0-dim, empty, broadcast (a different shape per argument) and non-contiguous
(transposed, strided, offset, stride-0) inputs of float16, bfloat16, float32 and float64, on the
float32 fast path and on its float64 fallback, with gradients for any subset of the inputs.

The reference is the float64 kernel ``power_integral64`` run on float64 copies of the values
the tensors hold, contiguous and broadcast, saturated at the documented limit; its own accuracy
is checked against 50-digit mpmath in ``tests/test_numerics.py``, so this file checks the
plumbing (shapes, layouts, dtypes, the fallback's gather and scatter, the gradients' reduction
to each input's shape and dtype) at the accuracy the contract states.

Result dtype: float64 if an input is float64, else float32 (float16 and bfloat16 are computed
in float32 and the result stays float32). Tolerances, |got - want| <= rtol * |want| + atol:

* values, float32 result: rtol 1e-5, the float32 contract of ``tests/test_numerics.py`` (fast
  path or float64 fallback rounded once); float64 result: rtol 1e-13, the same float64 kernel
  up to the last bits of vectorized transcendental functions. atol: finfo(result).tiny.
* gradients: the contract's rtol (1e-4 float32, 1e-13 float64), relative to the sum of the
  magnitudes of the broadcast terms summed into each input's gradient (a sum of terms of
  mixed sign is only as accurate as its terms), plus half an ulp of the input's dtype for the
  rounding of the gradient to it where that is narrower than the result's (float16: 2**-11,
  bfloat16: 2**-8, float32 under a float64 result: 2**-24); atol: finfo(result).tiny
  plus the smallest subnormal of the input's dtype. A float16 gradient beyond float16's range
  must be inf of the right sign (the overflow AMP's gradient scaler detects).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from intvae import numerics
from intvae.numerics import fast32, interval

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
DTYPES = (F16, BF16, F32, F64)
POWERS = (1.0, -1.0)
LAYOUTS = ("contiguous", "transposed", "strided", "offset", "expanded")
NAMES = ("lo", "hi", "loc", "scale")

VALUE_RTOL = {F32: 1e-5, F64: 1e-13}
GRAD_RTOL = {F32: 1e-4, F64: 1e-13}


def limit(dtype: torch.dtype) -> float:
    """The documented saturation level, computed independently of the module."""
    return torch.finfo(dtype).max / 2.0**64


def rounding(dtype: torch.dtype, result: torch.dtype) -> float:
    """Relative error of the cast of a gradient from the ``result`` dtype to the input's
    ``dtype``: half an ulp, none when the two are the same."""
    return 0.0 if dtype == result else torch.finfo(dtype).eps / 2


def smallest_subnormal(dtype: torch.dtype) -> float:
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def overflow_threshold(dtype: torch.dtype) -> float:
    """The magnitude from which rounding to nearest in ``dtype`` gives inf: max + ulp(max)/2."""
    top = torch.tensor(torch.finfo(dtype).max, dtype=dtype)
    ulp = float(top) - float(torch.nextafter(top, torch.zeros((), dtype=dtype)))
    return float(top) + ulp / 2


def result_dtype(dtypes) -> torch.dtype:
    return F64 if F64 in dtypes else F32


@dataclass(frozen=True)
class Case:
    """One call: a shape, dtype, layout and whether it needs a gradient per argument."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    layouts: tuple[str, ...]
    grads: tuple[bool, ...]
    power: float
    seed: int


def with_layout(values: torch.Tensor, layout: str) -> torch.Tensor:
    """``values`` with the same shape and elements in memory layout ``layout``. Buffers around
    the elements hold NaN, so an element read from the wrong place shows."""
    nan = float("nan")
    if layout == "contiguous":
        return values.contiguous()
    if layout == "transposed":  # strides in reverse order
        dims = list(range(values.dim()))[::-1]
        return values.permute(dims).contiguous().permute(dims)
    if layout == "strided":  # every other element of a buffer twice as long in each dimension
        buffer = torch.full([2 * n for n in values.shape], nan, dtype=values.dtype)
        view = buffer[tuple(slice(None, None, 2) for _ in values.shape)]
        view.copy_(values)
        return view
    if layout == "offset":  # starting 3 elements into its storage
        buffer = torch.full((values.numel() + 3,), nan, dtype=values.dtype)
        buffer[3:] = values.reshape(-1)
        return buffer[3:].view(values.shape)
    assert layout == "expanded"  # stride 0 along its first dimension longer than 1
    for dim, size in enumerate(values.shape):
        if size > 1:
            return values.narrow(dim, 0, 1).expand(values.shape)
    return values


def draw_values(name: str, shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """float64 values for argument ``name``, rounded to ``dtype``: intervals that straddle 0.5
    (lo <= 0.5 - 2**-7 < 0.5 + 2**-7 <= hi, so lo < hi for every pair after rounding, even in
    bfloat16), narrow (width from 2**-6) to wide or infinite; means near the interval or far
    from it; scales from 1e-12 (clamped to the dtype's smallest normal) to 10. Tiny scales,
    far means and infinite ends are what the float32 fast path leaves to the float64 kernel."""

    def uniform(low, high):
        return low + (high - low) * torch.rand(shape, generator=gen, dtype=F64)

    pick = torch.rand(shape, generator=gen, dtype=F64)
    if name in ("lo", "hi"):
        sign = -1.0 if name == "lo" else 1.0
        near = 0.5 + sign * 2.0 ** uniform(-7.0, 1.0)
        far = 0.5 + sign * 2.0 ** uniform(1.0, 9.0)
        values = torch.where(pick < 0.1, sign * math.inf, torch.where(pick < 0.7, near, far))
    elif name == "loc":
        near = 0.5 + 0.3 * torch.randn(shape, generator=gen, dtype=F64)
        values = torch.where(pick < 0.6, near, uniform(-300.0, 300.0))
    else:
        values = (10.0 ** uniform(-12.0, 1.0)).clamp(min=torch.finfo(dtype).tiny)
    return values.to(dtype)


def shapes_strategy():
    """Four mutually broadcastable shapes of up to 3 dimensions: 0-dim among them, and half of
    the time sides of length 0 (empty results)."""
    def shapes(min_side):
        return mutually_broadcastable_shapes(num_shapes=4, min_dims=0, max_dims=3,
                                             min_side=min_side, max_side=3)

    return st.one_of(shapes(1), shapes(0)).map(lambda s: s.input_shapes)


four = st.tuples
cases = st.builds(
    Case,
    shapes=shapes_strategy(),
    dtypes=st.one_of(st.sampled_from(DTYPES).map(lambda d: (d,) * 4),
                     four(*[st.sampled_from(DTYPES)] * 4)),
    layouts=four(*[st.sampled_from(LAYOUTS)] * 4),
    grads=four(*[st.booleans()] * 4),
    power=st.sampled_from(POWERS),
    seed=st.integers(0, 2**32 - 1),
)


def make_inputs(case: Case) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(case.seed)
    inputs = []
    for name, shape, dtype, layout, grad in zip(NAMES, case.shapes, case.dtypes, case.layouts,
                                                case.grads, strict=True):
        values = with_layout(draw_values(name, shape, dtype, gen), layout)
        inputs.append(values.detach().requires_grad_(grad))
    return inputs


def call(inputs, power, kernels=numerics.EAGER):
    if power == 1.0:
        return numerics.log_normal_interval(*inputs, kernels=kernels)
    return numerics.log_normal_power_integral(*inputs, power, kernels)


def saturated(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    big = limit(dtype)
    return torch.nan_to_num(t, posinf=big, neginf=-big).clamp(-big, big)


def reference(inputs, power, dtype):
    """The float64 kernel on contiguous float64 copies of the broadcast inputs, saturated at
    the limit of the result's ``dtype``: value and the four partial derivatives."""
    shape = torch.broadcast_shapes(*(t.shape for t in inputs))
    args = [t.detach().to(F64).expand(shape).contiguous() for t in inputs]
    value, grads = interval.power_integral64(*args, power, dtype)
    return saturated(value, dtype), [saturated(g, dtype) for g in grads]


def check_case(case: Case, kernels: numerics.Kernels = numerics.EAGER) -> None:
    inputs = make_inputs(case)
    dtype = result_dtype(case.dtypes)
    shape = torch.broadcast_shapes(*case.shapes)
    out = call(inputs, case.power, kernels)
    assert out.shape == shape and out.dtype == dtype, (case, out.shape, out.dtype)
    want, want_grads = reference(inputs, case.power, dtype)
    got = out.detach().to(F64)
    tol = VALUE_RTOL[dtype] * want.abs() + torch.finfo(dtype).tiny
    bad = ~((got - want).abs() <= tol)
    assert not bad.any(), ("value", case, got[bad], want[bad])
    if not any(case.grads):
        assert out.grad_fn is None
        return
    weights = torch.randn(shape, generator=torch.Generator().manual_seed(case.seed), dtype=F64)
    needed = [t for t in inputs if t.requires_grad]
    grads = iter(torch.autograd.grad((out * weights.to(dtype)).sum(), needed))
    for name, t, want_grad in zip(NAMES, inputs, want_grads, strict=True):
        if t.requires_grad:
            check_gradient(name, next(grads), t, weights * want_grad, dtype, case)


def check_gradient(name, grad, t, terms, dtype, case) -> None:
    """``grad`` against the sum of ``terms`` (the weighted reference derivatives, of the
    broadcast shape) over the dimensions ``t`` was broadcast along."""
    assert grad.shape == t.shape and grad.dtype == t.dtype, (name, case, grad.shape, grad.dtype)
    want = terms.sum_to_size(t.shape)
    scale = terms.abs().sum_to_size(t.shape)
    tol = ((GRAD_RTOL[dtype] + rounding(t.dtype, dtype)) * scale + torch.finfo(dtype).tiny
           + smallest_subnormal(t.dtype))
    got = grad.to(F64)
    edge = overflow_threshold(t.dtype)
    beyond = want.abs() - tol > edge  # rounds to inf in t's dtype
    within = want.abs() + tol < edge
    close = (got - want).abs() <= tol
    inf = torch.isinf(got) & (torch.sign(got) == torch.sign(want))
    ok = torch.where(beyond, inf, torch.where(within, close, close | inf))
    assert ok.all(), (name, case, got[~ok], want[~ok])


@settings(max_examples=300, deadline=None)
@given(case=cases)
@example(case=Case(((), (), (), ()), (F32,) * 4, ("contiguous",) * 4, (True,) * 4, 1.0, 0))
@example(case=Case(((), (), (), ()), (F16,) * 4, ("contiguous",) * 4, (True,) * 4, -1.0, 1))
@example(case=Case(((0, 3), (3,), (1, 1), ()), (F32,) * 4, LAYOUTS[:4], (True,) * 4, 1.0, 2))
@example(case=Case(((3, 1), (1, 3), (2, 1, 1), (3,)), (F32, F32, BF16, BF16),
                   ("transposed", "strided", "offset", "expanded"),
                   (False, False, True, True), -1.0, 3))
def test_every_shape_layout_and_dtype_against_the_float64_kernel(case):
    check_case(case)


COMPILED_CASES = [
    Case(((), (), (), ()), (F32,) * 4, ("contiguous",) * 4, (True,) * 4, power, seed)
    for power in POWERS for seed in range(3)
] + [
    Case(((0, 3), (3,), (1, 1), ()), (F32,) * 4, LAYOUTS[:4], (True,) * 4, -1.0, 2),
    Case(((3, 1), (1, 3), (2, 1, 1), (3,)), (F32, F32, BF16, F16),
         ("transposed", "strided", "offset", "expanded"), (False, False, True, True), -1.0, 3),
    Case(((2, 3), (2, 3), (2, 3), (1,)), (F32,) * 4, ("contiguous", "strided", "transposed",
                                                      "offset"), (True,) * 4, 1.0, 4),
]


@pytest.mark.slow  # compiles the kernels: a minute or two on a CPU
def test_compiled_kernels_take_every_shape_without_graph_breaks():
    """``Kernels(compiled=True)``: the same checks on a few cases (0-dim inputs, on the fast path
    and on the fallback, empty, broadcast non-contiguous mixed-dtype), and no graph break (a
    0-dim index in the Dawson table's lookup was a host read that broke the graph)."""
    from torch._dynamo.utils import counters

    counters.clear()
    for case in COMPILED_CASES:
        check_case(case, numerics.Kernels(compiled=True))
    assert not counters["graph_break"], dict(counters["graph_break"])


# --------------------------------------------------------------------- the known bug (0-dim)


@pytest.mark.parametrize("power", POWERS)
def test_zero_dim_float32_on_the_fallback(power):
    """Issue 12: 0-dim float32 inputs that the fast path sends to the float64 kernel raised
    IndexError (an index tuple from nonzero() on a 0-dim tensor)."""
    values = (0.49, 0.51, 0.9, 1e-12)
    inputs = [torch.tensor(v, requires_grad=True) for v in values]
    ok = fast32.fast_power_integral(*(t.detach() for t in inputs), power, (True,) * 4)[2]
    assert ok.shape == () and not ok  # this element goes to the fallback
    out = call(inputs, power)
    grads = torch.autograd.grad(out, inputs)
    want, want_grads = reference(inputs, power, F32)
    assert out.shape == () and out.dtype == F32
    assert out.item() == pytest.approx(want.item(), rel=1e-6)
    for got, expected in zip(grads, want_grads, strict=True):
        assert got.shape == () and got.item() == pytest.approx(expected.item(), rel=1e-6,
                                                               abs=1e-30)


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
def test_fallback_and_fast_elements_mixed_in_one_non_contiguous_tensor(dtype):
    """A transposed (3, 2) mean against a (2, 1) interval: the far means (t > 1e6) go to the
    float64 kernel, the near ones stay on the fast path; each element matches its own 0-dim
    call, which takes the path alone."""
    lo = torch.tensor([[0.25], [-math.inf]], dtype=dtype)
    hi = torch.tensor([[0.75], [0.5]], dtype=dtype)
    loc = torch.tensor([[0.5, 300.0, 0.3], [0.4, -250.0, 0.6]], dtype=dtype).T
    scale = torch.tensor(1e-4, dtype=dtype)
    assert not loc.is_contiguous()
    out = numerics.log_normal_interval(lo, hi, loc.T, scale)
    ok = fast32.fast_power_integral(*(t.float() for t in (lo, hi, loc.T, scale)), 1.0,
                                    (False,) * 4)[2]
    assert ok.any() and not ok.all()
    for i in range(2):
        for j in range(3):
            alone = numerics.log_normal_interval(lo[i, 0], hi[i, 0], loc.T[i, j], scale)
            assert alone.shape == () and out[i, j].item() == alone.item()


# ------------------------------------------------------- special functions in float16/bf16


@pytest.mark.parametrize("dtype", [F16, BF16])
def test_special_functions_compute_half_inputs_in_float32(dtype):
    """``dawson`` and ``log_ndtr`` of float16/bfloat16 inputs: float32 results within the
    float32 contract (1e-6 and 1e-5 relative) of scipy on the values the tensors hold; before,
    float16's saturation limit finfo.max / 2**64 (3.6e-15) flattened log Phi to 0."""
    x = torch.tensor([-300.0, -30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 60.0], dtype=dtype)
    held = x.to(F64).numpy()
    for fn, want, rtol in ((numerics.dawson, scipy.special.dawsn(held), 1e-6),
                           (numerics.log_ndtr, scipy.special.log_ndtr(held), 1e-5)):
        xt = x.clone().requires_grad_()
        out = fn(xt)
        assert out.dtype == F32 and out.shape == x.shape
        np.testing.assert_allclose(out.detach().numpy(), want, rtol=rtol, atol=1e-37)
        (grad,) = torch.autograd.grad(out.sum(), xt)
        assert grad.dtype == dtype and torch.isfinite(grad).all()
