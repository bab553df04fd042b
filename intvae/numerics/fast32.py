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

from intvae.numerics.special import (
    _HALF_LOG_2PI,
    _SQRT_2_OVER_PI,
    _SQRT_HALF,
    _WORK,
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
# log D(x) in two pieces (``scripts/fit_dawson32.py``): below _DAWSON32_SPLIT D(x) / x as a
# polynomial in 2 x^2 / SPLIT^2 - 1, from it on 2 x D(x) as a polynomial in 2 SPLIT^2 / x^2 - 1
# (lowest power first; within 2.3e-7 and 1.1e-7 relative in float32).
_DAWSON32_SPLIT = 2.0
_DAWSON32_NEAR = (0.31999403728351772, -0.29998509305227095, 0.20497987574953369,
    -0.10747975592432929, 0.045294721814999002, -0.015891201597392126, 0.0047657972866400576,
    -0.0012468134011602613, 0.00028902153182080098, -5.9927907653358801e-05,
    1.1309880318532891e-05, -2.1108742495637361e-06, 3.336832989453064e-07)
_DAWSON32_FAR = (1.0815851754554053, 0.11188963995602336, 0.037299024451381904,
    -0.012470033301838473, -0.0279846777927137, 0.012111181558156384, 0.016144226744987562,
    -0.023631694815493542, 0.0040256820396634167, 0.028538894370506163, -0.024952260401510613,
    -0.020512421363565177, 0.028682030452911209, 0.008105315013010499, -0.015474700414711348,
    -0.0013500894118086693, 0.003356294091295074)


def _erfcx32(a: torch.Tensor) -> torch.Tensor:
    """erfcx(a) = exp(a^2) erfc(a) for float32 a >= 0, within 3e-7 relative."""
    q = (a - 2.0) / (a + 2.0)
    return (1.0 + _polynomial(_ERFCX32, q)) / (1.0 + 2.0 * a)


def _exp_split(e64: torch.Tensor) -> torch.Tensor:
    """exp(e) in float32 from a float64 exponent, within 2 float32 ulp however large |e| (the
    exponent is split into a float32 head and a small tail, exp(h + t) = exp(h) (1 + t))."""
    head = e64.to(_F32)
    return torch.exp(head) * (1.0 + (e64 - head.to(_WORK)).to(_F32))


def _log_dawson32(x: torch.Tensor) -> torch.Tensor:
    """log D(x) for float32 x >= 0 (-inf at 0), within 3e-7 max(1, |log D|), about one float32
    ulp of the result (``tests/test_performance_paths.py`` checks it against scipy):
    log x + log P(x^2) below 2, log Q(1 / x^2) - log(2 x) from 2 on (no table lookup: gathers
    do not vectorize)."""
    square = _DAWSON32_SPLIT * _DAWSON32_SPLIT
    t = x * x
    near = torch.log(x) + torch.log(
        _polynomial(_DAWSON32_NEAR, t.clamp(max=square) * (2.0 / square) - 1.0))
    u = 1.0 / t.clamp(min=square)
    far = torch.log(_polynomial(_DAWSON32_FAR, u * (2.0 * square) - 1.0)) - torch.log(2.0 * x)
    return torch.where(x < _DAWSON32_SPLIT, near, far)


def _moment(direct, a, b, m, d, ga, gb, g_sum):
    """a ga + b gb where ``direct`` (True, False or a mask) or, free of the cancellation of that
    form for narrow and one-tail intervals, m (ga + gb) + (d/2) (gb - ga); and the sum of the
    two terms' magnitudes."""
    if direct is True:
        left, right = a * ga, b * gb
    elif direct is False:
        left, right = m * g_sum, 0.5 * d * (gb - ga)
    else:
        left = torch.where(direct, a * ga, m * g_sum)
        right = torch.where(direct, b * gb, 0.5 * d * (gb - ga))
    return left + right, left.abs() + right.abs()


class _Ends:
    """The standardized interval of one branch: ends a < b (float32, and float64 ``a64``,
    ``b64``), width d with its log, midpoint m, the scale, its inverse and -log(scale), and
    whether the interval is narrow (d max(1, |m|) below ``_FAST_NARROW[sign]``: the midpoint
    series; the other branches take the rest)."""

    def __init__(self, a, b, m, a64, b64, d, logd, scale, inv_scale, log_inv_scale, sign):
        self.a, self.b, self.m, self.a64, self.b64 = a, b, m, a64, b64
        self.d, self.logd, self.d2 = d, logd, d * d
        self.scale, self.inv_scale, self.log_inv_scale = scale, inv_scale, log_inv_scale
        self.narrow = d * torch.clamp(m.abs(), min=1.0) < _FAST_NARROW[sign]


def _phi_narrow(e):
    """Narrow intervals (a + b <= 0): P = d phi(m) (1 + c), c the midpoint series to d^6."""
    d, m, d2 = e.d, e.m, e.d2
    q = d2 * m * m
    c = ((q - d2) / 24.0 + (q * q - 6.0 * q * d2 + 3.0 * d2 * d2) / 1920.0
         + (q * q * q - 15.0 * q * q * d2 + 45.0 * q * d2 * d2 - 15.0 * d2 * d2 * d2) / 322560.0)
    value = e.logd - 0.5 * m * m - _HALF_LOG_2PI + torch.log1p(c)
    gb = torch.exp(-0.5 * d * m - 0.125 * d2) / (d * (1.0 + c)) * e.inv_scale
    # phi(a) / phi(b) = exp(d m): d/da = -exp(d m) d/db (0.6 < exp(d m) <= 1)
    ga = -gb * torch.exp(d * m)
    return value, value.abs(), ga, gb, False, e.narrow


def _phi_one_tail(e):
    """Intervals in one tail (b <= 0): P = exp(-b^2/2) (E_b - E_a exp(d m)) / 2,
    E = erfcx(-t / sqrt 2); exp(d m) / scale computed with the 1/scale folded in."""
    claimed = ~e.narrow & (e.b <= 0)
    big_a, big_b = _erfcx32(-e.a * _SQRT_HALF), _erfcx32(e.b.abs() * _SQRT_HALF)
    e1_s = torch.exp(e.d * e.m + e.log_inv_scale)
    diff = big_b - big_a * (e1_s * e.scale)
    value = -0.5 * e.b * e.b - _LOG_2 + torch.log(diff)
    g = _SQRT_2_OVER_PI / diff
    return value, value.abs(), -g * e1_s, g * e.inv_scale, False, (
        claimed & (big_b <= _FAST_VALUE_CANCEL * diff))


def _phi_straddle(e):
    """Intervals that straddle the mode (a < 0 < b): P = 1 - Phi(a) - Phi(-b), both tails from
    erfcx, their exp(-t^2/2) / scale from the float64 ends (no underflow before the scaling)."""
    claimed = ~e.narrow & (e.b > 0)
    big_a, big_b = _erfcx32(-e.a * _SQRT_HALF), _erfcx32(e.b.abs() * _SQRT_HALF)
    log_inv_scale = e.log_inv_scale.to(_WORK)
    ea_s = _exp_split(-0.5 * e.a64 * e.a64 + log_inv_scale)  # exp(-a^2/2) / scale
    eb_s = _exp_split(-0.5 * e.b64 * e.b64 + log_inv_scale)
    tails = 0.5 * (big_a * (ea_s * e.scale) + big_b * (eb_s * e.scale))
    p = 1.0 - tails
    value = torch.log1p(-tails)
    return (value, value.abs(), -ea_s * _INV_SQRT_2PI / p, eb_s * _INV_SQRT_2PI / p, True,
            claimed)


def _erfi_narrow(e):
    """Narrow intervals (a + b >= 0): F(b) - F(a) = d exp(m^2) (1 + c), c the midpoint series."""
    d, m, d2 = e.d, e.m, e.d2
    q = d2 * m * m
    c = ((4.0 * q + 2.0 * d2) / 24.0 + (16.0 * q * q + 48.0 * q * d2 + 12.0 * d2 * d2) / 1920.0
         + (64.0 * q * q * q + 480.0 * q * q * d2 + 720.0 * q * d2 * d2
            + 120.0 * d2 * d2 * d2) / 322560.0)
    log_c = torch.log1p(c)
    value = e.logd + m * m + log_c
    # m^2 and log d can cancel: the sum of the terms' magnitudes
    magnitude = e.logd.abs() + m * m + log_c
    gb = torch.exp(d * m + 0.25 * d2) / (d * (1.0 + c)) * e.inv_scale
    # exp(a^2) / exp(b^2) = exp(-2 d m)
    ga = -torch.exp(-2.0 * d * m) * gb
    return value, magnitude, ga, gb, False, e.narrow


def _erfi_wide(e):
    """Wide intervals (a + b >= 0) by Dawson differences: with q = log F(|a|) - log F(b),
    log F(b) + log1mexp(q) in one tail, log F(b) + log1p(exp(q)) when straddling 0."""
    a, b, d, m = e.a, e.b, e.d, e.m
    log_db = _log_dawson32(b)
    q = (-2.0 * d * m + _log_dawson32(a.abs()) - log_db).clamp(max=0.0)
    eq = torch.exp(q)
    straddle = a < 0
    denom = torch.where(straddle, 1.0 + eq, -torch.expm1(q))
    log_ratio = torch.where(straddle, torch.log1p(eq), log1mexp(q))
    value = b * b + log_db + log_ratio
    # b^2 and log D(b) can cancel: the sum of the terms' magnitudes
    magnitude = b * b + log_db.abs() + log_ratio.abs()
    g = torch.exp(-log_db) / denom
    # exp(a^2) / exp(b^2) = exp(-2 d m), folded with 1/scale (no underflow before the scaling)
    ga = -torch.exp(-2.0 * d * m + e.log_inv_scale) * g
    ok = ~e.narrow & (straddle | (1.0 <= _FAST_VALUE_CANCEL * denom))
    return value, magnitude, ga, g * e.inv_scale, straddle, ok


BRANCHES = {1: (_phi_narrow, _phi_straddle, _phi_one_tail), -1: (_erfi_narrow, _erfi_wide)}
"""The fast path's branches per sign of the power, in the order the kernels try them (the
most common in training first): each claims its own part of the elements."""


# One entry point per position in BRANCHES, each its own function, so that torch.compile keeps
# a separate cache (and recompilation budget) for each.
def fast_narrow(lo, hi, loc, scale, power, needs, open_ends=True):
    """``fast_branch`` for the narrow intervals (the first branch, for any power)."""
    return fast_branch(lo, hi, loc, scale, power, needs, 0, open_ends)


def fast_wide(lo, hi, loc, scale, power, needs, open_ends=True):
    """``fast_branch`` for the intervals that straddle the mode (power > 0), or all wide ones
    (power < 0)."""
    return fast_branch(lo, hi, loc, scale, power, needs, 1, open_ends)


def fast_one_tail(lo, hi, loc, scale, power, needs, open_ends=True):
    """``fast_branch`` for the wide intervals in one tail (power > 0 only)."""
    return fast_branch(lo, hi, loc, scale, power, needs, 2, open_ends)


TIERS = (fast_narrow, fast_wide, fast_one_tail)


def fast_branch(lo, hi, loc, scale, power, needs, branch: int, open_ends: bool = True):
    """One branch of the float32 fast path of ``intvae.numerics.interval.power_integral64``
    (``BRANCHES[sign of power][branch]``): the value, the partial derivatives in (lo, hi,
    loc, scale) that ``needs`` asks for (None for the others), and the mask of the elements
    that this branch claims and where its results meet the accuracy contract. ``open_ends``:
    whether an end may be infinite (False skips their handling)."""
    if power > 0:
        k, sign = math.sqrt(power), 1
    else:
        k, sign = math.sqrt(-power / 2.0), -1
    lo64, hi64, loc64, scale64 = (t.to(_WORK) for t in (lo, hi, loc, scale))
    factor64 = k / scale64
    tl64, th64 = (lo64 - loc64) * factor64, (hi64 - loc64) * factor64
    width64 = (hi64 - lo64) * factor64
    if power > 0 and open_ends:  # an open end (the end bins' -inf or +inf) as a finite one
        tl64 = torch.where(tl64 == -math.inf, th64.clamp(max=0.0) - _OPEN_END, tl64)
        th64 = torch.where(th64 == math.inf, tl64.clamp(min=0.0) + _OPEN_END, th64)
        width64 = torch.where(torch.isinf(width64), th64 - tl64, width64)
    d = width64.to(_F32)
    mid = (0.5 * (tl64 + th64)).to(_F32)  # from float64: no cancellation when tl ~ -th
    # Mirror: the Phi branches want a + b <= 0, the Dawson branches a + b >= 0.
    mirror = sign * mid > 0
    a64, b64 = torch.where(mirror, -th64, tl64), torch.where(mirror, -tl64, th64)
    a, b, m = a64.to(_F32), b64.to(_F32), torch.where(mirror, -mid, mid)
    log_scale = torch.log(scale)
    inv_scale = 1.0 / scale
    ends = _Ends(a, b, m, a64, b64, d, torch.log(d), scale, inv_scale, -log_scale, sign)
    value, magnitude, ga, gb, direct, ok = BRANCHES[sign][branch](ends)
    g_sum = -gb * torch.expm1(d * m if sign > 0 else -2.0 * d * m)  # ga + gb, no cancellation
    moment, terms = _moment(direct, a, b, m, d, ga, gb, g_sum)
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
    ok = ok & (magnitude <= _FAST_SUM_CANCEL[sign] * total.abs())
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


def fast_power_integral(lo, hi, loc, scale, power, needs):
    """The whole float32 fast path, every branch on every element (for tests and benchmarks;
    ``Kernels`` runs the branches one after another on the elements still left): the value,
    the partial derivatives ``needs`` asks for and the mask of the elements where they meet the
    accuracy contract (elsewhere: the float64 kernel)."""
    value, grads, ok = fast_branch(lo, hi, loc, scale, power, needs, 0)
    for branch in range(1, len(BRANCHES[1 if power > 0 else -1])):
        v, gs, kept = fast_branch(lo, hi, loc, scale, power, needs, branch)
        value = torch.where(kept, v, value)
        grads = [g if s is None else torch.where(kept, s, g)
                 for g, s in zip(grads, gs, strict=True)]
        ok = ok | kept
    return value, grads, ok
