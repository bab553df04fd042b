"""Stable special functions behind the integral bounds.

All functions here are vectorized, broadcast their tensor arguments, keep the input's floating
dtype (float32 or float64) and are differentiable with finite gradients. Internally they compute
in float64 and round once at the end, so float32 results carry only the input's rounding.

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


def _dawson_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D(x) and 1 - 2 x D(x) for float64 x >= 0.

    Below 12: D(x) = x g(x) with g a degree-17 polynomial on pieces of width 0.5 (fitted by
    ``scripts/fit_dawson.py``), accurate in relative terms down to x = 0. From 12 on: the
    asymptotic series D(x) = (1 + sum_{n>=1} (2n-1)!! / (2x^2)^n) / (2x).
    """
    table = _dawson_coefficients(x.device)
    width, start = _dawson_table.WIDTH, _dawson_table.ASYMPTOTIC_FROM
    xt = x.clamp(max=start)
    index = torch.floor(xt / width).long().clamp(max=table.shape[1] - 1)
    u = (xt - (index.to(_WORK) + 0.5) * width) / (0.5 * width)
    g = table[-1][index]
    for k in range(table.shape[0] - 2, -1, -1):
        g = torch.addcmul(table[k][index], g, u)
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


_kernel = _power_integral


def compile_kernels(enabled: bool = True) -> None:
    """Run the interval and power-integral kernels through ``torch.compile`` (or back to eager).

    Compiling fuses their elementwise steps into one pass, which matters because the eager
    kernels are a few dozen passes over (samples x batch x pixels) float64 tensors; the first
    call per shape class pays the compilation (tens of seconds on CPU).
    """
    global _kernel
    _kernel = torch.compile(_power_integral, dynamic=True) if enabled else _power_integral


class _PowerIntegral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lo, hi, loc, scale, power, dtype):
        value, grads = _kernel(lo, hi, loc, scale, power, dtype)
        ctx.save_for_backward(*(_saturate(g, dtype).to(dtype) for g in grads))
        return _saturate(value, dtype).to(dtype)

    @staticmethod
    def backward(ctx, grad):
        return tuple(grad * g for g in ctx.saved_tensors) + (None, None)


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
    # Broadcast before the Function so that autograd sums its gradients back to the inputs'
    # own shapes.
    args = [t.to(_WORK) for t in torch.broadcast_tensors(*inputs)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _PowerIntegral.apply(*args, power, dtype)
    value, _ = _kernel(*(t.detach() for t in args), power, dtype, with_grads=False)
    return _saturate(value, dtype).to(dtype)


def log_normal_interval(lo, hi, loc, scale) -> torch.Tensor:
    """log P(lo < X < hi) for X ~ N(loc, scale^2), elementwise (spec section 2).

    Accurate in both tails, for narrow and wide intervals and for any scale; infinite ends are
    allowed. Values are at most 0 and saturate at ``-log_limit(dtype)``.
    """
    return log_normal_power_integral(lo, hi, loc, scale, 1.0)
