"""The private wgpu-native fast path of the dispatch encoder, confined to this module.

wgpu-py's ``GPUComputePassEncoder`` methods wrap every call in an error-capture scope; for a
cached dispatch the encoder can instead call wgpu-native's C entry points directly
(``wgpuComputePassEncoderSetPipeline``, ``...SetBindGroup``, ``...DispatchWorkgroups``) on the
objects' ``_internal`` handles. Pass commands are still validated at pass end and
``finish()``, which go through wgpu-py and raise.

This reaches into ``wgpu.backends.wgpu_native._api`` (private), so it is used only with the
wgpu versions it was tested with (:data:`TESTED_WGPU_VERSIONS`); with any other version, a
non-native backend, or ``ENERGETIC_WGPU_RAW_PASS=0`` in the environment the public methods
are used — the same commands, the same results (``tests/test_wgpu_host_path.py`` runs both).
``benchmarks/RESULTS.md`` ("Runtime redesign invariants") gives the host time with and without.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["TESTED_WGPU_VERSIONS", "RawPassCalls", "raw_pass_calls", "make_encode"]

#: wgpu-py versions whose private wgpu-native API this module was tested with
TESTED_WGPU_VERSIONS = ("0.32.0",)

#: (compute pass class, SetPipeline, SetBindGroup, DispatchWorkgroups, NULL)
RawPassCalls = tuple


def raw_pass_calls(version: str | None = None) -> RawPassCalls | None:
    """The wgpu-native entry points, or None where the public methods must be used: another
    wgpu version than :data:`TESTED_WGPU_VERSIONS` (``version``: the one to check, default the
    installed one), internals not as expected, or ``ENERGETIC_WGPU_RAW_PASS=0``."""
    if os.environ.get("ENERGETIC_WGPU_RAW_PASS", "1") == "0":
        return None
    try:
        import wgpu  # type: ignore

        if (version or wgpu.__version__) not in TESTED_WGPU_VERSIONS:
            return None
        from wgpu.backends.wgpu_native import _api as native  # type: ignore

        lib, ffi = native.lib, native.ffi
        return (
            native.GPUComputePassEncoder,
            lib.wgpuComputePassEncoderSetPipeline,
            lib.wgpuComputePassEncoderSetBindGroup,
            lib.wgpuComputePassEncoderDispatchWorkgroups,
            ffi.NULL,
        )
    except Exception:  # pragma: no cover - another wgpu-py version or backend
        return None


def make_encode(raw: RawPassCalls, sub: Any, listeners: Any, touch_uniform: Any, public: Any) -> Any:
    """The encoder's ``encode(record, detail)`` on wgpu-native's entry points: tell the
    listeners, then set_pipeline / set_bind_group (each only if it changed in the open pass of
    the Submission ``sub``) and dispatch_workgroups. A pass that is not wgpu-native's goes to
    ``public(cpass, record)`` (the same calls through wgpu-py's methods)."""
    pass_type, set_pipeline, set_bind_group, dispatch, null = raw
    counters, hooks = listeners.counters, listeners.dispatch_hooks

    def encode(rec: Any, detail: Any) -> None:
        counters.dispatches += 1  # (Listeners.dispatched, inlined)
        if hooks:  # first: a listener may flush (the Dawn recorder's snapshots)
            for hook in hooks:
                hook(detail)
        cpass = sub.cpass
        if cpass is None:
            cpass = sub.compute_pass()
        if type(cpass) is not pass_type:
            public(cpass, rec)
            return
        handle = cpass._internal
        pipe, bg = rec.pipeline, rec.bind_group
        if pipe is not sub.pass_pipeline:
            set_pipeline(handle, pipe._internal)
            sub.pass_pipeline = pipe
            sub.pass_bind_group = None
        if bg is not sub.pass_bind_group:
            set_bind_group(handle, 0, bg._internal, 0, null)
            sub.pass_bind_group = bg
        dispatch(handle, rec.gx, rec.gy, 1)
        sub.in_flight.update(rec.uids)
        touch_uniform(rec.uniform_key)

    return encode
