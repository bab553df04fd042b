"""Special functions behind the integral bounds, vectorized and differentiable with exact
closed-form gradients: ``log1mexp``, Dawson's integral ``dawson``, the log normal CDF
``log_ndtr``, and the helpers the interval kernels share (saturation at ``log_limit``, the
scaled complementary error function, the Dawson table). Formulas: ``docs/math.md``.

They compute in float64 internally and round once at the end, so float32 results carry only
the input's rounding; float16 and bfloat16 inputs give float32 results. Saturation: a magnitude
beyond ``log_limit(dtype)`` (``finfo(dtype).max / 2**64``: about 1.8e19 in float32) is returned
as that limit, so that sums over pixels, samples and a batch and the backward pass through the
networks stay finite.
"""

import functools
import math

import torch

from intvae.numerics import _dawson_table

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
    """The floating dtype of the result: float64 if any input is float64 (or, for inputs that
    are all integers or Python numbers, if the default dtype is), else float32. float16 and
    bfloat16 inputs give float32: the kernels compute in float32 at least, and a log-density
    and its sums need float32's precision and range (``log_normal_power_integral``)."""
    dtypes = [t.dtype for t in tensors if t.dtype.is_floating_point]
    floor = torch.promote_types(torch.get_default_dtype(), torch.float32)
    return functools.reduce(torch.promote_types, dtypes, floor)


def _as_tensors(*values) -> list[torch.Tensor]:
    tensors = [torch.as_tensor(v) for v in values]
    device = next((t.device for t in tensors if t.dim() > 0), tensors[0].device)
    return [t.to(device) for t in tensors]


def _upcast_half(x: torch.Tensor) -> torch.Tensor:
    """float16 and bfloat16 to float32 (what ``dawson`` and ``log_ndtr`` return for them, as
    the interval kernels: float16's range ends at 65504, below log Phi's values); other dtypes
    as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


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
    # On flat views: a 0-dim index tensor would index as a Python scalar (a host read, which
    # torch.compile cannot compile: a graph break, with a backend error in its log).
    index, u = index.reshape(-1), u.reshape(-1)
    g = table[-1][index]
    for k in range(table.shape[0] - 2, -1, -1):
        g = torch.addcmul(table[k][index], g, u)
    return xt, g.reshape(xt.shape)


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
    """Dawson's integral D(x) = exp(-x^2) int_0^x exp(u^2) du (``docs/math.md``).

    Odd, D(x) ~ x near 0 and ~ 1/(2x) for large x; derivative 1 - 2 x D(x). Relative error
    below 1e-13 in float64 (checked against scipy.special.dawsn in the tests).
    """
    x = torch.as_tensor(x)
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    return _Dawson.apply(_upcast_half(x))


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
    return _LogNdtr.apply(_upcast_half(x))
