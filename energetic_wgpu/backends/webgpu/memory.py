"""Device memory of one wgpu runtime: the binding limit in use and live bytes by purpose.

``max_binding_bytes`` (a :class:`WgpuBackend` argument) lowers the binding size limit that size
decisions use below the device's maxStorageBufferBindingSize (tests force a small limit with
it). :func:`memory_report` sums the sizes of the buffers the runtime holds, by purpose:

=================  =========================================================================
``graph``          the graph's device index arrays (GraphData)
``parameters``     the Router's packed parameters (q, k, bias)
``optimizer``      AdamW's moments and step state
``activations``    every other array in use (op outputs, states, gradients, losses)
``workspace``      the runtime's own buffers: uniform buffers, the dummy binding, staging
                   (readback) buffers
``pool_free``      pooled buffers no array uses (kept for reuse; ``trim()`` destroys them),
                   and released buffers waiting for the submit of the commands that use them
``total``          the sum of the above
=================  =========================================================================

Sizes are the buffers' sizes, so they include pool rounding (256 bytes, 64 KiB above 1 MiB)
and the 256-byte alignment of packed regions.
"""

from __future__ import annotations

from typing import Any

from ...errors import InvalidArgumentError
from ..base import MEMORY_PURPOSES

__all__ = ["check_binding_bytes_type", "check_binding_bytes_range", "memory_report", "MIN_BINDING_BYTES"]

#: the smallest binding limit accepted (the storage offset alignment: regions stay aligned)
MIN_BINDING_BYTES = 256


def check_binding_bytes_type(value: Any, name: str = "max_binding_bytes") -> None:
    """``max_binding_bytes`` (or the limit ``name``, e.g. ``max_buffer_bytes``) must be None or
    an int >= 256 and a multiple of 256 (checked before the device opens);
    InvalidArgumentError otherwise."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise InvalidArgumentError(
            f"{name} must be None or an int (bytes, a multiple of {MIN_BINDING_BYTES}), "
            f"got {type(value).__name__} {value!r}"
        )
    v = int(value.__index__())
    if v < MIN_BINDING_BYTES or v % MIN_BINDING_BYTES:
        raise InvalidArgumentError(
            f"{name} must be a multiple of {MIN_BINDING_BYTES} and at least {MIN_BINDING_BYTES} "
            f"bytes, got {v}"
        )


def check_binding_bytes_range(value: Any, device_max: int, limits_mode: str, name: str = "max_binding_bytes",
                              device_name: str = "maxStorageBufferBindingSize") -> int:
    """The binding limit in use: ``value`` (type-checked already) when at most the device's
    maxStorageBufferBindingSize ``device_max``, the device's own when None (or the limit
    ``name`` against the device's ``device_name``, e.g. max_buffer_bytes and maxBufferSize)."""
    if value is None:
        return int(device_max)
    v = int(value.__index__())
    if v > device_max:
        raise InvalidArgumentError(
            f"{name} must be at most the device's {device_name} = {device_max} bytes "
            f"({limits_mode} limits), got {v}; pass limits='adapter' for the adapter's own maximum"
        )
    return v


def memory_report(pool: Any, submission: Any, readback: Any) -> dict[str, int]:
    """Live device bytes of a runtime by purpose (the table in this module's docstring)."""
    out = dict.fromkeys(MEMORY_PURPOSES, 0)
    free = {uid for lst in pool.free.values() for uid, _ in lst}
    free.update(p.uid for p in submission.deferred)
    dummy = pool.dummy_uid
    for uid, pooled in pool.live.items():
        if uid in free:
            key = "pool_free"
        elif pooled.usage != pool.storage_usage or uid == dummy:
            key = "workspace"  # uniform buffers and the dummy binding
        else:
            key = pool.tags.get(uid, "activations")
        out[key] += pooled.size
    out["workspace"] += readback.staging_bytes()
    out["total"] = sum(out[k] for k in MEMORY_PURPOSES[:-1])
    return out
