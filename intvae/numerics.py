"""Stable special functions behind the integral bounds.

All functions here are vectorized, broadcast their tensor arguments, keep the input's floating
dtype (float32 or float64) and are differentiable with finite gradients. Internally they compute
in float64 and round once at the end, so float32 results carry only the input's rounding.

Saturation: a true value whose magnitude exceeds ``log_limit(dtype)`` (``finfo(dtype).max /
2**32``: about 7.9e28 in float32 and 4.2e298 in float64) is returned as ``-log_limit`` (or
``+log_limit`` for the Dawson branch of the power integral, whose values grow). The limit leaves
room for sums of up to 2**32 such terms (pixels, samples, a batch) before they could overflow.
Gradients are clamped to the same magnitude.

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
# Intervals narrower than this (in standardized units, times max(1, |midpoint|)) use the
# midpoint rule with its second-order correction: the neglected term is below 1e-14.
_NARROW = 3e-3
_WORK = torch.float64
_DAWSON_TABLES: dict[torch.device, torch.Tensor] = {}


def log_limit(dtype: torch.dtype) -> float:
    """Largest magnitude a returned log-value or gradient takes: ``finfo(dtype).max / 2**32``."""
    return torch.finfo(dtype).max / 2.0**32


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
        _DAWSON_TABLES[device] = torch.tensor(_dawson_table.COEFFICIENTS, dtype=_WORK,
                                              device=device)
    return _DAWSON_TABLES[device]


def _dawson_asymptotic_tail(y: torch.Tensor, terms: int = 12) -> torch.Tensor:
    """sum_{n>=1} (2n-1)!! y^n, y = 1/(2 x^2): 2 x D(x) - 1 for x >= 12 (error below 1e-16)."""
    coeffs = [1.0]
    for n in range(1, terms + 1):
        coeffs.append(coeffs[-1] * (2 * n - 1))
    acc = torch.full_like(y, coeffs[terms])
    for c in reversed(coeffs[1:terms]):
        acc = acc * y + c
    return acc * y


def _dawson_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D(x) and 1 - 2 x D(x) for float64 x >= 0.

    Below 12: D(x) = x g(x) with g a degree-17 polynomial on pieces of width 0.5 (fitted by
    ``scripts/fit_dawson.py``), accurate in relative terms down to x = 0. From 12 on: the
    asymptotic series D(x) = (1 + sum_{n>=1} (2n-1)!! / (2x^2)^n) / (2x).
    """
    table = _dawson_coefficients(x.device)
    width, start = _dawson_table.WIDTH, _dawson_table.ASYMPTOTIC_FROM
    xt = x.clamp(max=start)
    index = torch.floor(xt / width).long().clamp(max=table.shape[0] - 1)
    u = (xt - (index.to(_WORK) + 0.5) * width) / (0.5 * width)
    coeffs = table[index]
    g = coeffs[..., -1]
    for k in range(coeffs.shape[-1] - 2, -1, -1):
        g = g * u + coeffs[..., k]
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


def _log_ndtr_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log Phi(x) and the inverse Mills ratio phi(x) / Phi(x), float64.

    For x < 0: Phi(x) = erfcx(-x/sqrt 2) exp(-x^2/2) / 2, so log Phi(x) = -x^2/2 +
    log(erfcx(-x/sqrt 2) / 2) and phi/Phi = sqrt(2/pi) / erfcx(-x/sqrt 2) with no cancellation
    of large terms. For x >= 0: log Phi(x) = log1p(-erfc(x/sqrt 2) / 2).
    """
    neg = x.clamp(max=0.0)
    ex = torch.special.erfcx(-neg * _SQRT_HALF)
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


def _log_phi_difference(tl, th, d, logd):
    """log(Phi(th) - Phi(tl)) for tl < th and its partial derivatives (float64).

    ``d = th - tl`` and its log are passed separately because they are known more accurately
    than the difference of the rounded endpoints. Mirrored into the lower tail (a + b <= 0);
    then log Phi(th) + log1mexp(log Phi(tl) - log Phi(th)), where for th < 0 the difference of
    logs is d m + log erfcx(-tl/sqrt 2) - log erfcx(-th/sqrt 2) (m the midpoint) with no
    cancellation of the large squares; narrow intervals use the midpoint rule
    log d + log phi(m) + log1p(d^2 (m^2 - 1) / 24) (spec section 2).
    """
    mirror = tl + th > 0
    tl, th = torch.where(mirror, -th, tl), torch.where(mirror, -tl, th)
    m = 0.5 * (tl + th)
    # Wide intervals.
    lp_lo, mills_lo = _log_ndtr_parts(tl)
    lp_hi, mills_hi = _log_ndtr_parts(th)
    both_left = th < 0
    neg_lo, neg_hi = tl.clamp(max=0.0), th.clamp(max=0.0)
    delta_left = (d * m + torch.log(torch.special.erfcx(-neg_lo * _SQRT_HALF))
                  - torch.log(torch.special.erfcx(-neg_hi * _SQRT_HALF)))
    delta = torch.where(both_left, delta_left, lp_lo - lp_hi).clamp(max=0.0)
    one_minus = -torch.expm1(delta)
    wide = lp_hi + log1mexp(delta)
    g_hi_wide = mills_hi / one_minus
    g_lo_wide = -mills_lo * torch.exp(delta) / one_minus
    # Narrow intervals.
    dn = d.clamp(max=_NARROW)
    mn = m.clamp(-1.0 / _NARROW, 1.0 / _NARROW)
    corr = 1.0 + dn * dn * (mn * mn - 1.0) / 24.0
    narrow_value = logd - 0.5 * m * m - _HALF_LOG_2PI + torch.log(corr)
    g_lo_narrow = -torch.exp(0.5 * dn * mn - dn * dn / 8.0) / (dn * corr)
    g_hi_narrow = torch.exp(-0.5 * dn * mn - dn * dn / 8.0) / (dn * corr)
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
    dn = d.clamp(max=_NARROW)
    mn = m.clamp(-1.0 / _NARROW, 1.0 / _NARROW)
    corr = 1.0 + dn * dn * (4.0 * mn * mn + 2.0) / 24.0
    narrow_value = logd + m * m + torch.log(corr)
    g_hi_narrow = torch.exp(dn * mn + dn * dn / 4.0) / (dn * corr)
    g_lo_narrow = -torch.exp(-dn * mn + dn * dn / 4.0) / (dn * corr)
    narrow = d * torch.clamp(m.abs(), min=1.0) < _NARROW
    value = torch.where(narrow, narrow_value, wide)
    g_lo = torch.where(narrow, g_lo_narrow, g_lo_wide)
    g_hi = torch.where(narrow, g_hi_narrow, g_hi_wide)
    return value, torch.where(mirror, -g_hi, g_lo), torch.where(mirror, -g_lo, g_hi)


def _power_terms(scale, power):
    """For the integral of N(x; mu, s^2)^p over [lo, hi]: the standardizing factor k, the
    kernel, the additive constant and its derivative in s (spec section 5).

    p > 0: ((1 - p)/2) log(2 pi s^2) - log(p)/2 + log(Phi(k b) - Phi(k a)), k = sqrt(p).
    p < 0, g = -p: (g/2) log(2 pi s^2) + log s - log k + log(F(k b) - F(k a)), k = sqrt(g/2).
    Here a, b = (lo - mu)/s, (hi - mu)/s.
    """
    log_var = math.log(2.0 * math.pi) + 2.0 * torch.log(scale)
    if power > 0:
        k = math.sqrt(power)
        const = 0.5 * (1.0 - power) * log_var - 0.5 * math.log(power)
        return k, _log_phi_difference, const, (1.0 - power) / scale
    g = -power
    k = math.sqrt(g / 2.0)
    const = 0.5 * g * log_var + torch.log(scale) - math.log(k)
    return k, _log_erfi_difference, const, (g + 1.0) / scale


def _power_integral(lo, hi, loc, scale, power, dtype):
    """Value of log int_lo^hi N(x; loc, scale^2)^power dx and its four partial derivatives,
    computed in float64 for a result of ``dtype``."""
    k, kernel, const, dconst = _power_terms(scale, power)
    # Standardized endpoints, clamped where the value is beyond dtype's limit anyway.
    z = 2.0 * math.sqrt(2.0 * log_limit(dtype))
    factor = k / scale
    tl_raw, th_raw = (lo - loc) * factor, (hi - loc) * factor
    tl, th = tl_raw.clamp(-z, z), th_raw.clamp(-z, z)
    clamped = (tl != tl_raw) | (th != th_raw)
    logd = torch.where(clamped, torch.log(th - tl), torch.log(hi - lo) + math.log(k)
                       - torch.log(scale))
    d = torch.exp(logd)
    value, g_lo, g_hi = kernel(tl, th, d, logd)
    grads = (g_lo * factor, g_hi * factor, -(g_lo + g_hi) * factor,
             dconst - (tl * g_lo + th * g_hi) / scale)
    return const + value, grads


class _PowerIntegral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lo, hi, loc, scale, power, dtype):
        value, grads = _power_integral(lo, hi, loc, scale, power, dtype)
        ctx.save_for_backward(*(_saturate(g, dtype).to(dtype) for g in grads))
        return _saturate(value, dtype).to(dtype)

    @staticmethod
    def backward(ctx, grad):
        grads = ctx.saved_tensors
        return tuple(grad * g for g in grads) + (None, None)


def log_normal_power_integral(lo, hi, loc, scale, power: float) -> torch.Tensor:
    """log int_lo^hi N(x; loc, scale^2)^power dx, elementwise, for any power != 0.

    The erf (Phi) branch serves power > 0, the Dawson branch power < 0 (the IRELBO with
    alpha > 1, paper eq. (7)); power = 1 is ``log_normal_interval``. Requires lo < hi
    (infinite ends allowed) and scale > 0. Saturates at +-``log_limit(dtype)``.
    """
    power = float(power)
    if power == 0.0 or not math.isfinite(power):
        raise ValueError(f"power must be a finite number other than 0, got {power!r}")
    lo, hi, loc, scale = _as_tensors(lo, hi, loc, scale)
    dtype = _result_dtype(lo, hi, loc, scale)
    work = [t.to(_WORK) for t in torch.broadcast_tensors(lo, hi, loc, scale)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (lo, hi, loc, scale)):
        # Broadcast before the Function so its gradients have the inputs' own shapes after
        # autograd sums over the broadcast dimensions.
        return _PowerIntegral.apply(*work, power, dtype)
    value, _ = _power_integral(*(t.detach() for t in work), power, dtype)
    return _saturate(value, dtype).to(dtype)


def log_normal_interval(lo, hi, loc, scale) -> torch.Tensor:
    """log P(lo < X < hi) for X ~ N(loc, scale^2), elementwise (spec section 2).

    Accurate in both tails, for narrow and wide intervals and for any scale; infinite ends are
    allowed. Values are at most 0 and saturate at ``-log_limit(dtype)``.
    """
    return log_normal_power_integral(lo, hi, loc, scale, 1.0)
