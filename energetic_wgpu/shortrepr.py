"""Bounded ``repr`` for error messages: a hostile value (a huge int, a nested alias
structure from YAML) never makes a message longer than :data:`LIMIT` characters, and
rendering it costs time proportional to that limit, not to the value's size."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["short_repr", "LIMIT"]

#: most characters of a value that an error message shows
LIMIT = 200

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 8
_repr.maxstring = LIMIT
_repr.maxother = LIMIT
_repr.maxlong = 60  # digits of an int shown (head...tail)


def short_repr(value: Any, limit: int = LIMIT) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (``...`` marks a cut).

    Nested containers show at most 8 items per level and 3 levels, so the cost is
    bounded whatever the value (a shared nested list of 9**9 leaves renders instantly).
    """
    try:
        text = _repr.repr(value)
    except ValueError:  # an int too long for str() (sys.set_int_max_str_digits)
        text = f"<{type(value).__name__} of {value.bit_length()} bits>" if isinstance(value, int) else "<value>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
