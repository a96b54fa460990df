"""Readback: staging buffers, synchronous and asynchronous reads, GPU timestamps.

A read copies the array into a MAP_READ staging buffer at the end of the pending encoder,
submits (``flush``), maps, makes one numpy copy and unmaps. ``read`` reuses one growing
staging buffer; ``read_async`` takes its own from a free list and maps when the handle's
``result()`` is called.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...errors import DeviceError
from .arrays import DeviceArray, PooledBuffer, decode, parts_of
from .device import require_wgpu
from .submission import TS_MAX_PASSES, Submission

__all__ = ["Readback", "ReadHandle"]


class ReadHandle:
    """An asynchronous readback: the copy is submitted; :meth:`result` maps and returns it."""

    def __init__(self, readback: "Readback", staging: Any, nbytes: int, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self._readback = readback
        self._staging = staging
        self._nbytes = nbytes
        self._shape = shape
        self._dtype = dtype
        self._value: np.ndarray | None = None

    def done(self) -> bool:
        return self._value is not None

    def result(self) -> np.ndarray:
        if self._value is None:
            if self._nbytes == 0:
                raw = np.zeros(0, dtype=np.uint8)
            else:
                raw = self._readback.map_read(self._staging, self._nbytes)
            self._value = decode(raw, self._shape, self._dtype)
            self._readback.staging_free.append(self._staging)
            self._staging = None
        return self._value


class _DoneHandle:
    """A read handle whose result is already on the host (a split array's read_async)."""

    def __init__(self, value: np.ndarray) -> None:
        self._value = value

    def done(self) -> bool:
        return True

    def result(self) -> np.ndarray:
        return self._value


class Readback:
    """Copies device data back to the host.

    Args:
        device, queue: the GPUDevice and its queue. submission: the pending :class:`Submission`.
        flush: submits the pending encoder (``Runtime.flush``). listeners: the runtime's list.
        features: the device's features (timestamps need "timestamp-query").
    """

    def __init__(self, device: Any, queue: Any, submission: Submission, flush: Callable[[], None],
                 listeners: Any, features: frozenset[str]) -> None:
        self.device = device
        self.queue = queue
        self.submission = submission
        self.flush = flush
        self.listeners = listeners
        self.features = features
        self.staging_free: list[Any] = []
        self._staging: Any = None
        self._staging_size = 0
        self._ts_set: Any = None
        self._ts_resolve: Any = None

    def _new_staging(self, size: int) -> Any:
        w = require_wgpu()
        buf = self.device.create_buffer(size=size, usage=w.BufferUsage.MAP_READ | w.BufferUsage.COPY_DST)
        for listener in self.listeners:
            listener.created(None, "staging")
        return buf

    def staging_bytes(self) -> int:
        """Bytes of the staging buffers held: the shared one and the free ones of read_async."""
        return self._staging_size + sum(int(s.size) for s in self.staging_free)

    def staging(self, nbytes: int) -> Any:
        """The shared staging buffer, grown to a power of two >= ``nbytes`` (>= 256)."""
        if self._staging is None or self._staging_size < nbytes:
            size = max(256, 1 << (max(nbytes, 1) - 1).bit_length())
            if self._staging is not None:
                self._staging.destroy()
            self._staging = self._new_staging(size)
            self._staging_size = size
        return self._staging

    def map_read(self, staging: Any, nbytes: int) -> np.ndarray:
        """Map the first ``nbytes`` of ``staging``, copy them (uint8), unmap."""
        w = require_wgpu()
        try:
            staging.map_sync(w.MapMode.READ, 0, nbytes)
            try:
                view = staging.read_mapped(0, nbytes, copy=False)
                raw = np.frombuffer(view, dtype=np.uint8, count=nbytes).copy()
            finally:
                staging.unmap()
        except Exception as exc:
            raise DeviceError(f"readback of {nbytes} bytes failed: {type(exc).__name__}: {exc}") from exc
        for listener in self.listeners:
            listener.mapped(nbytes)
        return raw

    def read(self, x: DeviceArray) -> np.ndarray:
        """Flush, copy ``x`` to the reused staging buffer, map, one numpy copy, unmap."""
        dtype = x.dtype
        if x.size == 0:
            return np.zeros(x.shape, dtype=dtype)
        parts = parts_of(x)
        if parts is not None:
            return self._read_split(x, parts)
        for listener in self.listeners:
            listener.read(x)
        nbytes = x.size * 4
        staging = self.staging(nbytes)
        self.submission.outside_pass().copy_buffer_to_buffer(x.buffer, x.offset, staging, 0, nbytes)
        self.submission.in_flight.add(x.pooled.uid)
        self.flush()
        return decode(self.map_read(staging, nbytes), x.shape, dtype)

    def _read_split(self, x: DeviceArray, parts: list[tuple[int, int, PooledBuffer, int]]) -> np.ndarray:
        """A split array (arrays.parts_of) read back part by part (one readback each, through
        the staging buffer) into one host array."""
        raw = np.empty(x.size * 4, dtype=np.uint8)
        for start, count, pooled, pad in parts:
            nbytes = 4 * count
            staging = self.staging(nbytes)
            self.submission.outside_pass().copy_buffer_to_buffer(pooled.buffer, pad, staging, 0, nbytes)
            self.submission.in_flight.add(pooled.uid)
            self.flush()
            raw[4 * start:4 * start + nbytes] = self.map_read(staging, nbytes)
        return decode(raw, x.shape, x.dtype)

    def read_many(self, arrays: Any) -> np.ndarray:
        """uint8 bytes of ``arrays`` one after the other: each copied at its offset into the
        reused staging buffer, one submit, one map (a single readback)."""
        total = sum(x.size * 4 for x in arrays)
        if total == 0:
            return np.zeros(0, dtype=np.uint8)
        for x in arrays:
            if x.size:
                for listener in self.listeners:
                    listener.read(x)
        staging = self.staging(total)
        enc = self.submission.outside_pass()
        pos = 0
        for x in arrays:
            if x.size:
                enc.copy_buffer_to_buffer(x.buffer, x.offset, staging, pos, x.size * 4)
                self.submission.in_flight.add(x.pooled.uid)
                pos += x.size * 4
        self.flush()
        return self.map_read(staging, total)

    def read_raw(self, pooled: PooledBuffer, nbytes: int) -> np.ndarray:
        """uint8 copy of the first ``nbytes`` of a pooled buffer (tests: guard regions)."""
        staging = self.staging(nbytes)
        self.submission.outside_pass().copy_buffer_to_buffer(pooled.buffer, 0, staging, 0, nbytes)
        self.flush()
        return self.map_read(staging, nbytes)

    def read_async(self, x: DeviceArray) -> ReadHandle:
        """Submit a copy of ``x`` into its own staging buffer now; map when ``result()`` is called
        (a split array is read now, part by part, and the handle holds the result)."""
        parts = parts_of(x)
        if parts is not None:
            return _DoneHandle(self._read_split(x, parts))  # type: ignore[return-value]
        if x.size:
            for listener in self.listeners:
                listener.read(x)
        nbytes = max(4, x.size * 4)
        staging = None
        for i, s in enumerate(self.staging_free):
            if s.size >= nbytes:
                staging = self.staging_free.pop(i)
                break
        if staging is None:
            staging = self._new_staging(max(256, 1 << (nbytes - 1).bit_length()))
        if x.size:
            self.submission.outside_pass().copy_buffer_to_buffer(x.buffer, x.offset, staging, 0, nbytes)
            self.submission.in_flight.add(x.pooled.uid)
        self.flush()
        return ReadHandle(self, staging, x.size * 4, x.shape, x.dtype)

    def synchronize(self, dummy: PooledBuffer) -> None:
        """Submit pending work and wait for the queue to finish (by a tiny readback of ``dummy``)."""
        self.flush()
        staging = self.staging(4)
        try:
            enc = self.device.create_command_encoder()
            enc.copy_buffer_to_buffer(dummy.buffer, 0, staging, 0, 4)
            self.queue.submit([enc.finish()])
            for listener in self.listeners:
                listener.submitted(False)
            staging.map_sync(require_wgpu().MapMode.READ, 0, 4)
            staging.unmap()
        except Exception as exc:
            raise DeviceError(f"synchronize failed: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ timestamps
    @property
    def has_timestamps(self) -> bool:
        """Whether the device was created with the "timestamp-query" feature."""
        return "timestamp-query" in self.features

    def gpu_time(self, fn: Any) -> tuple[Any, float]:
        """Run ``fn()`` (which encodes work) and measure it with GPU timestamp queries.

        Pending work is flushed first; every compute pass ``fn`` opens (up to 64) gets
        begin/end timestamp writes; then the work is submitted and the timestamps read back.
        Returns ``(fn's result, milliseconds)``: the sum of the passes' device durations
        (copies and clears outside compute passes are not counted). Benchmarking helper.

        Raises:
            DeviceError: the device was created without the "timestamp-query" feature.
        """
        if not self.has_timestamps:
            raise DeviceError(
                "gpu_time needs a device created with features=['timestamp-query'] "
                f"(this one has {sorted(self.features)})"
            )
        w = require_wgpu()
        sub = self.submission
        if self._ts_set is None:
            self._ts_set = self.device.create_query_set(type=w.QueryType.timestamp, count=2 * TS_MAX_PASSES)
            self._ts_resolve = self.device.create_buffer(
                size=16 * TS_MAX_PASSES, usage=w.BufferUsage.QUERY_RESOLVE | w.BufferUsage.COPY_SRC
            )
        self.flush()
        sub.ts_query, sub.ts_passes = self._ts_set, 0
        try:
            result = fn()
            sub.end_pass()
        finally:
            sub.ts_query = None
        n = sub.ts_passes
        if n == 0:
            self.flush()
            return result, 0.0
        nbytes = 16 * n
        staging = self.staging(nbytes)
        enc = sub.command_encoder()
        enc.resolve_query_set(self._ts_set, 0, 2 * n, self._ts_resolve, 0)
        enc.copy_buffer_to_buffer(self._ts_resolve, 0, staging, 0, nbytes)
        self.flush()
        ts = self.map_read(staging, nbytes).view(np.uint64).reshape(n, 2).astype(np.int64)
        return result, float(np.sum(ts[:, 1] - ts[:, 0])) / 1e6
