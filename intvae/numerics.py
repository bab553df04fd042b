"""Stable special functions behind the integral bounds.

All functions here are vectorized, broadcast their tensor arguments, keep the input's floating
dtype (float32 or float64) and are differentiable with finite gradients. Internally they compute
in float64 and round once at the end, so float32 results carry only the input's rounding. The
interval and power-integral kernels have a float32 fast path for float32 inputs on the CPU (see
"float32 fast path" below): elements where float32 formulas meet the float32 accuracy contract
(values within 1e-5, gradients within 1e-4 relative) are computed in float32, the rest by the
float64 kernel.

Saturation: a true value whose magnitude exceeds ``log_limit(dtype)`` (``finfo(dtype).max /
2**64``: about 1.8e19 in float32 and 9.7e288 in float64) is returned as ``-log_limit`` (or
``+log_limit`` for the Dawson branch of the power integral, whose values grow). Gradients are
clamped to the same magnitude. The limit leaves a factor 2**64 of room for what follows: sums
over pixels, samples and a batch, and the backward pass through the networks, whose sums over
a batch overflowed float32 in an MNIST run with a limit of finfo.max / 2**32 once the decoder's
standard deviation had collapsed (a float32 pixel saturates once |x - mu| / sigma > 6e9).

Formulas: ``../shared/spec/bounds.md`` sections 2, 5 and 7, after "Learning in Variational
Autoencoders with Kullback-Leibler and Renyi Integral Bounds", eq. (2) and (7).
"""

import functools
import math

import torch

from intvae import _dawson_table

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_HALF = math.sqrt(0.5)
_WORK = torch.float64
_DAWSON_TABLES: dict[torch.device, torch.Tensor] = {}
# (2n - 1)!!, n = 0..12: the coefficients of the asymptotic series of Dawson and erfcx.
_ODD_DOUBLE_FACTORIALS = tuple(math.prod(range(1, 2 * n, 2)) for n in range(13))


def _polynomial(coeffs, y: torch.Tensor) -> torch.Tensor:
    """sum_n coeffs[n] y^n by Horner's rule (coefficients lowest power first)."""
    acc = torch.full_like(y, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * y + c
    return acc


def log_limit(dtype: torch.dtype) -> float:
    """Largest magnitude a returned log-value or gradient takes: ``finfo(dtype).max / 2**64``."""
    return torch.finfo(dtype).max / 2.0**64


def _result_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The floating dtype of the result: float64 if any input is float64, else float32."""
    dtypes = [t.dtype for t in tensors if t.dtype.is_floating_point]
    return functools.reduce(torch.promote_types, dtypes, torch.get_default_dtype())


def _as_tensors(*values) -> list[torch.Tensor]:
    tensors = [torch.as_tensor(v) for v in values]
    device = next((t.device for t in tensors if t.dim() > 0), tensors[0].device)
    return [t.to(device) for t in tensors]


def _saturate(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Replace inf by the finite limit and clamp to [-limit, limit]; nan stays nan."""
    limit = log_limit(dtype)
    return torch.nan_to_num(t, posinf=limit, neginf=-limit).clamp(-limit, limit)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, switching between log(-expm1(x)) and log1p(-exp(x)) at
    x = -log 2 (Maechler, "Accurately computing log(1 - exp(-|a|))", 2012)."""
    x = x.clamp(max=0.0)
    near = x > -math.log(2.0)
    return torch.where(near, torch.log(-torch.expm1(x.clamp(min=-1.0))),
                       torch.log1p(-torch.exp(x.clamp(max=-0.5))))


# ---------------------------------------------------------------------------------------------
# Dawson function
# ---------------------------------------------------------------------------------------------


def _dawson_coefficients(device: torch.device) -> torch.Tensor:
    if device not in _DAWSON_TABLES:
        # One row per power of u, one column per piece.
        _DAWSON_TABLES[device] = torch.tensor(_dawson_table.COEFFICIENTS, dtype=_WORK,
                                              device=device).T.contiguous()
    return _DAWSON_TABLES[device]


def _dawson_asymptotic_tail(y: torch.Tensor) -> torch.Tensor:
    """sum_{n=1}^{12} (2n-1)!! y^n, y = 1/(2 x^2): 2 x D(x) - 1 for x >= 12 (error below
    1e-16)."""
    return y * _polynomial(_ODD_DOUBLE_FACTORIALS[1:], y)


def _dawson_piecewise(x: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(xt, g(xt)) with xt = min(x, 12): D(xt) = xt g(xt), g the piecewise polynomial of
    ``table`` (one column of coefficients per piece of width 0.5, in x's dtype)."""
    width = _dawson_table.WIDTH
    xt = x.clamp(max=_dawson_table.ASYMPTOTIC_FROM)
    index = torch.floor(xt / width).long().clamp(max=table.shape[1] - 1)
    u = (xt - (index.to(x.dtype) + 0.5) * width) / (0.5 * width)
    g = table[-1][index]
    for k in range(table.shape[0] - 2, -1, -1):
        g = torch.addcmul(table[k][index], g, u)
    return xt, g


def _dawson_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D(x) and 1 - 2 x D(x) for float64 x >= 0.

    Below 12: D(x) = x g(x) with g a degree-17 polynomial on pieces of width 0.5 (fitted by
    ``scripts/fit_dawson.py``), accurate in relative terms down to x = 0. From 12 on: the
    asymptotic series D(x) = (1 + sum_{n>=1} (2n-1)!! / (2x^2)^n) / (2x).
    """
    start = _dawson_table.ASYMPTOTIC_FROM
    xt, g = _dawson_piecewise(x, _dawson_coefficients(x.device))
    d_table = xt * g
    xa = x.clamp(min=start)
    tail = _dawson_asymptotic_tail(0.5 / (xa * xa))
    d_asym = (1.0 + tail) / (2.0 * xa)
    far = x >= start
    value = torch.where(far, d_asym, d_table)
    slope = torch.where(far, -tail, 1.0 - 2.0 * xt * d_table)
    return value, slope


class _Dawson(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ax = x.to(_WORK).abs()
        value, slope = _dawson_parts(ax)
        value = torch.copysign(value, x.to(_WORK)).to(x.dtype)
        ctx.save_for_backward(slope.to(x.dtype))
        return value

    @staticmethod
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        return grad * slope


def dawson(x: torch.Tensor) -> torch.Tensor:
    """Dawson's integral D(x) = exp(-x^2) int_0^x exp(u^2) du (spec section 7).

    Odd, D(x) ~ x near 0 and ~ 1/(2x) for large x; derivative 1 - 2 x D(x). Relative error
    below 1e-13 in float64 (checked against scipy.special.dawsn in the tests).
    """
    x = torch.as_tensor(x)
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    return _Dawson.apply(x)


# ---------------------------------------------------------------------------------------------
# Normal CDF in log space
# ---------------------------------------------------------------------------------------------


def _erfcx(y: torch.Tensor) -> torch.Tensor:
    """The scaled complementary error function exp(y^2) erfc(y) for float64 y >= 0.

    exp(y^2) erfc(y) directly below 26 (no overflow there in float64), then the asymptotic
    series (1 / (y sqrt pi)) sum_{n<=7} (-1)^n (2n - 1)!! / (2 y^2)^n (error below 2e-17).
    Written with elementwise ops only, so that ``torch.compile`` can fuse it (the built-in
    ``torch.special.erfcx`` is an opaque, unvectorized kernel on CPU).
    """
    near = y.clamp(max=26.0)
    direct = torch.exp(near * near) * torch.special.erfc(near)
    far = y.clamp(min=26.0)
    r = 0.5 / (far * far)
    series = _polynomial([(-1) ** n * c for n, c in enumerate(_ODD_DOUBLE_FACTORIALS[:8])], r)
    return torch.where(y < 26.0, direct, series / (far * math.sqrt(math.pi)))


def _log_ndtr_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log Phi(x) and the inverse Mills ratio phi(x) / Phi(x), float64.

    For x < 0: Phi(x) = erfcx(-x/sqrt 2) exp(-x^2/2) / 2, so log Phi(x) = -x^2/2 +
    log(erfcx(-x/sqrt 2) / 2) and phi/Phi = sqrt(2/pi) / erfcx(-x/sqrt 2) with no cancellation
    of large terms. For x >= 0: log Phi(x) = log1p(-erfc(x/sqrt 2) / 2).
    """
    neg = x.clamp(max=0.0)
    ex = _erfcx(-neg * _SQRT_HALF)
    log_left = -0.5 * neg * neg + torch.log(0.5 * ex)
    mills_left = _SQRT_2_OVER_PI / ex
    pos = x.clamp(min=0.0)
    log_right = torch.log1p(-0.5 * torch.special.erfc(pos * _SQRT_HALF))
    mills_right = torch.exp(-0.5 * pos * pos - _HALF_LOG_2PI - log_right)
    left = x < 0
    return torch.where(left, log_left, log_right), torch.where(left, mills_left, mills_right)


class _LogNdtr(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        value, mills = _log_ndtr_parts(x.to(_WORK))
        ctx.save_for_backward(_saturate(mills, x.dtype).to(x.dtype))
        return _saturate(value, x.dtype).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (mills,) = ctx.saved_tensors
        return grad * mills


def log_ndtr(x: torch.Tensor) -> torch.Tensor:
    """log Phi(x), the log of the standard normal CDF, with the exact gradient phi(x)/Phi(x).

    Unlike ``torch.special.log_ndtr``, whose float32 gradient is wrong below about -1e3, the
    gradient is the inverse Mills ratio computed from erfcx, about -x in the lower tail.
    """
    x = torch.as_tensor(x)
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    return _LogNdtr.apply(x)


# ---------------------------------------------------------------------------------------------
# Log of differences of CDF-like functions, with their gradients
# ---------------------------------------------------------------------------------------------


# Intervals with d max(1, |m|) below this (standardized width d, midpoint m) use the midpoint
# rule with its second-order correction, whose neglected term ~ (d m)^4 / 1920 is below 1e-14;
# wider ones the difference formulas, whose float64 cancellation error ~ 1e-16 / (d m) is small.
_NARROW = 3e-3


def _log_phi_difference(tl, th, d, logd):
    """log(Phi(th) - Phi(tl)) for tl < th and its partial derivatives (float64).

    ``d = th - tl`` and its log are passed separately because they are known more accurately
    than the difference of the rounded endpoints. Mirrored into the lower tail (tl + th <= 0,
    so tl < 0); then log Phi(th) + log1mexp(delta), delta = log Phi(tl) - log Phi(th), where
    log Phi(t) = -t^2/2 + log(erfcx(-t/sqrt 2) / 2) for t < 0 and for th < 0 delta = d m +
    log erfcx(-tl/sqrt 2) - log erfcx(-th/sqrt 2) (m the midpoint), free of the cancellation of
    large squares; narrow intervals use log d + log phi(m) + log1p(d^2 (m^2 - 1) / 24)
    (spec section 2). The derivatives use the inverse Mills ratio phi/Phi = sqrt(2/pi) / erfcx.
    """
    mirror = tl + th > 0
    tl, th = torch.where(mirror, -th, tl), torch.where(mirror, -tl, th)
    m = 0.5 * (tl + th)
    # Wide intervals.
    ex_lo = _erfcx(tl * -_SQRT_HALF)
    th_left = th.clamp(max=0.0)
    ex_hi = _erfcx(th_left * -_SQRT_HALF)
    log_ex_lo, log_ex_hi = torch.log(ex_lo), torch.log(ex_hi)
    lp_lo = -0.5 * tl * tl + log_ex_lo - math.log(2.0)
    th_right = th.clamp(min=0.0)
    lp_hi_right = torch.log1p(-0.5 * torch.special.erfc(th_right * _SQRT_HALF))
    left = th < 0
    lp_hi = torch.where(left, -0.5 * th_left * th_left + log_ex_hi - math.log(2.0), lp_hi_right)
    delta = torch.where(left, d * m + log_ex_lo - log_ex_hi, lp_lo - lp_hi).clamp(max=0.0)
    one_minus = -torch.expm1(delta)
    wide = lp_hi + log1mexp(delta)
    mills_hi = torch.where(left, _SQRT_2_OVER_PI / ex_hi,
                           torch.exp(-0.5 * th_right * th_right - _HALF_LOG_2PI - lp_hi_right))
    g_hi_wide = mills_hi / one_minus
    g_lo_wide = -(_SQRT_2_OVER_PI / ex_lo) * torch.exp(delta) / one_minus
    # Narrow intervals.
    corr = 1.0 + d * d * (m * m - 1.0) / 24.0
    narrow_value = logd - 0.5 * m * m - _HALF_LOG_2PI + torch.log(corr)
    g_lo_narrow = -torch.exp(0.5 * d * m - d * d / 8.0) / (d * corr)
    g_hi_narrow = torch.exp(-0.5 * d * m - d * d / 8.0) / (d * corr)
    narrow = d * torch.clamp(m.abs(), min=1.0) < _NARROW
    value = torch.where(narrow, narrow_value, wide)
    g_lo = torch.where(narrow, g_lo_narrow, g_lo_wide)
    g_hi = torch.where(narrow, g_hi_narrow, g_hi_wide)
    return value, torch.where(mirror, -g_hi, g_lo), torch.where(mirror, -g_lo, g_hi)


def _log_dawson(t):
    return torch.log(_dawson_parts(t)[0])


def _log_erfi_difference(tl, th, d, logd):
    """log(F(th) - F(tl)) for tl < th, F(t) = int_0^t exp(u^2) du = exp(t^2) D(t), and its
    partial derivatives F'(t) / (F(th) - F(tl)) = exp(t^2) / (...) (float64).

    Mirrored so that th >= |tl|; with q = log F(|tl|) - log F(th) = -2 d m + log D(|tl|) -
    log D(th): log F(th) + log1mexp(q) when tl >= 0, log F(th) + log1p(exp(q)) when the interval
    straddles 0; narrow intervals use log d + m^2 + log1p(d^2 (4 m^2 + 2) / 24) (spec section 5).
    """
    mirror = tl + th < 0
    tl, th = torch.where(mirror, -th, tl), torch.where(mirror, -tl, th)
    m = 0.5 * (tl + th)
    abs_lo = tl.abs()
    straddle = tl < 0
    log_d_hi = _log_dawson(th)
    log_d_lo = _log_dawson(abs_lo)
    q = (-2.0 * d * m + log_d_lo - log_d_hi).clamp(max=0.0)
    eq = torch.exp(q)
    denom = torch.where(straddle, 1.0 + eq, -torch.expm1(q))
    wide = th * th + log_d_hi + torch.where(straddle, torch.log1p(eq), log1mexp(q))
    g_hi_wide = torch.exp(-log_d_hi) / denom
    g_lo_far = -eq * torch.exp(-log_d_lo) / denom
    g_lo_near = -torch.exp(tl * tl - wide)
    g_lo_wide = torch.where(abs_lo < 1.0, g_lo_near, g_lo_far)
    corr = 1.0 + d * d * (4.0 * m * m + 2.0) / 24.0
    narrow_value = logd + m * m + torch.log(corr)
    g_hi_narrow = torch.exp(d * m + d * d / 4.0) / (d * corr)
    g_lo_narrow = -torch.exp(-d * m + d * d / 4.0) / (d * corr)
    narrow = d * torch.clamp(m.abs(), min=1.0) < _NARROW
    value = torch.where(narrow, narrow_value, wide)
    g_lo = torch.where(narrow, g_lo_narrow, g_lo_wide)
    g_hi = torch.where(narrow, g_hi_narrow, g_hi_wide)
    return value, torch.where(mirror, -g_hi, g_lo), torch.where(mirror, -g_lo, g_hi)


def _power_terms(scale, power):
    """For the integral of N(x; mu, s^2)^p over [lo, hi]: the standardizing factor k, the
    kernel, the additive constant, its derivative in s, and the exponent c of the kernel's
    derivative ratio d/dth = -exp(c d m) d/dtl (spec section 5).

    p > 0: ((1 - p)/2) log(2 pi s^2) - log(p)/2 + log(Phi(k b) - Phi(k a)), k = sqrt(p);
        phi(th) / phi(tl) = exp(-d m), c = -1.
    p < 0, g = -p: (g/2) log(2 pi s^2) + log s - log k + log(F(k b) - F(k a)), k = sqrt(g/2);
        exp(th^2) / exp(tl^2) = exp(2 d m), c = 2.
    Here a, b = (lo - mu)/s, (hi - mu)/s, d = th - tl and m = (tl + th)/2.
    """
    log_var = math.log(2.0 * math.pi) + 2.0 * torch.log(scale)
    if power > 0:
        k = math.sqrt(power)
        const = 0.5 * (1.0 - power) * log_var - 0.5 * math.log(power)
        return k, _log_phi_difference, const, (1.0 - power) / scale, -1.0
    g = -power
    k = math.sqrt(g / 2.0)
    const = 0.5 * g * log_var + torch.log(scale) - math.log(k)
    return k, _log_erfi_difference, const, (g + 1.0) / scale, 2.0


def _power_integral(lo, hi, loc, scale, power, dtype, with_grads=True):
    """Value of log int_lo^hi N(x; loc, scale^2)^power dx (unsaturated) and, if
    ``with_grads``, its partial derivatives in (lo, hi, loc, scale), for a result of ``dtype``.
    Computed in float64 whatever the result's dtype."""
    k, kernel, const, dconst, c = _power_terms(scale, power)
    # Standardized endpoints, clamped where the value is beyond dtype's limit anyway.
    z = 2.0 * math.sqrt(2.0 * log_limit(dtype))
    factor = k / scale
    tl_raw, th_raw = (lo - loc) * factor, (hi - loc) * factor
    tl, th = tl_raw.clamp(-z, z), th_raw.clamp(-z, z)
    # log d from the width itself, unless a clamped (or infinite) end makes th - tl the
    # consistent choice; when both ends are clamped to the same side, th - tl = 0 and the width
    # still says which way the value saturates.
    clamped = ((tl != tl_raw) | (th != th_raw)) & (th > tl)
    logd = torch.where(clamped, torch.log(th - tl),
                       torch.log(hi - lo) + math.log(k) - torch.log(scale))
    d = torch.exp(logd)
    value, g_lo, g_hi = kernel(tl, th, d, logd)
    if not with_grads:
        return const + value, None
    # g_lo + g_hi and tl g_lo + th g_hi cancel for narrow intervals (|d m| < 1): there they are
    # -g_lo expm1(c d m) and m (g_lo + g_hi) + (d/2) (g_hi - g_lo), free of cancellation.
    m = 0.5 * (tl + th)
    dm = d * m
    close = dm.abs() < 1.0
    g_sum = torch.where(close, -g_lo * torch.expm1(c * dm), g_lo + g_hi)
    g_moment = torch.where(close, m * g_sum + 0.5 * d * (g_hi - g_lo), tl * g_lo + th * g_hi)
    grads = (g_lo * factor, g_hi * factor, -g_sum * factor, dconst - g_moment / scale)
    return const + value, grads


# ---------------------------------------------------------------------------------------------
# float32 fast path
# ---------------------------------------------------------------------------------------------
#
# For float32 inputs on the CPU the kernels first run in float32 (with the standardized ends
# computed in float64), where the float32 formulas below are accurate to a few ulp: narrow
# intervals by the midpoint series, intervals in one tail by erfcx differences (Dawson
# differences for power < 0), intervals that straddle the mode by the two tails. Every element
# where one of those would lose more than a few bits to cancellation, or lies beyond
# |t| = _FAST_T_MAX, is recomputed by the float64 kernel above (the "fallback"), so the
# accuracy contract is the float64 kernel's wherever the float32 one could miss it. In training
# the fallback takes well under 1% of the elements.

_F32 = torch.float32
_FAST_T_MAX = 1e6  # beyond this |standardized end|: the float64 kernel (and its saturation)
_FAST_MIN_WIDTH = 1e-30  # standardized widths below this: the float64 kernel
_FAST_MIN_SCALE = 1e-37  # smaller (subnormal) scales: the float64 kernel
_FAST_NARROW = {1: 0.5, -1: 0.35}  # d max(1, |m|) below this: the midpoint series
_FAST_VALUE_CANCEL = 8.0  # largest cancellation factor allowed inside a log-difference
# Largest (sum of the terms' magnitudes) / |value| allowed, for the Phi (power > 0) and the
# Dawson (power < 0) branch (whose terms carry fewer rounding errors), and for the derivative
# in the scale.
_FAST_SUM_CANCEL = {1: 8.0, -1: 24.0}
_FAST_GRAD_CANCEL = {True: 100.0, False: 40.0}  # power 1 or < 0; other powers > 0
_LOG_2 = math.log(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# (1 + 2 a) erfcx(a) - 1 as a polynomial in q = (a - 2) / (a + 2), lowest power first (within
# 3e-10 on a >= 0; ``scripts/fit_erfcx32.py``).
_ERFCX32 = (0.27697838142702969, -0.092763822515064528, -0.16603038352631522,
            0.1640511268648859, -0.054220266615181589, -0.0080323448823096267,
            0.0087246076400094418, 0.0012632910617872185, -0.0014640709110833919,
            -0.00043438789724625288, 0.00022157155058398267, 0.00012454341789931188,
            -2.0255989621231206e-05, -1.8822756776287565e-05)
# The Dawson table's first 10 powers of u: the rest add below 4e-9 relative on every piece.
_DAWSON_DEGREE_32 = 9
_DAWSON_TABLES_32: dict[torch.device, torch.Tensor] = {}


def _erfcx32(a: torch.Tensor) -> torch.Tensor:
    """erfcx(a) = exp(a^2) erfc(a) for float32 a >= 0, within 3e-7 relative."""
    q = (a - 2.0) / (a + 2.0)
    return (1.0 + _polynomial(_ERFCX32, q)) / (1.0 + 2.0 * a)


def _exp_split(e64: torch.Tensor) -> torch.Tensor:
    """exp(e) in float32 from a float64 exponent, within 2 float32 ulp however large |e| (the
    exponent is split into a float32 head and a small tail, exp(h + t) = exp(h) (1 + t))."""
    head = e64.to(_F32)
    return torch.exp(head) * (1.0 + (e64 - head.to(_WORK)).to(_F32))


def _dawson_coefficients_32(device: torch.device) -> torch.Tensor:
    if device not in _DAWSON_TABLES_32:
        table = _dawson_coefficients(device)[: _DAWSON_DEGREE_32 + 1]
        _DAWSON_TABLES_32[device] = table.to(_F32).contiguous()
    return _DAWSON_TABLES_32[device]


def _log_dawson32(x: torch.Tensor) -> torch.Tensor:
    """log D(x) for float32 x >= 0 (-inf at 0), within about 3e-7 absolute."""
    start = _dawson_table.ASYMPTOTIC_FROM
    xt, g = _dawson_piecewise(x, _dawson_coefficients_32(x.device))
    xa = x.clamp(min=start)
    y = 0.5 / (xa * xa)
    tail = y * _polynomial(_ODD_DOUBLE_FACTORIALS[1:6], y)
    far = torch.log1p(tail) - torch.log(2.0 * xa)
    return torch.where(x >= start, far, torch.log(xt) + torch.log(g))


def _moment(direct, a, b, m, d, ga, gb, g_sum):
    """a ga + b gb (direct) or, free of the cancellation of that form for narrow and one-tail
    intervals, m (ga + gb) + (d/2) (gb - ga); and the sum of the two terms' magnitudes."""
    left = torch.where(direct, a * ga, m * g_sum)
    right = torch.where(direct, b * gb, 0.5 * d * (gb - ga))
    return left + right, left.abs() + right.abs()


def _fast_phi_kernel(a, b, m, a64, b64, d, logd, scale, inv_scale, log_inv_scale):
    """log(Phi(b) - Phi(a)) for a < b, a + b <= 0 (m = (a + b)/2), in float32; its partial
    derivatives in a and b divided by ``scale``, their sum, the moment a d/da + b d/db (also
    divided by scale) with its terms' magnitude, the magnitude of the value's terms and whether
    the value is free of cancellation. Exponentials that can underflow are computed with the
    1/scale folded in, so the derivatives keep their digits down to float32's smallest normal.
    ``a64``, ``b64``: the ends in float64."""
    big_a = _erfcx32(-a * _SQRT_HALF)
    big_b = _erfcx32(b.abs() * _SQRT_HALF)
    # One tail (b <= 0): P = exp(-b^2/2) (E_b - E_a exp(d m)) / 2, E = erfcx(-t / sqrt 2).
    e1_s = torch.exp(d * m + log_inv_scale)  # exp(d m) / scale
    diff = big_b - big_a * (e1_s * scale)
    v_one = -0.5 * b * b - _LOG_2 + torch.log(diff)
    g_one = _SQRT_2_OVER_PI / diff
    ok_one = big_b <= _FAST_VALUE_CANCEL * diff
    # Straddling (a < 0 < b): P = 1 - Phi(a) - Phi(-b), both tails from erfcx.
    ea_s = _exp_split(-0.5 * a64 * a64 + log_inv_scale.to(_WORK))  # exp(-a^2/2) / scale
    eb_s = _exp_split(-0.5 * b64 * b64 + log_inv_scale.to(_WORK))
    tails = 0.5 * (big_a * (ea_s * scale) + big_b * (eb_s * scale))
    p_str = 1.0 - tails
    v_str = torch.log1p(-tails)
    # Narrow: P = d phi(m) (1 + c), c the midpoint series to d^6.
    d2 = d * d
    e = d2 * m * m
    c = ((e - d2) / 24.0 + (e * e - 6.0 * e * d2 + 3.0 * d2 * d2) / 1920.0
         + (e * e * e - 15.0 * e * e * d2 + 45.0 * e * d2 * d2 - 15.0 * d2 * d2 * d2) / 322560.0)
    v_nar = logd - 0.5 * m * m - _HALF_LOG_2PI + torch.log1p(c)
    dc = d * (1.0 + c)
    narrow = d * torch.clamp(-m, min=1.0) < _FAST_NARROW[1]
    one = ~narrow & (b <= 0)
    value = torch.where(narrow, v_nar, torch.where(one, v_one, v_str))
    gb = torch.where(narrow, torch.exp(-0.5 * d * m - 0.125 * d2) / dc * inv_scale,
                     torch.where(one, g_one * inv_scale, eb_s * _INV_SQRT_2PI / p_str))
    # phi(a) / phi(b) = exp(d m): for narrow intervals d/da = -exp(d m) d/db (0.6 < exp(d m) <= 1)
    ga = torch.where(narrow, -gb * (e1_s * scale),
                     torch.where(one, -g_one * e1_s, -ea_s * _INV_SQRT_2PI / p_str))
    g_sum = -gb * torch.expm1(d * m)
    moment, terms = _moment(~narrow & ~one, a, b, m, d, ga, gb, g_sum)
    return value, value.abs(), ga, gb, g_sum, moment, terms, ~one | ok_one


def _fast_erfi_kernel(a, b, m, d, logd, scale, inv_scale, log_inv_scale):
    """log(F(b) - F(a)), F(t) = int_0^t exp(u^2) du, for a < b, a + b >= 0, in float32, with
    the same companions as ``_fast_phi_kernel``."""
    log_db = _log_dawson32(b)
    q = (-2.0 * d * m + _log_dawson32(a.abs()) - log_db).clamp(max=0.0)
    eq = torch.exp(q)
    straddle = a < 0
    denom = torch.where(straddle, 1.0 + eq, -torch.expm1(q))
    log_ratio = torch.where(straddle, torch.log1p(eq), log1mexp(q))
    wide = b * b + log_db + log_ratio
    g_wide = torch.exp(-log_db) / denom
    ok_wide = straddle | (1.0 <= _FAST_VALUE_CANCEL * denom)
    d2 = d * d
    e = d2 * m * m
    c = ((4.0 * e + 2.0 * d2) / 24.0 + (16.0 * e * e + 48.0 * e * d2 + 12.0 * d2 * d2) / 1920.0
         + (64.0 * e * e * e + 480.0 * e * e * d2 + 720.0 * e * d2 * d2
            + 120.0 * d2 * d2 * d2) / 322560.0)
    log_c = torch.log1p(c)
    v_nar = logd + m * m + log_c
    dc = d * (1.0 + c)
    narrow = d * torch.clamp(m, min=1.0) < _FAST_NARROW[-1]
    value = torch.where(narrow, v_nar, wide)
    # b^2 (m^2) and log D(b) (log d) can cancel: the sum of the terms' magnitudes
    magnitude = torch.where(narrow, logd.abs() + m * m + log_c,
                            b * b + log_db.abs() + log_ratio.abs())
    gb = torch.where(narrow, torch.exp(d * m + 0.25 * d2) / dc, g_wide) * inv_scale
    # exp(a^2) / exp(b^2) = exp(-2 d m), folded with 1/scale (no underflow before the scaling)
    ga = -torch.exp(-2.0 * d * m + log_inv_scale) * torch.where(narrow, gb * scale, g_wide)
    g_sum = -gb * torch.expm1(-2.0 * d * m)
    moment, terms = _moment(~narrow & straddle, a, b, m, d, ga, gb, g_sum)
    return value, magnitude, ga, gb, g_sum, moment, terms, narrow | ok_wide


def _fast_power_integral(lo, hi, loc, scale, power, needs):
    """The float32 fast path of ``_power_integral``: the value, the partial derivatives in
    (lo, hi, loc, scale) that ``needs`` asks for (None for the others), and the mask of the
    elements where they meet the accuracy contract (elsewhere: the float64 kernel)."""
    if power > 0:
        k, sign = math.sqrt(power), 1.0
    else:
        k, sign = math.sqrt(-power / 2.0), -1.0
    lo64, hi64, loc64, scale64 = (t.to(_WORK) for t in (lo, hi, loc, scale))
    factor64 = k / scale64
    tl64, th64 = (lo64 - loc64) * factor64, (hi64 - loc64) * factor64
    d = ((hi64 - lo64) * factor64).to(_F32)
    mid = (0.5 * (tl64 + th64)).to(_F32)  # from float64: no cancellation when tl ~ -th
    logd = torch.log(d)
    # Mirror: the Phi kernel wants a + b <= 0, the Dawson kernel a + b >= 0.
    mirror = sign * mid > 0
    a64, b64 = torch.where(mirror, -th64, tl64), torch.where(mirror, -tl64, th64)
    a, b, m = a64.to(_F32), b64.to(_F32), torch.where(mirror, -mid, mid)
    log_scale = torch.log(scale)
    inv_scale = 1.0 / scale
    if power > 0:
        value, magnitude, ga, gb, g_sum, moment, terms, ok = _fast_phi_kernel(
            a, b, m, a64, b64, d, logd, scale, inv_scale, -log_scale)
    else:
        value, magnitude, ga, gb, g_sum, moment, terms, ok = _fast_erfi_kernel(
            a, b, m, d, logd, scale, inv_scale, -log_scale)
    ok = (ok & (a.abs() <= _FAST_T_MAX) & (b.abs() <= _FAST_T_MAX) & (d >= _FAST_MIN_WIDTH)
          & (scale >= _FAST_MIN_SCALE))
    if power != 1.0:
        log_var = math.log(2.0 * math.pi) + 2.0 * log_scale
        if power > 0:
            const = 0.5 * (1.0 - power) * log_var - 0.5 * math.log(power)
        else:
            const = -0.5 * power * log_var + log_scale - math.log(k)
        total, dconst = const + value, 1.0 - power
        magnitude = magnitude + const.abs()
    else:
        total, dconst = value, 0.0
    ok = ok & (magnitude <= _FAST_SUM_CANCEL[int(sign)] * total.abs())
    limit = log_limit(_F32)
    grads = [None, None, None, None]
    partials = (torch.where(mirror, -gb, ga) * k, torch.where(mirror, -ga, gb) * k,
                torch.where(mirror, g_sum, -g_sum) * k, dconst * inv_scale - moment)
    for i, partial in enumerate(partials):
        if needs[i]:
            ok = ok & torch.isfinite(partial)
            grads[i] = partial.clamp(-limit, limit)
    if needs[3]:
        ok = ok & (terms + abs(dconst) * inv_scale
                   <= _FAST_GRAD_CANCEL[power == 1.0 or power < 0]
                   * (dconst * inv_scale - moment).abs())
    return total, grads, ok


_kernel = _power_integral
_fast_kernel = _fast_power_integral


def compile_kernels(enabled: bool = True) -> None:
    """Run the interval and power-integral kernels through ``torch.compile`` (or back to eager).

    Compiling fuses their elementwise steps into one pass, which matters because the eager
    kernels are a few dozen passes over (samples x batch x pixels) tensors; the first call per
    shape class pays the compilation (tens of seconds on CPU).
    """
    global _kernel, _fast_kernel
    if enabled:
        _kernel = torch.compile(_power_integral, dynamic=True)
        _fast_kernel = torch.compile(_fast_power_integral, dynamic=True)
    else:
        _kernel, _fast_kernel = _power_integral, _fast_power_integral


_fast_path = True


def use_fast_path(enabled: bool = True) -> None:
    """Use the float32 fast path for float32 inputs on the CPU (the default), or always the
    float64 kernels (for comparisons: ``benchmarks/bounds.py --no-fast-path``)."""
    global _fast_path
    _fast_path = enabled


def _uses_fast_path(inputs: list[torch.Tensor], dtype: torch.dtype) -> bool:
    """float32 inputs on the CPU. On other devices the fallback's gather would wait for the
    device (a host synchronization per call), so they keep the float64 kernel."""
    return _fast_path and dtype == _F32 and all(
        t.dtype == _F32 and t.device.type == "cpu" for t in inputs)


def _evaluate(lo, hi, loc, scale, power, dtype, needs):
    """Saturated value and the partial derivatives ``needs`` asks for (None for the others),
    in ``dtype``, of the broadcast shape of the inputs."""
    inputs = [lo, hi, loc, scale]
    if not _uses_fast_path(inputs, dtype):
        args = [t.to(_WORK) for t in torch.broadcast_tensors(*inputs)]
        value, grads = _kernel(*args, power, dtype, with_grads=any(needs))
        grads = [_saturate(g, dtype).to(dtype) if n else None
                 for g, n in zip(grads or [None] * 4, needs, strict=True)]
        return _saturate(value, dtype).to(dtype), grads
    value, grads, ok = _fast_kernel(lo, hi, loc, scale, power, tuple(needs))
    where = torch.nonzero(~ok, as_tuple=True)  # on the CPU: no device to wait for
    if where[0].numel():
        shape = value.shape
        args = [t.expand(shape)[where].to(_WORK) for t in inputs]
        slow, slow_grads = _power_integral(*args, power, dtype, with_grads=any(needs))
        value[where] = _saturate(slow, dtype).to(dtype)
        for g, s in zip(grads, slow_grads or [None] * 4, strict=True):
            if g is not None:
                g[where] = _saturate(s, dtype).to(dtype)
    return value, grads


class _PowerIntegral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lo, hi, loc, scale, power, dtype):
        ctx.needs = ctx.needs_input_grad[:4]
        value, grads = _evaluate(lo, hi, loc, scale, power, dtype, ctx.needs)
        ctx.save_for_backward(*(g for g in grads if g is not None))
        return value

    @staticmethod
    def backward(ctx, grad):
        saved = iter(ctx.saved_tensors)
        return tuple(grad * next(saved) if n else None for n in ctx.needs) + (None, None)


@torch.compiler.disable  # its own kernels are compiled (compile_kernels); the fallback's data-
# dependent gather would make a compiled caller (VAEModule(compile_step=True)) recompile
def log_normal_power_integral(lo, hi, loc, scale, power: float) -> torch.Tensor:
    """log int_lo^hi N(x; loc, scale^2)^power dx, elementwise, for any power != 0.

    The erf (Phi) branch serves power > 0, the Dawson branch power < 0 (the IRELBO with
    alpha > 1, paper eq. (7)); power = 1 is ``log_normal_interval``. Requires lo < hi
    (infinite ends allowed) and scale > 0. Saturates at +-``log_limit(dtype)``; gradients are
    computed in closed form (a custom autograd function), so they stay finite where the
    chain rule through (x - loc) / scale would overflow.
    """
    power = float(power)
    if power == 0.0 or not math.isfinite(power):
        raise ValueError(f"power must be a finite number other than 0, got {power!r}")
    inputs = _as_tensors(lo, hi, loc, scale)
    dtype = _result_dtype(*inputs)
    inputs = [t if t.dtype == dtype else t.to(dtype) for t in inputs]
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        # Autograd sums each gradient (of the broadcast shape) back to its input's shape.
        return _PowerIntegral.apply(*inputs, power, dtype)
    return _evaluate(*(t.detach() for t in inputs), power, dtype, (False,) * 4)[0]


def log_normal_interval(lo, hi, loc, scale) -> torch.Tensor:
    """log P(lo < X < hi) for X ~ N(loc, scale^2), elementwise (spec section 2).

    Accurate in both tails, for narrow and wide intervals and for any scale; infinite ends are
    allowed. Values are at most 0 and saturate at ``-log_limit(dtype)``.
    """
    return log_normal_power_integral(lo, hi, loc, scale, 1.0)
