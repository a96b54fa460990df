"""Recording dispatch plans from a :class:`WgpuBackend` run.

A *plan* is the data description of everything one op run did on the device: buffer
creations, uploads, clears, copies, dispatches (kernel, bindings by binding number, workgroup
counts, uniform bytes, override constants), submits and readbacks. The Python runtime
describes it once (by running the op); ``web/runner.js`` replays it with WebGPU in a browser
(Dawn/Tint), so the dispatch logic is never written twice.

The recorder wraps the methods of one backend's ``Runtime`` *instance* (instance attributes;
the class and the backend code are untouched) and routes the runtime's own ``trace`` hook
(the JSON-able dict every ``dispatch`` appends) into one ordered event list.

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
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

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


@dataclass
class PlanRecorder:
    """Records the device work of one :class:`WgpuBackend` instance.

    Usage::

        rec = PlanRecorder(backend)      # wraps backend.runtime's methods
        out = backend.edge_logits(...)
        arr = rec.read_output("logits", out)
        plan = rec.plan("edge_logits")
        rec.detach()
    """

    backend: Any
    events: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    _known: set[int] = field(default_factory=set)
    _snapshots: list[dict[str, Any]] = field(default_factory=list)
    _label: str | None = None
    _nread: int = 0
    _in_upload: int = 0
    _saved: dict[str, Any] = field(default_factory=dict)
    _active: bool = True
    _by_buffer: dict[int, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rt = self.backend.runtime
        self.runtime = rt
        for name in ("_new_buffer", "upload", "clear", "copy_buffer", "dispatch", "flush", "read", "read_async"):
            self._saved[name] = rt.__dict__.get(name, _MISSING)
        self._saved["trace"] = rt.trace
        self._saved["queue"] = rt.queue
        rt.trace = _TraceSink(self)
        rt.queue = _QueueProxy(rt.queue, self)
        rt._new_buffer = self._wrap(rt._new_buffer, self._on_new_buffer)
        rt.upload = self._wrap_upload(rt.upload)
        rt.clear = self._wrap(rt.clear, None, self._on_clear)
        rt.copy_buffer = self._wrap(rt.copy_buffer, None, self._on_copy)
        rt.dispatch = self._wrap(rt.dispatch, None, self._before_dispatch)
        rt.flush = self._wrap(rt.flush, None, self._on_flush)
        rt.read = self._wrap(rt.read, None, self._on_read)
        rt.read_async = self._wrap(rt.read_async, None, self._on_read)

    # ------------------------------------------------------------------ wrapping
    def _wrap(self, fn: Callable, after: Callable | None = None, before: Callable | None = None) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self._active and before is not None:
                before(*args, **kwargs)
            out = fn(*args, **kwargs)
            if self._active and after is not None:
                after(out, *args, **kwargs)
            return out

        return wrapper

    def _wrap_upload(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(pooled: Any, data: Any, offset: int = 0) -> Any:
            if not self._active:
                return fn(pooled, data, offset)
            raw = np.ascontiguousarray(data)
            if raw.nbytes:
                self._ensure_known(pooled)
            self._in_upload += 1
            try:
                out = fn(pooled, data, offset)
            finally:
                self._in_upload -= 1
            if raw.nbytes:
                self.events.append({"op": "write", "buffer": pooled.uid, "offset": int(offset), "data": _b64(raw)})
            return out

        return wrapper

    def detach(self) -> None:
        """Restore the runtime's methods, trace and queue."""
        rt = self.runtime
        self._active = False
        for name, val in self._saved.items():
            if name in ("trace", "queue"):
                setattr(rt, name, val)
            elif val is _MISSING:
                rt.__dict__.pop(name, None)
            else:
                setattr(rt, name, val)

    # ------------------------------------------------------------------ hooks
    def _pooled(self, x: Any) -> Any:
        return self.runtime._as_pooled(x)

    def _is_storage(self, pooled: Any) -> bool:
        return pooled.usage == self.runtime.STORAGE_USAGE

    def _on_new_buffer(self, pooled: Any, size: int, usage: int) -> None:
        if usage == self.runtime.STORAGE_USAGE:
            self._known.add(pooled.uid)
            self._by_buffer[id(pooled.buffer)] = pooled
            self.events.append({"op": "create", "buffer": pooled.uid, "size": int(pooled.size)})

    def _ensure_known(self, pooled: Any) -> None:
        """A buffer created before the recording: snapshot its current bytes."""
        if pooled.uid in self._known:
            return
        self._known.add(pooled.uid)
        self._active = False
        try:
            raw = self.runtime.read_raw(pooled, pooled.size)
        finally:
            self._active = True
        self._snapshots.append({"op": "create", "buffer": pooled.uid, "size": int(pooled.size)})
        self._snapshots.append({"op": "write", "buffer": pooled.uid, "offset": 0, "data": _b64(raw)})

    def _on_clear(self, x: Any) -> None:
        p, off, size = self.runtime.clear_range(x)
        self._ensure_known(p)
        self.events.append({"op": "clear", "buffer": p.uid, "offset": int(off), "size": int(size)})

    def _on_copy(self, src: Any, dst: Any, nbytes: int) -> None:
        if nbytes <= 0:
            return
        (s, so, _), (d, do, _) = self.runtime._binding(src), self.runtime._binding(dst)
        self._ensure_known(s)
        self._ensure_known(d)
        self.events.append(
            {"op": "copy", "src": s.uid, "src_offset": int(so), "dst": d.uid, "dst_offset": int(do), "size": int(nbytes)}
        )

    def _before_dispatch(self, kernel_name: str, bindings: Any, **kwargs: Any) -> None:
        for b in bindings:
            self._ensure_known(self._pooled(b))

    def _on_trace(self, entry: dict[str, Any]) -> None:
        ev = {"op": "dispatch"}
        ev.update(entry)
        ev["bindings"] = [
            {"binding": b["binding"], "buffer": b["buffer"], "offset": int(b.get("offset", 0)), "size": b["size"]}
            for b in entry["bindings"]
        ]
        self.events.append(ev)

    def _on_flush(self, *args: Any, **kwargs: Any) -> None:
        if self.runtime._encoder is not None:
            self.events.append({"op": "submit"})

    def _on_read(self, x: Any) -> None:
        if x.size == 0:
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

    def _on_queue_write(self, buffer: Any, offset: int, data: Any) -> None:
        """A ``queue.write_buffer`` that bypassed ``Runtime.upload`` (uniforms are in the trace)."""
        if self._in_upload:
            return
        p = self._by_buffer.get(id(buffer))
        if p is not None and p.buffer is buffer and self._is_storage(p):
            raw = data if isinstance(data, np.ndarray) else np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
            self.events.append({"op": "write", "buffer": p.uid, "offset": int(offset), "data": _b64(raw)})

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


_MISSING = object()


class _TraceSink(list):
    """Stands in for ``Runtime.trace`` (a list): each appended dispatch goes to the recorder."""

    def __init__(self, recorder: PlanRecorder) -> None:
        super().__init__()
        self._recorder = recorder

    def append(self, entry: Any) -> None:  # noqa: D401
        super().append(entry)
        if self._recorder._active:
            self._recorder._on_trace(entry)


class _QueueProxy:
    """Forwards to the real GPUQueue; notices direct storage ``write_buffer`` calls."""

    def __init__(self, queue: Any, recorder: PlanRecorder) -> None:
        self._queue = queue
        self._recorder = recorder

    def write_buffer(self, buffer: Any, buffer_offset: int, data: Any, *args: Any, **kwargs: Any) -> Any:
        out = self._queue.write_buffer(buffer, buffer_offset, data, *args, **kwargs)
        if self._recorder._active:
            try:
                self._recorder._on_queue_write(buffer, buffer_offset, data)
            except Exception:  # pragma: no cover - diagnostics only
                pass
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


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
