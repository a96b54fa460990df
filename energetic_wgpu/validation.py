"""Checks of user input shared by the router, the losses and the optimizer.

Every check raises the library's error (:class:`ShapeError` for a wrong type, shape or
dtype, :class:`InvalidArgumentError` for a wrong value) naming the argument, before any
backend work. Values are checked *after* conversion to the dtype they will have on the
backend: ``1e39`` is finite as a Python float but inf in float32, and is refused.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, ShapeError
from .shortrepr import short_repr as _short

__all__ = [
    "F32_TINY",
    "U32_MAX",
    "check_float",
    "check_int",
    "check_tau",
    "float_array",
    "mask_array",
    "check_not_foreign",
    "memory_budget",
]

#: the smallest normal positive float32 (1.1754944e-38): the smallest accepted tau
F32_TINY = float(np.finfo(np.float32).tiny)
#: the largest value of a u32 uniform (top_k reaches the shaders as one)
U32_MAX = 2**32 - 1
_F32_MAX = float(np.finfo(np.float32).max)


def check_float(value: Any, name: str, *, positive: bool = False, dtype: Any = np.float32) -> float:
    """``value`` as a Python float: a real number, finite in ``dtype`` (float32 by default:
    the scalars reach float32 uniforms), and > 0 there when ``positive``."""
    tv = type(value)
    if (tv is float or tv is int) and dtype is np.float32 and -_F32_MAX <= value <= _F32_MAX:
        if not positive or value >= F32_TINY:  # the common case, decided without numpy
            return float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a real number, got {_short(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int too large for a float
        raise InvalidArgumentError(f"{name} must be finite, got an int of {int(value).bit_length()} bits") from None
    with np.errstate(over="ignore"):
        cast = np.dtype(dtype).type(v)
    if not math.isfinite(v) or not np.isfinite(cast):
        raise InvalidArgumentError(
            f"{name} must be finite in {np.dtype(dtype).name} (|x| <= {float(np.finfo(dtype).max):.4g}), got {v}"
        )
    if positive and not v > 0:
        raise InvalidArgumentError(f"{name} must be > 0, got {v}")
    if positive and not cast > 0:
        raise InvalidArgumentError(f"{name} must be > 0, got {v} (0 in {np.dtype(dtype).name})")
    return v


def check_tau(value: Any, name: str = "tau") -> float:
    """A softmax temperature: a float whose float32 is a normal positive number
    (``F32_TINY`` <= tau <= float32 max), so that ``logit / tau`` and the backward's division by
    tau are well defined in float32 on every backend."""
    v = check_float(value, name, positive=True)
    if v < F32_TINY:
        raise InvalidArgumentError(
            f"{name} must be >= {F32_TINY:.8g} (the smallest normal float32; smaller values round to 0 "
            f"or a subnormal that GPUs flush to 0), got {v}"
        )
    return v


def check_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        upto = "" if maximum is None else f" and <= {maximum}"
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}{upto}, got {_short(value)}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {int(value)}")
    if maximum is not None and value > maximum:
        raise InvalidArgumentError(f"{name} must be an int <= {maximum}, got {int(value)}")
    return int(value)


def _as_array(value: Any, name: str) -> np.ndarray:
    """np.asarray with a library error for ragged nested lists and other unconvertible input."""
    if hasattr(value, "backend") and not isinstance(value, np.ndarray):
        raise InvalidArgumentError(
            f"{name} is an array of another backend ({value.backend.describe()}); move it with to_numpy() first"
        )
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ShapeError(f"{name} must be a rectangular numeric array, got {type(value).__name__} ({exc})") from None
    if arr.dtype == object:
        raise ShapeError(f"{name} must be a rectangular numeric array (not ragged), got dtype object")
    return arr


def float_array(value: Any, name: str, shape: tuple[int, ...] | None, dtype: Any) -> np.ndarray:
    """``value`` as a numpy array of ``dtype``: float or integer input (integers are values
    here, never indices), shape ``shape`` (any when None), every element finite in ``dtype``."""
    arr = _as_array(value, name)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ShapeError(f"{name} must be a float array, got dtype {arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(dtype)
    if not np.all(np.isfinite(out)):
        if np.all(np.isfinite(arr)):
            raise InvalidArgumentError(
                f"{name} must be finite in {np.dtype(dtype).name}: values beyond +-{float(np.finfo(dtype).max):.4g} "
                f"overflow to inf"
            )
        raise InvalidArgumentError(f"{name} must be finite (no NaN or inf)")
    return out


def mask_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a bool numpy array: a bool array, or a numeric array whose values are all
    0 or 1 (any other value, NaN included, is refused)."""
    arr = _as_array(value, name)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ShapeError(f"{name} must be a bool array or a numeric array of 0 and 1, got dtype {arr.dtype}")
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        bad = arr[~ok].reshape(-1)[0]
        raise InvalidArgumentError(f"{name} must hold only 0 and 1 (or be a bool array), got the value {bad!r}")
    return arr != 0


def check_not_foreign(backend: Any, value: Any, name: str) -> None:
    """Refuse an array of another backend or adapter (it cannot be bound here)."""
    other = getattr(value, "backend", None)
    if other is not None and other is not backend and not isinstance(value, np.ndarray):
        where = other.describe() if hasattr(other, "describe") else type(other).__name__
        raise InvalidArgumentError(
            f"{name} is an array of another backend ({where}), not of this router's ({backend.describe()}); "
            "move it with to_numpy() or asarray() on this backend first"
        )


@functools.lru_cache(maxsize=1)
def memory_budget() -> int:
    """Bytes one forward's history may take: half the machine's physical memory (a software
    adapter's device memory is host memory; wgpu does not report a GPU's memory size)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        total = 8 * 2**30
    return int(total) // 2
