"""The interval kernels: log int_lo^hi N(x; loc, scale^2)^power dx for any power != 0, and
its special case power = 1, log P(lo < X < hi) for X ~ N(loc, scale^2) (``docs/math.md``: the
interval likelihood and the IRELBO's power integral, after "Learning in Variational Autoencoders
with Kullback-Leibler and Renyi Integral Bounds", eq. (2) and (7)).

The float64 kernel (``power_integral64``) computes the value and its partial derivatives in
closed form; ``Kernels`` chooses how it runs: eager or through ``torch.compile`` (``compiled``),
and whether float32 inputs on the CPU first go through the float32 fast path
(``intvae.numerics.fast32``, ``fast32``), with the float64 kernel recomputing the elements where
float32 could miss the accuracy contract. The choice is passed explicitly (``kernels=`` of
``log_normal_power_integral`` and ``log_normal_interval``, or the likelihood head's
``kernels``); there is no process-wide switch.
"""

import contextlib
import functools
import math
from dataclasses import dataclass

import torch

from intvae.numerics.fast32 import BRANCHES, TIERS
from intvae.numerics.special import (
    _HALF_LOG_2PI,
    _SQRT_2_OVER_PI,
    _SQRT_HALF,
    _WORK,
    _as_tensors,
    _dawson_parts,
    _erfcx,
    _result_dtype,
    _saturate,
    log1mexp,
    log_limit,
)

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
    (``docs/math.md``). The derivatives use the inverse Mills ratio phi/Phi = sqrt(2/pi) / erfcx.
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
    straddles 0; narrow intervals use log d + m^2 + log1p(d^2 (4 m^2 + 2) / 24) (``docs/math.md``).
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
    derivative ratio d/dth = -exp(c d m) d/dtl (``docs/math.md``).

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


def power_integral64(lo, hi, loc, scale, power, dtype, with_grads=True):
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


@functools.cache
def _compiled(kernel):
    """``kernel`` through ``torch.compile`` (compiled once per process, shared by every
    ``Kernels(compiled=True)``)."""
    return torch.compile(kernel, dynamic=True)


@dataclass(frozen=True)
class Kernels:
    """How the interval kernels run.

    Args:
        compiled: through ``torch.compile``, which fuses the kernels' elementwise steps into one
            pass (the eager kernels are a few dozen passes over (samples x batch x pixels)
            tensors; 2 to 4 times faster on a CPU); the first call per shape class pays the
            compilation (tens of seconds on a CPU).
        fast32: float32 inputs on the CPU first go through the float32 fast path
            (``intvae.numerics.fast32``); False: always the float64 kernel (for comparisons,
            ``benchmarks/bounds.py --no-fast-path``). On other devices the fallback's gather
            would wait for the device (a host synchronization per call), so they always use the
            float64 kernel.
    """

    compiled: bool = False
    fast32: bool = True

    def _float64(self):
        return _compiled(power_integral64) if self.compiled else power_integral64

    def _float32(self, tier: int):
        return _compiled(TIERS[tier]) if self.compiled else TIERS[tier]

    def uses_fast_path(self, inputs: list[torch.Tensor], dtype: torch.dtype) -> bool:
        """Whether ``inputs`` go through the float32 fast path: float32 on the CPU."""
        return self.fast32 and dtype == torch.float32 and all(
            t.dtype == torch.float32 and t.device.type == "cpu" for t in inputs)

    def evaluate(self, lo, hi, loc, scale, power, dtype, needs):
        """Saturated value and the partial derivatives ``needs`` asks for (None for the
        others), in ``dtype``, of the broadcast shape of the inputs (any shape: 0-dim, empty,
        broadcast, non-contiguous)."""
        inputs = [lo, hi, loc, scale]
        if not self.uses_fast_path(inputs, dtype):
            args = [t.to(_WORK) for t in torch.broadcast_tensors(*inputs)]
            value, grads = self._float64()(*args, power, dtype, with_grads=any(needs))
            grads = [_saturate(g, dtype).to(dtype) if n else None
                     for g, n in zip(grads or [None] * 4, needs, strict=True)]
            return _saturate(value, dtype).to(dtype), grads
        return self._fast_path(inputs, power, dtype, tuple(needs))

    def _fast_path(self, inputs, power, dtype, needs):
        """The fast path's branches one after another, each on the elements the previous ones
        left, then the float64 kernel on what is left: each element's formulas are evaluated
        once, not every branch's on every element. The inputs are broadcast and flattened
        first (one fused loop per branch, one compiled variant whatever the shape); on the CPU
        there is no device to wait for between the steps."""
        shape = torch.broadcast_shapes(*(t.shape for t in inputs))
        args = [t.detach().expand(shape).reshape(-1) for t in inputs]
        # The open-end handling only where an end is infinite (the bins' end bins).
        open_ends = power > 0 and bool(inputs[0].isinf().any() or inputs[1].isinf().any())
        value, grads, rows = None, None, None
        for tier in range(len(BRANCHES[1 if power > 0 else -1])):
            v, gs, ok = self._float32(tier)(*args, power, needs, open_ends)
            if value is None:
                value, grads = v, gs
                outputs = [t for t in (value, *grads) if t is not None]
            else:  # every element given: those this tier does not keep are overwritten below
                _scatter(outputs, rows, [t for t in (v, *gs) if t is not None])
            left = (~ok).nonzero().squeeze(1)
            if len(left) == 0:
                break
            args = [t.index_select(0, left) for t in args]
            rows = left if rows is None else rows.index_select(0, left)
        else:
            exact, exact_grads = self._float64()(*(t.to(_WORK) for t in args), power, dtype,
                                                 with_grads=any(needs))
            results = [exact] + [g for g, n in zip(exact_grads, needs, strict=True) if n
                                 ] if exact_grads else [exact]
            _scatter(outputs, rows, [_saturate(t, dtype).to(dtype) for t in results])
        return value.view(shape), [g if g is None else g.view(shape) for g in grads]


def _scatter(outputs, rows, results):
    """outputs[i][rows] = results[i] for each flat output."""
    for out, result in zip(outputs, results, strict=True):
        out.index_copy_(0, rows, result)


EAGER = Kernels()
"""The default kernels: eager, with the float32 fast path."""


class _PowerIntegral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lo, hi, loc, scale, power, dtype, kernels):
        ctx.needs = ctx.needs_input_grad[:4]
        value, grads = kernels.evaluate(lo, hi, loc, scale, power, dtype, ctx.needs)
        ctx.save_for_backward(*(g for g in grads if g is not None))
        return value

    @staticmethod
    def backward(ctx, grad):
        saved = iter(ctx.saved_tensors)
        return tuple(grad * next(saved) if n else None for n in ctx.needs) + (None,) * 3


def _no_autocast(device_type: str):
    """A context where autocast is off for ``device_type`` (a null context where autocast does
    not exist for it). The backward of ``_PowerIntegral`` needs none: it multiplies the
    incoming gradient by the saved float32/float64 partial derivatives, an operation autocast
    does not cast."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


@torch.compiler.disable  # its own kernels are compiled (Kernels.compiled); the fallback's data-
# dependent gather would make a compiled caller (VAEModule(compile_step=True)) recompile
def log_normal_power_integral(lo, hi, loc, scale, power: float,
                              kernels: Kernels = EAGER) -> torch.Tensor:
    """log int_lo^hi N(x; loc, scale^2)^power dx, elementwise, for any power != 0.

    The erf (Phi) branch serves power > 0, the Dawson branch power < 0 (the IRELBO with
    alpha > 1, paper eq. (7)); power = 1 is ``log_normal_interval``. Requires lo < hi
    (infinite ends allowed) and scale > 0. Saturates at +-``log_limit(dtype)``; gradients are
    computed in closed form (a custom autograd function), so they stay finite where the
    chain rule through (x - loc) / scale would overflow. ``kernels``: how the kernels run
    (``Kernels``).

    Shapes and dtypes: the arguments broadcast (any shapes, 0-dim and empty included, any
    memory layout); the result has the broadcast shape. It is float64 if an input is float64,
    else float32: float16 and bfloat16 inputs (a decoder's output under autocast) are upcast
    and computed in float32, and the result stays float32, because a bound needs float32
    there: a log-probability of a narrow interval and its sums over pixels and samples
    need float32's 24 bits (bfloat16 keeps 8: an error of 0.4% per pixel) and range (float16
    ends at 65504, below a summed bound or a gradient 1/scale). Gradients go back to each
    input in its own dtype (autograd's cast): for a float16 input one beyond 65504 becomes
    inf, the overflow that the gradient scaler of ``precision=16-mixed`` detects and skips.
    Autocast is disabled inside (the kernels never compute in a lower precision than
    float32), so the result is the same with or without autocast.
    """
    power = float(power)
    if power == 0.0 or not math.isfinite(power):
        raise ValueError(f"power must be a finite number other than 0, got {power!r}")
    inputs = _as_tensors(lo, hi, loc, scale)
    dtype = _result_dtype(*inputs)
    with _no_autocast(inputs[0].device.type):
        inputs = [t if t.dtype == dtype else t.to(dtype) for t in inputs]
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            # Autograd sums each gradient (of the broadcast shape) back to its input's shape.
            return _PowerIntegral.apply(*inputs, power, dtype, kernels)
        return kernels.evaluate(*(t.detach() for t in inputs), power, dtype, (False,) * 4)[0]


def log_normal_interval(lo, hi, loc, scale, kernels: Kernels = EAGER) -> torch.Tensor:
    """log P(lo < X < hi) for X ~ N(loc, scale^2), elementwise (``docs/math.md``).

    Accurate in both tails, for narrow and wide intervals and for any scale; infinite ends are
    allowed. Values are at most 0 and saturate at ``-log_limit(dtype)``.
    """
    return log_normal_power_integral(lo, hi, loc, scale, 1.0, kernels)
