"""High-precision mpmath references for the tests of ``intvae.numerics``.

Every function takes python floats (converted to mpmath exactly) and returns mpmath numbers
computed at ``BASE_DPS`` significant digits or more. The working precision is raised locally
by the number of digits that the cancellations of the particular input can cost, so the
results keep about ``BASE_DPS`` correct digits everywhere (``test_numerics.py`` checks this
by recomputing with more digits, against scipy where scipy is accurate, against numerical
quadrature and against numerical differentiation).

Notation (``docs/math.md``: interval likelihood, IRELBO, Dawson function): for X ~ N(loc, scale^2),
a = (lo - loc)/scale, b = (hi - loc)/scale, and for a power p != 0

    I(lo, hi, loc, scale, p) = integral_lo^hi N(x; loc, scale^2)^p dx
                             = scale^(1 - p) * J(a, b, p),
    J(a, b, p)               = integral_a^b phi(u)^p du,

with phi the standard normal density. p = 1 gives the interval probability.
"""

from __future__ import annotations

import math

import mpmath as mp

BASE_DPS = 50
_SPARE_DPS = 20


def exact(v: float | mp.mpf) -> mp.mpf:
    """The binary value of the python float ``v`` as an mpmath number, without rounding
    (mpmath numbers pass through unchanged)."""
    if isinstance(v, mp.mpf):
        return v
    with mp.workdps(BASE_DPS):
        out = mp.mpf(float(v))
    if float(out) != float(v):  # pragma: no cover - mpf(float) is exact above 53 bits
        raise AssertionError(f"inexact conversion of {v!r}")
    return out


def _log_phi(u: mp.mpf) -> mp.mpf:
    """log of the standard normal density."""
    return -u * u / 2 - mp.log(2 * mp.pi) / 2


def _lower_tail(x: mp.mpf) -> mp.mpf:
    """Phi(x) for x <= 0, accurate to full relative precision however far in the tail."""
    return mp.erfc(-x / mp.sqrt(2)) / 2


def _ncdf(x: mp.mpf) -> mp.mpf:
    return _lower_tail(x) if x <= 0 else 1 - _lower_tail(-x)


# ----------------------------------------------------------------------------- log Phi


def log_ndtr(x: float, dps: int = BASE_DPS) -> mp.mpf:
    """log Phi(x)."""
    with mp.workdps(dps + _SPARE_DPS):
        xm = exact(x)
        if xm <= 0:
            out = mp.log(_lower_tail(xm))
        else:
            out = mp.log1p(-_lower_tail(-xm))
    return out


def log_ndtr_grad(x: float, dps: int = BASE_DPS) -> mp.mpf:
    """d/dx log Phi(x) = phi(x) / Phi(x)."""
    with mp.workdps(dps + _SPARE_DPS):
        xm = exact(x)
        out = mp.exp(_log_phi(xm) - log_ndtr(x, dps + _SPARE_DPS))
    return out


# ----------------------------------------------------------------------------- Dawson


def _erfi_integral(t: mp.mpf) -> mp.mpf:
    """F(t) = integral_0^t exp(u^2) du = sqrt(pi)/2 erfi(t)."""
    return mp.sqrt(mp.pi) / 2 * mp.erfi(t)


def dawson(x: float, dps: int = BASE_DPS) -> mp.mpf:
    """Dawson's function D(x) = exp(-x^2) F(x)."""
    with mp.workdps(dps + _SPARE_DPS + 20):
        xm = exact(x)
        out = mp.exp(-xm * xm) * _erfi_integral(xm)
    return out


def dawson_grad(x: float, dps: int = BASE_DPS) -> mp.mpf:
    """D'(x) = 1 - 2 x D(x); the extra digits cover the cancellation (D' ~ -1/(2x^2))."""
    extra = 2 * max(0, int(math.log10(abs(x)))) if x != 0 else 0
    with mp.workdps(dps + _SPARE_DPS + extra):
        xm = exact(x)
        out = 1 - 2 * xm * dawson(x, dps + _SPARE_DPS + extra)
    return out


# ------------------------------------------------------------------ interval differences


def log_ndtr_diff(a: mp.mpf, b: mp.mpf) -> mp.mpf:
    """log(Phi(b) - Phi(a)) for a < b (mpmath inputs, current working precision).

    Straddling zero: log1p(-(Phi(a) + Phi(-b))), which keeps values extremely close to 0.
    Same side: mirror into the lower tail, where both terms have full relative accuracy.
    """
    if not a < b:
        return mp.ninf
    if a < 0 < b:
        return mp.log1p(-(_lower_tail(a) + _lower_tail(-b)))
    if a >= 0:
        a, b = -b, -a
    return mp.log(_lower_tail(b) - _lower_tail(a))


def log_erfi_integral_diff(ta: mp.mpf, tb: mp.mpf) -> mp.mpf:
    """log(F(tb) - F(ta)) for ta < tb, F(t) = integral_0^t exp(u^2) du (odd, increasing)."""
    if not ta < tb:
        return mp.ninf
    if ta < 0 < tb:
        return mp.log(_erfi_integral(tb) + _erfi_integral(-ta))
    if tb <= 0:
        ta, tb = -tb, -ta
    return mp.log(_erfi_integral(tb) - _erfi_integral(ta))


def log_std_power_integral(a: mp.mpf, b: mp.mpf, p: mp.mpf) -> mp.mpf:
    """log J(a, b, p) = log integral_a^b phi(u)^p du, closed forms of
    ``docs/math.md#per-pixel-integrals``."""
    if p > 0:
        rp = mp.sqrt(p)
        return (1 - p) / 2 * mp.log(2 * mp.pi) - mp.log(p) / 2 + log_ndtr_diff(rp * a, rp * b)
    g = -p
    c = mp.sqrt(g / 2)
    return g / 2 * mp.log(2 * mp.pi) - mp.log(c) + log_erfi_integral_diff(c * a, c * b)


def _working_dps(lo: float, hi: float, loc: float, scale: float, dps: int) -> int:
    """Digits to carry so that log I and its gradient keep ``dps`` digits.

    Forming a, b and their difference costs log10(max(|a|, |b|) / (b - a)) digits, the
    difference Phi(b) - Phi(a) (or F(tb) - F(ta)) about log10(max(1, |a|, |b|) / (b - a)),
    and exp(p log phi(a)) about log10(a^2).
    """
    with mp.workdps(30):
        lo_m, hi_m, loc_m, s_m = exact(lo), exact(hi), exact(loc), exact(scale)
        width = (hi_m - lo_m) / s_m
        if width <= 0:
            return dps + _SPARE_DPS
        big = max(mp.mpf(1), abs(lo_m - loc_m) / s_m, abs(hi_m - loc_m) / s_m)
        lost = max(0, int(mp.ceil(mp.log10(big / width))))
        # exp(-a^2/2) with a^2 ~ 10^k: the exponent needs k more digits for full relative
        # precision of densities far below float range (the gradient's phi(a)^p / J)
        exponent = int(mp.ceil(2 * mp.log10(big)))
    return dps + _SPARE_DPS + 2 * lost + exponent


def log_power_integral(
    lo: float, hi: float, loc: float, scale: float, power: float, dps: int = BASE_DPS
) -> tuple[mp.mpf, tuple[mp.mpf, mp.mpf, mp.mpf, mp.mpf] | None]:
    """log I(lo, hi, loc, scale, power) and its gradient (d/dlo, d/dhi, d/dloc, d/dscale).

    The value is -inf (and the gradient None) when hi <= lo. Gradient, with
    r_x = phi(x)^p / J(a, b, p):
        d/dhi = r_b / s,  d/dlo = -r_a / s,  d/dloc = (r_a - r_b) / s,
        d/dscale = (1 - p)/s + (a r_a - b r_b) / s.
    """
    if not hi > lo:
        return mp.ninf, None
    with mp.workdps(_working_dps(lo, hi, loc, scale, dps)):
        lo_m, hi_m, loc_m, s_m, p = exact(lo), exact(hi), exact(loc), exact(scale), exact(power)
        a = (lo_m - loc_m) / s_m
        b = (hi_m - loc_m) / s_m
        log_j = log_std_power_integral(a, b, p)
        value = (1 - p) * mp.log(s_m) + log_j
        r_a = mp.exp(p * _log_phi(a) - log_j)
        r_b = mp.exp(p * _log_phi(b) - log_j)
        grads = (
            -r_a / s_m,
            r_b / s_m,
            (r_a - r_b) / s_m,
            (1 - p) / s_m + (a * r_a - b * r_b) / s_m,
        )
    return value, grads


def log_normal_interval(
    lo: float, hi: float, loc: float, scale: float, dps: int = BASE_DPS
) -> tuple[mp.mpf, tuple[mp.mpf, mp.mpf, mp.mpf, mp.mpf] | None]:
    """log P(lo < X < hi), X ~ N(loc, scale^2), and its gradient."""
    return log_power_integral(lo, hi, loc, scale, 1.0, dps)


def log_power_integral_quad(
    lo: float, hi: float, loc: float, scale: float, power: float, dps: int = 30
) -> mp.mpf:
    """The same log integral by direct numerical quadrature (independent check).

    The integrand is divided by its largest value on [lo, hi] first: mp.quad's convergence
    test is absolute, so an unscaled integrand of size 1e-198 would "converge" at once.
    """
    with mp.workdps(dps):
        lo_m, hi_m, loc_m, s_m, p = exact(lo), exact(hi), exact(loc), exact(scale), exact(power)

        def log_integrand(x: mp.mpf) -> mp.mpf:
            return p * (_log_phi((x - loc_m) / s_m) - mp.log(s_m))

        pts = [lo_m, hi_m]
        if lo_m < loc_m < hi_m:
            pts = [lo_m, loc_m, hi_m]
        top = max(log_integrand(x) for x in pts)
        return top + mp.log(mp.quad(lambda x: mp.exp(log_integrand(x) - top), pts))


def to_float(v: mp.mpf) -> float:
    """mpmath number -> python float (+-inf beyond float64's range)."""
    return float(v)
