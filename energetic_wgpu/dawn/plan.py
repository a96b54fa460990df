"""Recording dispatch plans from a :class:`WgpuBackend` run.

A *plan* is the data description of everything one op run did on the device: buffer
creations, uploads, clears, copies, dispatches (kernel, bindings by binding number, workgroup
counts, uniform bytes, override constants), submits and readbacks. The Python runtime
describes it once (by running the op); ``web/runner.js`` replays it with WebGPU in a browser
(Dawn/Tint), so the dispatch logic is never written twice.

The recorder is a listener of one backend's runtime (``energetic_wgpu/backends/webgpu/events.py``):
the runtime tells it of every buffer creation, write, clear, copy, dispatch (in full), submit
and readback, and it keeps them as one ordered event list.

Event kinds (``plan["events"]``, replayed in order):

* ``{"op": "create", "buffer": id, "size": bytes}`` — a storage buffer (zero-filled).
* ``{"op": "write", "buffer": id, "offset": o, "data": base64}`` — ``queue.writeBuffer``.
* ``{"op": "clear", "buffer": id, "offset": o, "size": n}`` — ``encoder.clearBuffer``.
* ``{"op": "copy", "src": id, "src_offset": o, "dst": id, "dst_offset": o, "size": n}``.
* ``{"op": "dispatch", "kernel": name, "workgroups": [x, y, z], "constants": {...},
  "uniforms": hex, "bindings": [{"binding": b, "buffer": id, "offset": o, "size": n}]}``
  (a DeviceArray view made by ``backend.pack`` binds its region: a non-zero offset)
  (the uniform struct goes at the spec's uniform binding).
* ``{"op": "submit"}`` — the runtime submitted its pending encoder.
* ``{"op": "read", "index": i, "buffer": id, "offset": o, "nbytes": n, "shape": [...], "dtype": "float32",
  "name": output name or null}``.

Buffers the run uses but did not create (they predate the recording, e.g. a pooled buffer)
are snapshotted: their current bytes are read back and written at the start of the plan.
"""

from __future__ import annotations

import base64
from typing import Any, Callable

import numpy as np

from ..backends.webgpu.events import Listener

__all__ = ["PlanRecorder", "record_plan", "kernel_table", "decode_read", "Plan"]


def _b64(raw: bytes | np.ndarray) -> str:
    if isinstance(raw, np.ndarray):
        raw = np.ascontiguousarray(raw).tobytes()
    return base64.b64encode(bytes(raw)).decode("ascii")


def decode_read(data_b64: str, shape: list[int], dtype: str) -> np.ndarray:
    """Decode one readback of the page (base64 of the buffer's first ``nbytes``)."""
    raw = np.frombuffer(base64.b64decode(data_b64), dtype=np.uint8)
    if dtype == "bool":
        return raw.view(np.uint32).reshape(shape) != 0
    return raw.view(np.dtype(dtype)).reshape(shape).copy()


def kernel_table(names: Any = None) -> dict[str, dict[str, Any]]:
    """``KernelSpec.to_dict()`` of the named kernels (all when ``names`` is None)."""
    from ..backends.webgpu.kernels import KERNELS, kernel

    names = sorted(KERNELS) if names is None else sorted(set(names))
    return {n: kernel(n).to_dict() for n in names}


Plan = dict  # a JSON-able dict: {"name", "kernels", "events", "outputs"}


class PlanRecorder(Listener):
    """Records the device work of one :class:`WgpuBackend` instance: a runtime listener
    (``energetic_wgpu/backends/webgpu/events.py``) that sees every dispatch in full.

    Usage::

        rec = PlanRecorder(backend)      # registers itself with backend.runtime
        out = backend.edge_logits(...)
        arr = rec.read_output("logits", out)
        plan = rec.plan("edge_logits")
        rec.detach()
    """

    detailed = True

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.runtime = backend.runtime
        self.events: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self._known: set[int] = set()
        self._snapshots: list[dict[str, Any]] = []
        self._label: str | None = None
        self._nread = 0
        self._active = True
        self.runtime.add_listener(self)

    def detach(self) -> None:
        """Stop recording (unregister from the runtime)."""
        self._active = False
        if self in self.runtime.listeners:
            self.runtime.remove_listener(self)

    # ------------------------------------------------------------------ events
    def _ensure_known(self, pooled: Any) -> None:
        """A buffer created before the recording: snapshot its current bytes."""
        if pooled.uid in self._known:
            return
        self._known.add(pooled.uid)
        self._active = False
        try:
            raw = self.runtime.readback.read_raw(pooled, pooled.size)
        finally:
            self._active = True
        self._snapshots.append({"op": "create", "buffer": pooled.uid, "size": int(pooled.size)})
        self._snapshots.append({"op": "write", "buffer": pooled.uid, "offset": 0, "data": _b64(raw)})

    def created(self, pooled: Any, kind: str) -> None:
        if self._active and kind == "storage":
            self._known.add(pooled.uid)
            self.events.append({"op": "create", "buffer": pooled.uid, "size": int(pooled.size)})

    def wrote(self, pooled: Any, offset: int, data: Any) -> None:
        if self._active:
            self._ensure_known(pooled)
            self.events.append({"op": "write", "buffer": pooled.uid, "offset": int(offset), "data": _b64(data)})

    def cleared(self, pooled: Any, offset: int, size: int) -> None:
        if self._active:
            self._ensure_known(pooled)
            self.events.append({"op": "clear", "buffer": pooled.uid, "offset": int(offset), "size": int(size)})

    def copied(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        if self._active:
            self._ensure_known(src)
            self._ensure_known(dst)
            self.events.append({"op": "copy", "src": src.uid, "src_offset": int(src_offset), "dst": dst.uid,
                                "dst_offset": int(dst_offset), "size": int(nbytes)})

    def dispatched(self, detail: dict[str, Any] | None) -> None:
        if not self._active or detail is None:
            return
        live = self.runtime.pool.live
        for b in detail["bindings"]:
            self._ensure_known(live[b["buffer"]])
        ev = {"op": "dispatch"}
        ev.update(detail)
        ev["bindings"] = [
            {"binding": b["binding"], "buffer": b["buffer"], "offset": int(b.get("offset", 0)), "size": b["size"]}
            for b in detail["bindings"]
        ]
        self.events.append(ev)

    def submitted(self, pending: bool) -> None:
        if self._active and pending:
            self.events.append({"op": "submit"})

    def read(self, x: Any) -> None:
        if not self._active:
            return
        self._ensure_known(x.pooled)
        self.events.append(
            {
                "op": "read",
                "index": self._nread,
                "buffer": x.pooled.uid,
                "offset": int(x.offset),
                "nbytes": int(x.size * 4),
                "shape": list(x.shape),
                "dtype": x.dtype.name,
                "name": self._label,
            }
        )
        self._nread += 1

    # ------------------------------------------------------------------ outputs
    def read_output(self, name: str, x: Any) -> np.ndarray:
        """Read one output array of the op (recorded as a named readback)."""
        self._label = name
        try:
            arr = self.backend.to_numpy(x)
        finally:
            self._label = None
        index = self._nread - 1 if x.size else None
        self.outputs.append({"name": name, "shape": list(x.shape), "dtype": x.dtype.name, "read": index})
        return arr

    def plan(self, name: str) -> Plan:
        events = self._snapshots + self.events
        used = sorted({e["kernel"] for e in events if e["op"] == "dispatch"})
        return {"name": name, "kernels": kernel_table(used), "events": events, "outputs": list(self.outputs)}


def record_plan(
    backend: Any, name: str, run: Callable[[Any], dict[str, Any]]
) -> tuple[Plan, dict[str, np.ndarray]]:
    """Run ``run(backend) -> {output name: backend array}`` under a recorder.

    Returns (plan, {output name: numpy array as wgpu computed it}). Exceptions of ``run``
    (e.g. NotImplementedError) propagate; the runtime is restored in every case.
    """
    rec = PlanRecorder(backend)
    try:
        outs = run(backend)
        arrays = {k: rec.read_output(k, v) for k, v in outs.items()}
        return rec.plan(name), arrays
    finally:
        rec.detach()
        try:
            backend.runtime.abandon()
        except Exception:
            pass
