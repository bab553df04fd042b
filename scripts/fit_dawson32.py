"""Fit the two polynomials behind ``intvae.numerics.fast32._log_dawson32`` and print them.

The float32 fast path of the IRELBO's Dawson branch needs log D(x) for x >= 0 within about
3e-7 absolute. Two pieces, each a polynomial in a variable mapped onto [-1, 1], with no table
lookup (gathers do not vectorize):

* x < 2: D(x) / x = P(t), t = x^2 in [0, 4], degree 12 (D(x) = x - 2 x^3 / 3 + ...);
* x >= 2: 2 x D(x) = Q(u), u = 1 / x^2 in (0, 1/4], degree 16 (the asymptotic series
  1 + u/2 + 3 u^2 / 4 + ..., whose value the fit follows without its divergence).

Chebyshev least-squares fits at 4000 Chebyshev nodes (reference: ``scipy.special.dawsn``),
converted to monomials in the mapped variable y, lowest power first; evaluated in float32 by
Horner's rule they are within 2.3e-7 (P) and 1.1e-7 (Q) relative. Prints ``_DAWSON32_NEAR``
and ``_DAWSON32_FAR``.
"""

import numpy as np
import scipy.special
from numpy.polynomial import chebyshev

SPLIT = 2.0
NEAR_DEGREE, FAR_DEGREE = 12, 16
NODES = 4000


def near(t: np.ndarray) -> np.ndarray:
    """D(x) / x at t = x^2 (1 at 0)."""
    x = np.sqrt(np.maximum(t, 1e-300))
    return np.where(t > 0, scipy.special.dawsn(x) / x, 1.0)


def far(u: np.ndarray) -> np.ndarray:
    """2 x D(x) at u = 1 / x^2 (1 at 0)."""
    x = 1.0 / np.sqrt(np.maximum(u, 1e-300))
    return np.where(u > 0, 2.0 * x * scipy.special.dawsn(x), 1.0)


def fit(function, upper: float, degree: int) -> np.ndarray:
    """Monomial coefficients in y = 2 v / upper - 1 of ``function`` on [0, upper]; prints the
    largest relative error of the float32 evaluation on a fine grid."""
    y = np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES)
    coefficients = chebyshev.cheb2poly(chebyshev.chebfit(y, function(upper * (y + 1) / 2),
                                                        degree))
    grid = np.linspace(-1.0, 1.0, 400_001).astype(np.float32)
    value = np.full_like(grid, np.float32(coefficients[-1]))
    for c in coefficients[-2::-1]:
        value = value * grid + np.float32(c)
    want = function(upper * (grid.astype(np.float64) + 1) / 2)
    print(f"# {function.__name__}: max relative error in float32 "
          f"{np.abs(value / want - 1).max():.1e}")
    return coefficients


def main() -> None:
    for name, function, upper, degree in (("_DAWSON32_NEAR", near, SPLIT**2, NEAR_DEGREE),
                                          ("_DAWSON32_FAR", far, SPLIT**-2, FAR_DEGREE)):
        coefficients = fit(function, upper, degree)
        print(f"{name} = (" + ", ".join(f"{c:.17g}" for c in coefficients) + ")")


if __name__ == "__main__":
    main()
