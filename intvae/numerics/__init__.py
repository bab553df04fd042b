"""Stable special functions and interval kernels behind the integral bounds.

* ``intvae.numerics.special``: ``log1mexp``, ``dawson``, ``log_ndtr``, ``log_limit``;
* ``intvae.numerics.interval``: ``log_normal_interval``, ``log_normal_power_integral`` and
  ``Kernels`` (compiled or eager, float32 fast path or not: chosen explicitly);
* ``intvae.numerics.fast32``: the float32 fast path of the interval kernels.

All functions are vectorized, broadcast their tensor arguments (any shape, 0-dim and empty
included, any memory layout), keep the input's floating dtype if it is float32 or float64 (float16
and bfloat16 inputs are computed in float32 and give float32, also under autocast, which they
turn off inside) and are differentiable with finite gradients. Formulas: ``docs/math.md``.
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
