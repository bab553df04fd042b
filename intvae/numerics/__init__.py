"""Stable special functions and interval kernels behind the integral bounds.

* ``intvae.numerics.special``: ``log1mexp``, ``dawson``, ``log_ndtr``, ``log_limit``;
* ``intvae.numerics.interval``: ``log_normal_interval``, ``log_normal_power_integral`` and
  ``Kernels`` (compiled or eager, float32 fast path or not: chosen explicitly);
* ``intvae.numerics.fast32``: the float32 fast path of the interval kernels.

All functions are vectorized, broadcast their tensor arguments, keep the input's floating dtype
(float32 or float64) and are differentiable with finite gradients. Formulas: ``docs/math.md``.
"""

from intvae.numerics.interval import (
    EAGER,
    Kernels,
    log_normal_interval,
    log_normal_power_integral,
)
from intvae.numerics.special import dawson, log1mexp, log_limit, log_ndtr

__all__ = ["EAGER", "Kernels", "dawson", "log1mexp", "log_limit", "log_ndtr",
           "log_normal_interval", "log_normal_power_integral"]
