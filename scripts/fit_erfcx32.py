"""Fit the polynomial behind ``intvae.numerics._erfcx32`` (the float32 fast path) and print it.

With a >= 0 and q = (a - 2) / (a + 2) in [-1, 1), (1 + 2 a) erfcx(a) - 1 is a smooth function
of q (0 at a = 0, 2/sqrt(pi) - 1 as a -> infinity); a degree-13 Chebyshev least-squares fit at
4000 Chebyshev nodes (reference: ``scipy.special.erfcx``) approximates it within 2e-9, so that
erfcx(a) = (1 + p(q)) / (1 + 2 a) evaluated in float32 is within 3e-7 relative (about 4 ulp).
Prints the monomial coefficients, lowest power first, for ``_ERFCX32`` in ``intvae/numerics.py``.
"""

import numpy as np
import scipy.special
from numpy.polynomial import chebyshev

DEGREE = 13
NODES = 4000


def target(q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        a = 2.0 * (1.0 + q) / (1.0 - q)
        value = (1.0 + 2.0 * a) * scipy.special.erfcx(a) - 1.0
    return np.where(q >= 1.0, 2.0 / np.sqrt(np.pi) - 1.0, value)


def main() -> None:
    q = np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES)
    cheb = chebyshev.chebfit(q, target(q), DEGREE)
    check = np.linspace(-1.0, 1.0, 200_001)
    error = np.abs(chebyshev.chebval(check, cheb) - target(check)).max()
    print(f"# max |error| of the fit on [-1, 1]: {error:.2e}")
    coefficients = chebyshev.cheb2poly(cheb)
    print("_ERFCX32 = (" + ", ".join(f"{c:.17g}" for c in coefficients) + ")")


if __name__ == "__main__":
    main()
