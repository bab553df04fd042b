"""The float32 fast path of the interval kernels, for float32 inputs on the CPU.

The kernels first run in float32 (with the standardized ends computed in float64), where the
float32 formulas below are accurate to a few ulp: narrow intervals by the midpoint series,
intervals in one tail by erfcx differences (Dawson differences for power < 0), intervals that
straddle the mode by the two tails. Every element where one of those would lose more than a few
bits to cancellation, or lies beyond |t| = _FAST_T_MAX, is marked for the float64 kernel
(``intvae.numerics.interval``), so the accuracy contract is the float64 kernel's wherever the
float32 one could miss it. In training that fallback takes well under 1% of the elements.
"""

import math

import torch

from intvae.numerics import _dawson_table
from intvae.numerics.special import (
    _HALF_LOG_2PI,
    _ODD_DOUBLE_FACTORIALS,
    _SQRT_2_OVER_PI,
    _SQRT_HALF,
    _WORK,
    _dawson_coefficients,
    _dawson_piecewise,
    _polynomial,
    log1mexp,
    log_limit,
)

_F32 = torch.float32
_FAST_T_MAX = 1e6  # beyond this |standardized end|: the float64 kernel (and its saturation)
_OPEN_END = 40.0  # an open lower end stands at min(b, 0) - 40 (an open upper end mirrored):
# Phi(min(b, 0) - 40) / Phi(b) < Phi(-40) / Phi(0) < 1e-348, below float64's resolution
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


def fast_power_integral(lo, hi, loc, scale, power, needs):
    """The float32 fast path of ``intvae.numerics.interval.power_integral64``: the value, the
    partial derivatives in (lo, hi, loc, scale) that ``needs`` asks for (None for the others),
    and the mask of the elements where they meet the accuracy contract (elsewhere: the float64
    kernel)."""
    if power > 0:
        k, sign = math.sqrt(power), 1.0
    else:
        k, sign = math.sqrt(-power / 2.0), -1.0
    lo64, hi64, loc64, scale64 = (t.to(_WORK) for t in (lo, hi, loc, scale))
    factor64 = k / scale64
    tl64, th64 = (lo64 - loc64) * factor64, (hi64 - loc64) * factor64
    width64 = (hi64 - lo64) * factor64
    if power > 0:  # an open end (the end bins' -inf or +inf) as a finite one (_OPEN_END)
        tl64 = torch.where(tl64 == -math.inf, th64.clamp(max=0.0) - _OPEN_END, tl64)
        th64 = torch.where(th64 == math.inf, tl64.clamp(min=0.0) + _OPEN_END, th64)
        width64 = torch.where(torch.isinf(width64), th64 - tl64, width64)
    d = width64.to(_F32)
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

