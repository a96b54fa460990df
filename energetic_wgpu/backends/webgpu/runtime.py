"""The wgpu runtime of one backend: a façade wiring the device, pool, caches and encoder.

Every op calls :meth:`Runtime.dispatch`, which appends a dispatch to one pending compute pass
of one pending command encoder; nothing is submitted until results are needed
(:meth:`Runtime.read`, :meth:`Runtime.flush`, :meth:`Runtime.synchronize`). The parts, one
module each: ``device`` (adapters, limits), ``arrays`` (DeviceArray, views), ``pool``
(buffers), ``uniforms``, ``pipelines``, ``encoder`` (dispatch records), ``submission`` (the
pending encoder and the buffers in flight), ``readback``, ``native`` (the wgpu-native fast
path) and ``events`` (listeners: counters, tracing, plan recording).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...errors import DeviceError, InvalidArgumentError
from .arrays import DeviceArray, PooledBuffer, make_view, parts_of, view_bind_size
from .device import DEFAULT_LIMITS, list_adapters, open_device, require_wgpu
from .encoder import Encoder
from .memory import check_binding_bytes_range, check_binding_bytes_type, memory_report
from .events import Counters, Listener, Listeners, TraceListener
from .pipelines import PipelineCache
from .pool import BufferPool
from .readback import Readback, ReadHandle
from .submission import Submission
from .uniforms import UniformCache

__all__ = ["Runtime", "DeviceArray", "Counters", "list_adapters", "DEFAULT_LIMITS", "ReadHandle", "Listener"]


class Runtime:
    """Device, pool, caches, listeners and the pending command encoder of one wgpu backend.

    Args: as :class:`~energetic_wgpu.backends.webgpu.WgpuBackend` (adapter, limits, features,
    max_binding_bytes).
    """

    def __init__(self, adapter: Any = None, limits: str = "default", features: Sequence[str] = (),
                 max_binding_bytes: Any = None) -> None:
        w = require_wgpu()
        check_binding_bytes_type(max_binding_bytes)
        dev = open_device(adapter, limits, features, check_limits=lambda lim: check_binding_bytes_range(
            max_binding_bytes, lim["max_storage_buffer_binding_size"], limits))
        self.adapter, self.device, self.queue = dev.adapter, dev.device, dev.queue
        self.adapter_info, self.limits, self.limits_mode = dev.adapter_info, dev.limits, dev.limits_mode
        device_max = self.limits["max_storage_buffer_binding_size"]
        #: the binding size limit used for size decisions (bytes): ``max_binding_bytes`` when
        #: given (at most the device's maxStorageBufferBindingSize), else the device's
        self.max_binding_bytes = check_binding_bytes_range(max_binding_bytes, device_max, limits)
        limit_desc = self._limit_desc(max_binding_bytes is not None)
        #: the optional features this device was created with (opt-in: none by default)
        self.features: frozenset[str] = dev.features
        self._describe = dev.describe()
        self.STORAGE_USAGE = w.BufferUsage.STORAGE | w.BufferUsage.COPY_SRC | w.BufferUsage.COPY_DST
        self.counters = Counters()
        #: every listener, told of each event (events.py); the counters are the first
        self.listeners = Listeners(self.counters)
        self._trace: TraceListener | None = None
        ev = self.listeners
        self.submission = Submission(self.device, ev.pass_begun)
        self.pool = BufferPool(self.device, self.submission, self.max_binding_size, limit_desc, self.STORAGE_USAGE,
                               ev.created)
        #: a buffer size limit set with :meth:`set_max_buffer_bytes` (None: the device's maxBufferSize)
        self.forced_buffer_bytes: int | None = None
        self._apply_buffer_limit()
        self.pipelines = PipelineCache(self.device, ev.built)
        self.uniforms = UniformCache(self.queue, self.pool.new_buffer, self.pool.destroy, self.submission,
                                     w.BufferUsage.UNIFORM | w.BufferUsage.COPY_DST)
        self.encoder = Encoder(self.device, self.submission, self.pipelines, self.uniforms, ev)
        self.encoder.max_binding_size = self.max_binding_bytes  # a binding over it is refused
        # the hot paths, bound directly (no extra call layer)
        self.dispatch = self.encoder.dispatch  # type: ignore[method-assign]
        self.new_array = self.pool.new_array  # type: ignore[method-assign]
        self.pool.on_destroy.append(self.encoder.forget)
        self.readback = Readback(self.device, self.queue, self.submission, self.flush, ev, self.features)

    # ------------------------------------------------------------------ listeners
    def add_listener(self, listener: Listener) -> Listener:
        """Register ``listener`` for every later event (events.py); returns it."""
        return self.listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    @property
    def trace(self) -> list[dict[str, Any]] | None:
        """Set to a list to record every dispatch as a JSON-able dict (full path); None: off."""
        return None if self._trace is None else self._trace.entries

    @trace.setter
    def trace(self, entries: list[dict[str, Any]] | None) -> None:
        if self._trace is not None:
            self.listeners.discard(self._trace)
            self._trace = None
        if entries is not None:
            self._trace = self.listeners.add(TraceListener(entries))  # type: ignore[assignment]

    # ------------------------------------------------------------------ info
    def describe(self) -> str:
        return self._describe

    @property
    def max_binding_size(self) -> int:
        """The binding size limit in use (bytes): :attr:`max_binding_bytes`."""
        return self.max_binding_bytes

    def _limit_desc(self, forced: bool) -> tuple[str, str]:
        device_max = self.limits["max_storage_buffer_binding_size"]
        if forced:
            return "max_binding_bytes", f"set for this backend; the device allows {device_max}"
        return "the device's maxStorageBufferBindingSize", f"{self.limits_mode} limits"

    def set_max_binding_bytes(self, value: Any) -> int:
        """Change the binding limit in use (``None``: the device's own); returns the previous
        value. Validated as the constructor's ``max_binding_bytes``. Arrays made before keep
        their buffers: one larger than a new, smaller limit is refused where a kernel binds it
        on the full dispatch path (records cached before the change replay as they were)."""
        check_binding_bytes_type(value)
        device_max = self.limits["max_storage_buffer_binding_size"]
        new = check_binding_bytes_range(value, device_max, self.limits_mode)
        old = self.max_binding_bytes
        self.max_binding_bytes = new
        self.encoder.max_binding_size = new
        pool = self.pool
        pool.max_binding_size = new
        pool.limit_desc = self._limit_desc(value is not None)
        self._apply_buffer_limit()
        pool.forget_sizes()
        return old

    @property
    def max_buffer_bytes(self) -> int:
        """The buffer size limit size decisions use (bytes): the device's maxBufferSize, or the
        smaller value set with :meth:`set_max_buffer_bytes`; never below the binding limit."""
        return self.pool.max_buffer_size

    def set_max_buffer_bytes(self, value: Any) -> int | None:
        """Set the buffer size limit size decisions use (``None``: the device's maxBufferSize;
        else an int multiple of 256, >= 256, at most the device's; below the binding limit in
        use it counts as the binding limit). Returns the previous setting (None or bytes).
        Tests use it to reach the "one buffer per region" layout of packed arrays at small
        sizes. InvalidArgumentError naming ``max_buffer_bytes`` for a bad value."""
        check_binding_bytes_type(value, "max_buffer_bytes")
        check_binding_bytes_range(value, int(self.limits.get("max_buffer_size", 0)), self.limits_mode,
                                  "max_buffer_bytes", "maxBufferSize")
        old = self.forced_buffer_bytes
        self.forced_buffer_bytes = None if value is None else int(value.__index__())
        self._apply_buffer_limit()
        return old

    def _apply_buffer_limit(self) -> None:
        forced = self.forced_buffer_bytes
        device = int(self.limits.get("max_buffer_size", 0))
        self.pool.max_buffer_size = max(self.max_binding_bytes, device if forced is None else forced)

    def limits_in_use(self) -> dict[str, Any]:
        """The limits size decisions use: ``limits_mode`` ("default" or "adapter"),
        ``max_binding_bytes`` (the binding limit in use), and the device's
        ``max_storage_buffer_binding_size`` and ``max_buffer_size``."""
        return {
            "limits_mode": self.limits_mode,
            "max_binding_bytes": self.max_binding_bytes,
            "max_storage_buffer_binding_size": self.limits["max_storage_buffer_binding_size"],
            "max_buffer_size": self.limits.get("max_buffer_size", 0),
        }

    def memory(self) -> dict[str, int]:
        """Live device bytes by purpose (memory.py)."""
        return memory_report(self.pool, self.submission, self.readback)

    @property
    def offset_alignment(self) -> int:
        """The device's minStorageBufferOffsetAlignment (256 by default)."""
        return int(self.limits.get("min_storage_buffer_offset_alignment", 256))

    @property
    def has_timestamps(self) -> bool:
        """Whether the device was created with the "timestamp-query" feature."""
        return self.readback.has_timestamps

    # ------------------------------------------------------------------ arrays
    def new_array(self, backend: Any, shape: tuple[int, ...], dtype: Any, what: str = "array") -> DeviceArray:
        """An uninitialized device array (from the pool)."""
        return self.pool.new_array(backend, shape, dtype, what)

    def dummy(self) -> PooledBuffer:
        """A small buffer bound where an optional input is absent."""
        return self.pool.dummy()

    def trim(self) -> None:
        """Destroy every pooled buffer that is not in use."""
        self.pool.trim()

    view_bind_size = staticmethod(view_bind_size)

    def view(self, base: DeviceArray, offset: int, shape: tuple[int, ...], dtype: Any = np.float32) -> DeviceArray:
        """A DeviceArray at byte ``offset`` of ``base``'s buffer (see :func:`arrays.make_view`;
        ``offset`` a multiple of :attr:`offset_alignment`)."""
        return make_view(base, offset, shape, dtype, self.offset_alignment)

    # ------------------------------------------------------------------ uploads
    def upload(self, pooled: PooledBuffer, data: np.ndarray, offset: int = 0, flush_pending: bool = True) -> None:
        """Write ``data`` (contiguous, 4-byte elements) at byte ``offset`` of ``pooled``.

        ``queue.write_buffer`` runs at the next submit before the encoder's commands, so a
        buffer that pending commands use is flushed first — unless ``flush_pending`` is False
        (the caller knows no pending command reads the bytes written)."""
        raw = np.ascontiguousarray(data)
        if raw.nbytes == 0:
            return
        if flush_pending and pooled.uid in self.submission.in_flight:
            self.flush()
        for listener in self.listeners:
            listener.wrote(pooled, int(offset), raw)
        try:
            self.queue.write_buffer(pooled.buffer, int(offset), raw)
        except Exception as exc:
            raise DeviceError(f"upload of {raw.nbytes} bytes failed: {type(exc).__name__}: {exc}") from exc

    def write(self, x: DeviceArray, data: np.ndarray) -> None:
        """Upload ``data`` (x.size 4-byte elements) into ``x`` (at its offset)."""
        raw = np.ascontiguousarray(data).reshape(-1)
        if raw.size != x.size or raw.itemsize != 4:
            raise InvalidArgumentError(f"write: need {x.size} 4-byte elements, got {raw.size} of {raw.dtype}")
        parts = parts_of(x)
        if parts is None:
            self.upload(x.pooled, raw, x.offset)
            return
        for start, count, pooled, pad in parts:  # a split array: each part into its buffer
            self.upload(pooled, raw[start:start + count], pad)

    # ------------------------------------------------------------------ encoding
    def dispatch(
        self,
        kernel_name: str,
        *,
        threads: int | None = None,
        workgroups: int | None = None,
        uniform: dict[str, Any] | bytes | None = None,
        constants: dict[str, Any] | None = None,
        **buffers: Any,
    ) -> None:
        """Encode one dispatch of kernel ``kernel_name`` (kernels.py) into the pending encoder.

        Args:
            threads: invocations wanted (workgroups = ceil(threads / WG)); or
            workgroups: workgroups wanted (workgroup-per-item kernels). Either is folded into
                (gx, gy) when > 65,535; 0 skips the dispatch.
            uniform: the kernel's uniform struct as ``{field: value}`` (padding fields left out),
                or its raw bytes. Uniform buffers are cached by content.
            constants: extra override constants (``WG`` comes from the kernel table).
            buffers: every storage binding by its WGSL name: a DeviceArray (a view binds its
                region) or a PooledBuffer.

        Raises:
            KeyError: unknown kernel. InvalidArgumentError: a binding or uniform field missing
            or unknown, or neither/both of threads and workgroups.
        """
        self.encoder.dispatch(kernel_name, threads=threads, workgroups=workgroups, uniform=uniform,
                              constants=constants, **buffers)

    def copy_buffer(self, src: Any, dst: Any, nbytes: int) -> None:
        """Encode a buffer-to-buffer copy of ``nbytes`` (multiple of 4) from ``src``'s offset
        to ``dst``'s offset (0 for whole-buffer arrays)."""
        self.encoder.copy_buffer(src, dst, nbytes)

    def clear(self, x: Any) -> None:
        """Encode zero-filling of ``x``'s whole buffer (of its bound range for a view)."""
        self.encoder.clear(x)

    # ------------------------------------------------------------------ submit
    def flush(self) -> None:
        """Submit the pending encoder (if any). Errors -> DeviceError, pending work dropped."""
        sub = self.submission
        if sub.encoder is None:
            return
        for listener in self.listeners:
            listener.submitted(True)
        try:
            sub.end_pass()
            self.queue.submit([sub.encoder.finish()])
        except Exception as exc:
            self.abandon()
            raise DeviceError(f"the device rejected the pending commands: {type(exc).__name__}: {exc}") from exc
        self.pool.recycle(sub.take_deferred())

    def abandon(self) -> None:
        """Drop the pending encoder without submitting (after an error)."""
        try:
            if self.submission.cpass is not None:
                self.submission.cpass.end()
        except Exception:
            pass
        self.pool.recycle(self.submission.take_deferred())

    def synchronize(self) -> None:
        """Submit pending work and wait for the queue to finish (by a tiny readback)."""
        self.readback.synchronize(self.dummy())

    # ------------------------------------------------------------------ readback
    def read(self, x: DeviceArray) -> np.ndarray:
        """Flush, copy ``x`` back, one numpy copy (see readback.py)."""
        return self.readback.read(x)

    def read_many(self, arrays: Sequence[DeviceArray]) -> np.ndarray:
        """uint8 bytes of ``arrays`` one after the other, in one readback (readback.py)."""
        return self.readback.read_many(arrays)

    def read_async(self, x: DeviceArray) -> ReadHandle:
        """Submit a copy of ``x`` into its own staging buffer now; map when ``result()`` is called."""
        return self.readback.read_async(x)

    def gpu_time(self, fn: Any) -> tuple[Any, float]:
        """``(fn(), milliseconds)``: the device time of the compute passes ``fn`` encodes, by
        timestamp queries (Readback.gpu_time; needs the "timestamp-query" feature)."""
        return self.readback.gpu_time(fn)
