"""Tests of ``intvae.numerics`` against high-precision references.

The contract (``docs/math.md``: interval likelihood, IRELBO, Dawson function):

* ``log_limit(dtype) = finfo(dtype).max / 2**64``; every value lies in [-L, L] (it saturates
  there when the true value is beyond) and every gradient is finite with magnitude <= L.
* ``dawson``: relative error <= 1e-6 (float32) / 1e-12 (float64) against scipy's ``dawsn``
  for |x| <= 1e8, exactly odd, derivative 1 - 2 x D(x).
* ``log_ndtr``: values within 1e-5 / 1e-10 relative, gradients phi/Phi within 1e-5 / 1e-9
  relative of mpmath for x in [-1e8, 40] (absolute slack finfo.tiny for underflowing values).
* ``log_normal_interval`` and ``log_normal_power_integral``: within 1e-5 (float32) / 1e-10
  (float64) relative of a 50-digit mpmath reference wherever the true value is inside
  [-L, L], saturating at -L (+L for the growing Dawson branch) elsewhere; gradients within
  1e-4 / 1e-8 relative where the true gradient is inside range; never inf or nan.

References are always computed from the dtype-rounded inputs (the values the tensors really
hold), so e.g. a float32 interval whose upper end rounds onto its lower end has true value
-inf and must give the floor -L. Every comparison allows an absolute slack of
``finfo(dtype).tiny`` besides the relative tolerance, for true values that underflow.
"""

from __future__ import annotations

import functools
import itertools
import math

import mpmath as mp
import numpy as np
import pytest
import references as ref
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intvae import numerics

F32, F64 = torch.float32, torch.float64
DTYPES = (F32, F64)
DTYPE_IDS = ("float32", "float64")
NP_DTYPE = {F32: np.float32, F64: np.float64}

VALUE_RTOL = {F32: 1e-5, F64: 1e-10}
GRAD_RTOL = {F32: 1e-4, F64: 1e-8}
DAWSON_RTOL = {F32: 1e-6, F64: 1e-12}
NDTR_VALUE_RTOL = {F32: 1e-5, F64: 1e-10}
NDTR_GRAD_RTOL = {F32: 1e-5, F64: 1e-9}

# The accuracy grid of the contract.
SCALES = (1e-30, 1e-12, 1e-4, 1e-2, 1.0, 1e4, 1e30)
OFFSETS = (-1e6, -3.0, -1e-3, 0.0, 2e-7, 5.0, 1e6)  # lo - loc
WIDTHS = (1e-7, 1e-3, 1.0)  # hi - lo
LOCS = (0.3, -1234.5678, 98765.4321)
POWERS = (0.5, 2.0, -1.0, -0.25, 1.0)  # -1: alpha = 2 (beta = -1)
INPUT_NAMES = ("lo", "hi", "loc", "scale")
QUANTITIES = ("value", *INPUT_NAMES)  # the value, and its gradient with respect to each input
MAX_REPORTED = 30


def limit(dtype: torch.dtype) -> float:
    """The documented saturation level, computed independently of the module."""
    return torch.finfo(dtype).max / 2**64


def tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def rounded(values, dtype: torch.dtype) -> list[float]:
    """Python floats rounded to ``dtype`` (exactly what a tensor of that dtype holds)."""
    return [float(v) for v in np.asarray(values, dtype=np.float64).astype(NP_DTYPE[dtype])]


def fmt(v: float) -> str:
    return f"{v:.17g}"


def failure_report(title: str, lines: list[str]) -> str:
    shown = "\n  ".join(lines[:MAX_REPORTED])
    more = f"\n  ... and {len(lines) - MAX_REPORTED} more" if len(lines) > MAX_REPORTED else ""
    return f"{title}: {len(lines)} failing case(s)\n  {shown}{more}"


def value_failures(got, expected, dtype, rtol, describe) -> list[str]:
    """Cases where ``got`` breaks the value contract relative to the true ``expected``.

    ``expected`` (float64, may be +-inf) is clamped into [-L, L]; ``got`` must be finite,
    inside [-L, L], within ``rtol * |clamped| + tiny`` of it, and exactly +-L where the true
    value is clearly beyond the limit.
    """
    big = limit(dtype)
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    clamped = np.clip(expected, -big, big)
    bad = ~np.isfinite(got) | (np.abs(got) > big)
    with np.errstate(invalid="ignore"):
        bad |= ~(np.abs(got - clamped) <= rtol * np.abs(clamped) + tiny(dtype))
        beyond = np.abs(expected) > big * (1 + 1e-6)
        bad |= beyond & (got != np.sign(expected) * big)
    return [
        f"{describe(i)}: expected {fmt(expected[i])}"
        f"{' (saturates)' if abs(expected[i]) > big else ''}, got {fmt(got[i])}"
        for i in np.flatnonzero(bad)
    ]


def grad_failures(got, expected, values_expected, dtype, rtol, describe, name) -> list[str]:
    """Gradient contract: always finite with |g| <= L; within ``rtol`` (plus tiny) of the true
    gradient where the true value and the true gradient are both inside [-L, L]."""
    big = limit(dtype)
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    values_expected = np.asarray(values_expected, dtype=np.float64)
    bad = ~np.isfinite(got) | (np.abs(got) > big)
    with np.errstate(invalid="ignore"):
        compare = (
            np.isfinite(values_expected)
            & (np.abs(values_expected) < big)
            & np.isfinite(expected)
            & (np.abs(expected) <= big)
        )
        bad |= compare & ~(np.abs(got - expected) <= rtol * np.abs(expected) + tiny(dtype))
    return [
        f"{describe(i)}: d/d{name} expected {fmt(expected[i])}, got {fmt(got[i])}"
        for i in np.flatnonzero(bad)
    ]


# ------------------------------------------------------------------------------- grid


@functools.cache
def grid(dtype: torch.dtype) -> tuple[tuple[float, ...], ...]:
    """(lo, hi, loc, scale) columns of the accuracy grid, rounded to ``dtype``."""
    rows = list(itertools.product(LOCS, SCALES, OFFSETS, WIDTHS))
    loc = np.array([r[0] for r in rows])
    scale = np.array([r[1] for r in rows])
    lo = loc + np.array([r[2] for r in rows])
    hi = lo + np.array([r[3] for r in rows])
    return tuple(tuple(rounded(col, dtype)) for col in (lo, hi, loc, scale))


@functools.cache
def reference(cols: tuple[tuple[float, ...], ...], power: float) -> tuple[np.ndarray, np.ndarray]:
    """True log integral (float64, -inf where hi <= lo) and gradient (n, 4) at each point."""
    values, grads = [], []
    for lo, hi, loc, scale in zip(*cols, strict=True):
        value, grad = ref.log_power_integral(lo, hi, loc, scale, power)
        values.append(ref.to_float(value))
        grads.append([math.nan] * 4 if grad is None else [ref.to_float(g) for g in grad])
    return np.array(values), np.array(grads).reshape(-1, 4)


def evaluate(cols, dtype, power=None) -> tuple[np.ndarray, np.ndarray]:
    """The module's values and gradients (n, 4) at the points ``cols``, in ``dtype``."""
    inputs = [torch.tensor(col, dtype=dtype, requires_grad=True) for col in cols]
    if power is None:
        out = numerics.log_normal_interval(*inputs)
    else:
        out = numerics.log_normal_power_integral(*inputs, power)
    assert out.dtype == dtype
    assert out.shape == inputs[0].shape
    out.sum().backward()
    grads = []
    for name, t in zip(INPUT_NAMES, inputs, strict=True):
        assert t.grad is not None, f"no gradient with respect to {name}"
        grads.append(t.grad.double().numpy())
    return out.detach().double().numpy(), np.stack(grads, axis=1)


def describer(cols, power=None):
    def describe(i: int) -> str:
        args = ", ".join(f"{n}={fmt(c[i])}" for n, c in zip(INPUT_NAMES, cols, strict=True))
        return f"({args}{'' if power is None else f', power={power}'})"

    return describe


def check_against_reference(cols, dtype, power=None, quantities=QUANTITIES) -> None:
    """Compare the module's values and/or gradients with the mpmath reference at ``cols``.

    ``quantities``: any of "value" and the input names (gradient with respect to it)."""
    expected, expected_grads = reference(cols, 1.0 if power is None else power)
    got, got_grads = evaluate(cols, dtype, power)
    describe = describer(cols, power)
    failures = []
    if "value" in quantities:
        failures += value_failures(got, expected, dtype, VALUE_RTOL[dtype], describe)
    for j, name in enumerate(INPUT_NAMES):
        if name in quantities:
            failures += grad_failures(
                got_grads[:, j],
                expected_grads[:, j],
                expected,
                dtype,
                GRAD_RTOL[dtype],
                describe,
                name,
            )
    assert not failures, failure_report(f"{dtype} {'/'.join(quantities)}", failures)


# ------------------------------------------------------------------- reference checks


def test_reference_log_ndtr_matches_scipy():
    xs = [-1e8, -1e5, -1e3, -40.0, -5.0, -1.0, 0.0, 1e-30, 0.5, 3.0, 5.0, 10.0, 30.0]
    for x in xs:
        want = scipy.special.log_ndtr(x)
        assert ref.to_float(ref.log_ndtr(x)) == pytest.approx(want, rel=1e-13), x
        if x > -30:
            d = math.exp(-x * x / 2) / math.sqrt(2 * math.pi) / scipy.special.ndtr(x)
            assert ref.to_float(ref.log_ndtr_grad(x)) == pytest.approx(d, rel=1e-13), x
    # phi/Phi ~ -x - 1/x + 2/x^3 in the far lower tail
    for x in (-1e3, -1e5, -1e8):
        asymptotic = -x - 1 / x + 2 / x**3
        assert ref.to_float(ref.log_ndtr_grad(x)) == pytest.approx(asymptotic, rel=1e-14)
    # log Phi(40) = log1p(-Phi(-40)) ~ -Phi(-40), far below float64's range
    with mp.workdps(60):
        assert abs(ref.log_ndtr(40.0) / -mp.ncdf(-40) - 1) < mp.mpf("1e-40")


def test_reference_dawson_matches_scipy_and_spec():
    xs = np.concatenate([[1e-30, 1e-5, 0.5, 0.9241388730, 2.0], np.logspace(0, 8, 40)])
    for x in xs:
        want = scipy.special.dawsn(x)
        assert ref.to_float(ref.dawson(x)) == pytest.approx(want, rel=2e-14), x
    spot = {
        2.0: "0.30134038892379196603",
        20.0: "0.025031367926403671947",
        200.0: "0.0025000312511719482486",
    }
    for x, want in spot.items():
        with mp.workdps(30):
            assert abs(ref.dawson(x) / mp.mpf(want) - 1) < mp.mpf("1e-19")
    # maximum 0.5410442246 at 0.9241388730: D' vanishes there
    assert abs(ref.to_float(ref.dawson_grad(0.9241388730))) < 1e-9
    assert ref.to_float(ref.dawson(0.9241388730)) == pytest.approx(0.5410442246, abs=1e-10)
    # D'(x) = 1 - 2 x D(x) ~ -1/(2 x^2) - 3/(4 x^4) for large x
    for x in (1e3, 1e5, 1e8):
        asymptotic = -1 / (2 * x**2) - 3 / (4 * x**4)
        assert ref.to_float(ref.dawson_grad(x)) == pytest.approx(asymptotic, rel=1e-12)


def test_reference_interval_matches_scipy_where_scipy_is_accurate():
    cases = [(-1.0, 1.0), (-3.0, 0.5), (0.2, 2.0), (-5.0, -4.0), (4.0, 6.0), (-0.3, -0.1)]
    for a, b in cases:
        p = scipy.special.ndtr(b) - scipy.special.ndtr(a)
        if a >= 0:
            p = scipy.special.ndtr(-a) - scipy.special.ndtr(-b)
        value, _ = ref.log_normal_interval(a, b, 0.0, 1.0)
        assert ref.to_float(value) == pytest.approx(math.log(p), rel=1e-13), (a, b)
    # one end far in the tail: the other end's tail is all that is left
    for x in (-30.0, -3.0, 2.0):
        value, _ = ref.log_normal_interval(-1e30, x, 0.0, 1.0)
        assert ref.to_float(value) == pytest.approx(scipy.special.log_ndtr(x), rel=1e-13)
    # loc inside, sigma small: log P = log1p(-(Phi(a) + Phi(-b))), true value ~ -1e-1392
    value, grad = ref.log_normal_interval(-1.0, 1.0, 0.2, 1e-2)
    with mp.workdps(60):
        loc, scale = ref.exact(0.2), ref.exact(1e-2)  # the floats, not 0.2 and 0.01
        tails = mp.ncdf((-1 - loc) / scale) + mp.ncdf(-(1 - loc) / scale)
        assert abs(value / -tails - 1) < mp.mpf("1e-40")
    # log F(t) = t^2 + log D(t) for the Dawson branch
    for t in (0.1, 1.0, 5.0, 30.0, 1e3):
        with mp.workdps(60):
            got = ref.log_erfi_integral_diff(mp.mpf(0), mp.mpf(t))
        want = t * t + math.log(scipy.special.dawsn(t))
        assert ref.to_float(got) == pytest.approx(want, rel=1e-13), t


@pytest.mark.parametrize(
    "args",
    [
        (-0.5, 1.2, 0.3, 0.7),
        (0.1, 0.4, 0.0, 1.0),
        (-1.0, 2.0, 0.5, 1.5),
        (2.0, 2.5, 0.0, 0.5),
        (-3.0, -2.0, 1.0, 0.8),
        (0.3, 0.301, 0.0, 1e-2),
        (1e-3, 2e-3, -1e-3, 1e-3),
    ],
)
@pytest.mark.parametrize("power", POWERS + (3.5, -2.0))
def test_reference_power_integral_matches_quadrature(args, power):
    value, _ = ref.log_power_integral(*args, power)
    quad = ref.log_power_integral_quad(*args, power, dps=30)
    with mp.workdps(30):
        assert abs(value - quad) <= mp.mpf("1e-25") * max(1, abs(quad))


@pytest.mark.parametrize(
    "args", [(-0.5, 1.2, 0.3, 0.7), (2.0, 2.5, 0.0, 0.5), (-3.0, -2.0, 1.0, 0.8)]
)
@pytest.mark.parametrize("power", POWERS)
def test_reference_gradient_matches_numerical_differentiation(args, power):
    _, grads = ref.log_power_integral(*args, power)
    for j in range(4):

        def partial(v, j=j):
            moved = list(args)
            moved[j] = v
            return ref.log_power_integral(*moved, power, dps=80)[0]

        with mp.workdps(40):
            numeric = mp.diff(partial, ref.exact(args[j]))
            assert abs(numeric - grads[j]) <= mp.mpf("1e-25") * max(1, abs(grads[j])), j


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reference_is_stable_under_more_digits(dtype):
    """The grid references keep their digits: recomputing with 30 more digits agrees."""
    cols = grid(dtype)
    n = len(cols[0])
    for i in range(0, n, 7):
        point = [c[i] for c in cols]
        for power in (1.0, -1.0, 0.5):
            v1, g1 = ref.log_power_integral(*point, power)
            v2, g2 = ref.log_power_integral(*point, power, dps=ref.BASE_DPS + 30)
            if g1 is None:
                assert v1 == v2 == mp.ninf
                continue
            with mp.workdps(60):
                for x, y in zip((v1, *g1), (v2, *g2), strict=True):
                    assert abs(x - y) <= mp.mpf("1e-45") * abs(y), (point, power)


# ----------------------------------------------------------------------------- log_limit


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_limit(dtype):
    value = numerics.log_limit(dtype)
    assert isinstance(value, float)
    assert value == torch.finfo(dtype).max / 2**64
    assert value == pytest.approx({F32: 1.845e19, F64: 9.75e288}[dtype], rel=2e-3)
    # exactly representable, so a clamp in ``dtype`` lands on it
    assert float(torch.tensor(value, dtype=dtype)) == value


# -------------------------------------------------------------------------------- dawson


def dawson_points() -> np.ndarray:
    positive = np.concatenate(
        [
            [0.0, 1e-30, 1e-20, 1e-10, 1e-5, 1e-3, 0.1, 0.5, 0.9241388730],
            np.linspace(0.9, 0.95, 51),
            np.linspace(1.0, 10.0, 901),
            np.logspace(1, 8, 351),
        ]
    )
    return np.concatenate([positive, -positive[1:]])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dawson_matches_scipy(dtype):
    x = dawson_points().astype(NP_DTYPE[dtype])
    want = scipy.special.dawsn(x.astype(np.float64))
    got = numerics.dawson(torch.from_numpy(x))
    assert got.dtype == dtype
    got = got.double().numpy()
    rtol = DAWSON_RTOL[dtype]
    bad = ~(np.abs(got - want) <= rtol * np.abs(want))
    failures = [
        f"x={fmt(x[i])}: expected {fmt(want[i])}, got {fmt(got[i])}" for i in np.flatnonzero(bad)
    ]
    assert not failures, failure_report(f"dawson {dtype}", failures)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dawson_is_exactly_odd(dtype):
    x = torch.from_numpy(dawson_points().astype(NP_DTYPE[dtype]))
    x = x[x > 0]
    pos, neg = numerics.dawson(x), numerics.dawson(-x)
    int_type = torch.int32 if dtype == F32 else torch.int64
    assert torch.equal(neg.view(int_type), (-pos).view(int_type))
    assert float(numerics.dawson(torch.zeros((), dtype=dtype))) == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dawson_spot_values(dtype):
    spot = {
        2.0: 0.30134038892379196603,
        20.0: 0.025031367926403671947,
        200.0: 0.0025000312511719482486,
        0.9241388730: 0.5410442246,
    }
    got = numerics.dawson(torch.tensor(list(spot), dtype=dtype)).double().tolist()
    for (x, want), value in zip(spot.items(), got, strict=True):
        rtol = DAWSON_RTOL[dtype] if x != 0.9241388730 else 1e-9 + DAWSON_RTOL[dtype]
        assert value == pytest.approx(want, rel=rtol), x


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dawson_gradient(dtype):
    """d/dx D(x) = 1 - 2 x D(x), as accurate as the formula with D within its tolerance:
    |g - D'| <= rtol * (|D'| + |2 x D|)."""
    x = np.concatenate([dawson_points()[::5], [0.9241388730, -0.9241388730, 1e8, -1e8]])
    x = np.array(rounded(x, dtype))
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    numerics.dawson(xt).sum().backward()
    got = xt.grad.double().numpy()
    want = np.array([ref.to_float(ref.dawson_grad(v, dps=30)) for v in x])
    scale = np.abs(want) + np.abs(2 * x * scipy.special.dawsn(x))
    bad = ~np.isfinite(got) | ~(np.abs(got - want) <= DAWSON_RTOL[dtype] * scale)
    failures = [
        f"x={fmt(x[i])}: D'(x) expected {fmt(want[i])}, got {fmt(got[i])}"
        for i in np.flatnonzero(bad)
    ]
    assert not failures, failure_report(f"dawson gradient {dtype}", failures)


def test_dawson_gradcheck():
    x = torch.linspace(-6.0, 6.0, 25, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(numerics.dawson, (x,))
    x = torch.tensor([15.0, -40.0, 300.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(numerics.dawson, (x,))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dawson_keeps_dtype_and_shape(dtype):
    x = torch.linspace(-3, 3, 12, dtype=dtype).reshape(3, 4)
    out = numerics.dawson(x)
    assert out.dtype == dtype and out.shape == (3, 4)


# ------------------------------------------------------------------------------ log_ndtr


def ndtr_points(dtype) -> list[float]:
    x = np.concatenate(
        [-np.logspace(8, 2, 61), np.linspace(-40, 40, 401), [-1e3, -1e5, 0.0, 1e-30, -1e-30]]
    )
    return rounded(x, dtype)


@functools.cache
def ndtr_reference(points: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([ref.to_float(ref.log_ndtr(x)) for x in points])
    grads = np.array([ref.to_float(ref.log_ndtr_grad(x)) for x in points])
    return values, grads


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_ndtr_values_and_gradients(dtype):
    x = ndtr_points(dtype)
    want, want_grad = ndtr_reference(tuple(x))
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    out = numerics.log_ndtr(xt)
    assert out.dtype == dtype
    out.sum().backward()
    got, got_grad = out.detach().double().numpy(), xt.grad.double().numpy()

    def describe(i):
        return f"x={fmt(x[i])}"

    failures = value_failures(got, want, dtype, NDTR_VALUE_RTOL[dtype], describe)
    failures += grad_failures(
        got_grad, want_grad, want, dtype, NDTR_GRAD_RTOL[dtype], describe, "x"
    )
    assert not failures, failure_report(f"log_ndtr {dtype}", failures)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_ndtr_gradient_in_the_far_lower_tail(dtype):
    """torch.special.log_ndtr's autograd gives 0.399 at -1e5 in float32; the truth is ~1e5."""
    xs = [-1e3, -1e5]
    xt = torch.tensor(xs, dtype=dtype, requires_grad=True)
    numerics.log_ndtr(xt).sum().backward()
    for x, g in zip(xs, xt.grad.double().tolist(), strict=True):
        assert g == pytest.approx(-x - 1 / x, rel=NDTR_GRAD_RTOL[dtype]), x


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_ndtr_upper_tail_is_finite_and_flat(dtype):
    xs = [5.0, 10.0, 20.0, 38.0, 40.0, 1e3, 1e8, 1e30]
    xt = torch.tensor(xs, dtype=dtype, requires_grad=True)
    out = numerics.log_ndtr(xt)
    out.sum().backward()
    assert torch.isfinite(out).all() and (out <= 0).all()
    assert torch.isfinite(xt.grad).all() and (xt.grad >= 0).all()
    assert (xt.grad[2:] <= 1e-80 if dtype == F64 else xt.grad[2:] <= tiny(dtype)).all()


def test_log_ndtr_gradcheck():
    x = torch.tensor([-1e3, -60.0, -30.0, -8.0, -2.0, -0.5, 0.0, 0.7, 3.0, 8.0], dtype=F64)
    assert torch.autograd.gradcheck(numerics.log_ndtr, (x.requires_grad_(),))


# ------------------------------------------------------------ log_normal_interval: grid


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_normal_interval_on_grid(dtype, quantity):
    """Values, and gradients with respect to each input, on the whole accuracy grid."""
    check_against_reference(grid(dtype), dtype, quantities=(quantity,))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_normal_interval_is_a_log_probability_on_grid(dtype):
    got, _ = evaluate(grid(dtype), dtype)
    assert (got <= 0).all() and (got >= -limit(dtype)).all()


# ------------------------------------------------------- log_normal_power_integral: grid


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("power", POWERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_log_normal_power_integral_on_grid(dtype, power, quantity):
    """Values, and gradients with respect to each input, on the whole accuracy grid."""
    check_against_reference(grid(dtype), dtype, power, quantities=(quantity,))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_power_one_equals_interval(dtype):
    cols = grid(dtype)
    interval, interval_grads = evaluate(cols, dtype)
    power_one, power_one_grads = evaluate(cols, dtype, 1.0)
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(power_one, interval, rtol=4 * eps, atol=tiny(dtype))
    np.testing.assert_allclose(power_one_grads, interval_grads, rtol=64 * eps, atol=tiny(dtype))


# ------------------------------------------------------------------------- regimes


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_broadcasting(dtype):
    lo = torch.tensor([[-1.0], [0.0], [0.5]], dtype=dtype, requires_grad=True)
    hi = (lo.detach() + 0.25).requires_grad_()
    loc = torch.tensor([[-0.5, 0.0, 0.3, 2.0]], dtype=dtype, requires_grad=True)
    scale = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    for power in (None, 0.5, -1.0):
        args = (lo, hi, loc, scale)
        if power is None:
            out = numerics.log_normal_interval(*args)
        else:
            out = numerics.log_normal_power_integral(*args, power)
        assert out.shape == (3, 4) and out.dtype == dtype
        grads = torch.autograd.grad(out.sum(), args)
        for g, t in zip(grads, args, strict=True):
            assert g.shape == t.shape and g.dtype == dtype
        # each entry equals the elementwise computation
        full = [t.detach().expand(3, 4).reshape(-1) for t in args]
        if power is None:
            flat = numerics.log_normal_interval(*full)
        else:
            flat = numerics.log_normal_power_integral(*full, power)
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(out.detach().reshape(-1), flat, rtol=16 * eps, atol=tiny(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_narrow_interval(dtype):
    """width 1e-7, scale 1: log P ~ log(width) + log phi(mid); float32 rounds the width."""
    lo = [0.3, -2.0, 4.0, 0.0, -0.1]
    cols = (
        tuple(rounded(lo, dtype)),
        tuple(rounded(np.array(lo) + 1e-7, dtype)),
        tuple(rounded([0.0] * 5, dtype)),
        tuple(rounded([1.0] * 5, dtype)),
    )
    check_against_reference(cols, dtype)
    for power in POWERS:
        check_against_reference(cols, dtype, power)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigma_to_zero_with_loc_inside(dtype):
    scales = [10.0**-k for k in range(1, 31)]
    n = len(scales)
    cols = tuple(tuple(rounded(c, dtype)) for c in ([-1.0] * n, [1.0] * n, [0.2] * n, scales))
    check_against_reference(cols, dtype)
    got, grads = evaluate(cols, dtype)
    small = np.array(cols[3]) <= 1e-2
    assert (np.abs(got[small]) <= tiny(dtype)).all()  # value -> 0
    assert (np.abs(grads[small]) <= tiny(dtype)).all()  # gradient -> 0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigma_to_zero_with_loc_outside(dtype):
    scales = [10.0**-k for k in range(1, 31)]
    n = len(scales)
    for lo, hi, loc in ((1.0, 2.0, 0.0), (-3.0, -2.5, 0.0), (1000.0, 1001.0, 0.0)):
        cols = tuple(tuple(rounded(c, dtype)) for c in ([lo] * n, [hi] * n, [loc] * n, scales))
        check_against_reference(cols, dtype)
        got, grads = evaluate(cols, dtype)
        dist = min(abs(lo - loc), abs(hi - loc))
        for s, value in zip(cols[3], got, strict=True):
            leading = -((dist / s) ** 2) / 2
            if s <= 1e-3 and -leading < limit(dtype):
                assert value == pytest.approx(leading, rel=1e-4), s
            elif -leading > 2 * limit(dtype):
                assert value == -limit(dtype), s  # saturates at the floor
        assert np.isfinite(grads).all()


# ------------------------------------------------------------------------- gradcheck


def moderate_inputs(seed: int, n: int = 8, far: bool = False):
    gen = torch.Generator().manual_seed(seed)
    lo = torch.randn(n, generator=gen, dtype=F64)
    hi = lo + 0.1 + 1.5 * torch.rand(n, generator=gen, dtype=F64)
    loc = 0.5 * torch.randn(n, generator=gen, dtype=F64)
    if far:  # the interval in a tail
        loc = lo - 4.0 - 2.0 * torch.rand(n, generator=gen, dtype=F64)
    scale = 0.5 + torch.rand(n, generator=gen, dtype=F64)
    return tuple(t.requires_grad_() for t in (lo, hi, loc, scale))


@pytest.mark.parametrize("far", [False, True])
def test_log_normal_interval_gradcheck(far):
    assert torch.autograd.gradcheck(numerics.log_normal_interval, moderate_inputs(0, far=far))


@pytest.mark.parametrize("far", [False, True])
@pytest.mark.parametrize("power", POWERS)
def test_log_normal_power_integral_gradcheck(power, far):
    def fn(lo, hi, loc, scale):
        return numerics.log_normal_power_integral(lo, hi, loc, scale, power)

    assert torch.autograd.gradcheck(fn, moderate_inputs(1, far=far))


# ------------------------------------------------------------------- property tests


def log_uniform(lo_exp: float, hi_exp: float):
    return st.floats(lo_exp, hi_exp).map(lambda e: 10.0**e)


interval_inputs = st.tuples(
    st.floats(-1e6, 1e6),  # lo
    log_uniform(-7, 0),  # width
    st.floats(-1e6, 1e6),  # loc
    log_uniform(-30, 30),  # scale
)
widening = st.one_of(st.just(0.0), log_uniform(-9, 1))


def run_with_grad(fn, lo, hi, loc, scale, dtype):
    tensors = [torch.tensor(v, dtype=dtype, requires_grad=True) for v in (lo, hi, loc, scale)]
    out = fn(*tensors)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out.sum(), tensors)
    return out.detach(), grads


def assert_finite_in_range(out, grads, dtype, context):
    big = limit(dtype)
    assert torch.isfinite(out).all() and (out.abs() <= big).all(), (context, out)
    for name, g in zip(INPUT_NAMES, grads, strict=True):
        assert torch.isfinite(g).all() and (g.abs() <= big).all(), (context, name, g)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@settings(max_examples=200, deadline=None)
@given(point=interval_inputs, extra_lo=widening, extra_hi=widening)
def test_interval_properties(dtype, point, extra_lo, extra_hi):
    lo, width, loc, scale = point
    lo, hi, loc, scale = rounded([lo, lo + width, loc, scale], dtype)
    lo2, hi2 = rounded([lo - extra_lo, hi + extra_hi], dtype)
    out, grads = run_with_grad(
        numerics.log_normal_interval, [lo, lo2], [hi, hi2], [loc, loc], [scale, scale], dtype
    )
    context = dict(lo=lo, hi=hi, loc=loc, scale=scale, lo2=lo2, hi2=hi2)
    assert_finite_in_range(out, grads, dtype, context)
    assert (out <= 0).all(), (context, out)
    narrow, wide = float(out[0]), float(out[1])
    # widening never decreases the value (up to the contract's accuracy)
    assert wide >= narrow - (VALUE_RTOL[dtype] * abs(narrow) + tiny(dtype)), (context, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@settings(max_examples=200, deadline=None)
@given(point=interval_inputs, power=st.sampled_from(POWERS))
def test_power_integral_properties(dtype, point, power):
    lo, width, loc, scale = point
    lo, hi, loc, scale = rounded([lo, lo + width, loc, scale], dtype)

    def fn(*args):
        return numerics.log_normal_power_integral(*args, power)

    out, grads = run_with_grad(fn, [lo], [hi], [loc], [scale], dtype)
    assert_finite_in_range(out, grads, dtype, dict(lo=lo, hi=hi, loc=loc, scale=scale, p=power))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@settings(max_examples=200, deadline=None)
@given(x=st.floats(-1e8, 1e8))
def test_dawson_and_log_ndtr_properties(dtype, x):
    xt = torch.tensor([x], dtype=dtype, requires_grad=True)
    for fn in (numerics.dawson, numerics.log_ndtr):
        out = fn(xt)
        (g,) = torch.autograd.grad(out.sum(), xt)
        assert torch.isfinite(out).all() and torch.isfinite(g).all(), (fn.__name__, x)
        if fn is numerics.log_ndtr:
            assert (out <= 0).all(), x
