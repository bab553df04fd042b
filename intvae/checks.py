"""Validation of user-facing parameters, with messages that name the value and what is allowed."""

import math


def require(name: str, value, ok: bool, allowed: str) -> None:
    """Raise ``ValueError`` naming ``name``, its ``value`` and what is ``allowed`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {name} must be {allowed}")


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (bools and fractional numbers are refused)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    require(name, value, ok, "an integer >= 1")
    return value


def finite_float(name: str, value, allowed: str = "a finite number") -> float:
    """``value`` as a finite float."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    require(name, value, ok, allowed)
    return float(value)
