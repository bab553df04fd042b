"""Validation of user-facing parameters: one message format, ``key=value is invalid: ...``.

Every check of a scalar parameter in intvae (the library's constructors, the data module, the
app's root keys and callbacks) goes through ``require`` or one of the typed helpers below, so
that each refused value gives the same one-line ``ParameterError``:

    delta=0 is invalid: delta must be a finite number > 0
"""

import math


class ParameterError(ValueError):
    """A parameter value intvae refuses; the message names the key, the value and what is
    allowed. The apps print it as one line (no traceback)."""


def require(name: str, value, ok: bool, allowed: str) -> None:
    """Raise ``ParameterError`` naming ``name``, its ``value`` and what is ``allowed`` unless
    ``ok``."""
    if not ok:
        raise ParameterError(f"{name}={value!r} is invalid: {name} must be {allowed}")


def is_int(value) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def integer(name: str, value, minimum: int = 1, optional: bool = False,
            word: str | None = None):
    """``value`` as an int >= ``minimum`` (bools and fractional numbers are refused); also
    None if ``optional``, or the string ``word`` (e.g. ``auto``) if given."""
    if (optional and value is None) or (word is not None and value == word):
        return value
    allowed = f"an integer >= {minimum}" + (" or null" if optional else "") + (
        f" or {word}" if word else "")
    require(name, value, is_int(value) and value >= minimum, allowed)
    return value


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1."""
    return integer(name, value, 1)


def finite_float(name: str, value, allowed: str = "a finite number") -> float:
    """``value`` as a finite float."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    require(name, value, ok, allowed)
    return float(value)


def boolean(name: str, value) -> bool:
    """``value``, which must be true or false."""
    require(name, value, isinstance(value, bool), "true or false")
    return value


def one_of(name: str, value, choices) -> object:
    """``value``, which must be one of ``choices``."""
    names = [str(c) for c in choices]
    allowed = " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)
    require(name, value, value in choices, allowed)
    return value
