"""The storage buffer pool: buckets, free lists, deferred release, destruction.

Buffers are keyed by (rounded size, usage). Free lists are min-heaps by uid: the buffer handed
out depends only on which buffers are free, not on the order they were released in, so a
repeated step gets the same buffers (and therefore the same cached bind groups) every time.
Every pooled buffer not yet destroyed is held strongly (:attr:`BufferPool.live`): an array
collected in a reference cycle must find its buffer intact.
"""

from __future__ import annotations

import collections
import heapq
import math
from typing import Any, Callable

import numpy as np

from ...errors import DeviceError, DeviceLimitError
from .arrays import Allocation, DeviceArray, PartsAllocation, PooledBuffer, new_device_array
from .submission import Submission

__all__ = ["BufferPool", "round_size", "MAX_FREE_BYTES"]

#: pooled but unused bytes kept before destroying released buffers
MAX_FREE_BYTES = 512 * 2**20


def round_size(nbytes: int) -> int:
    """Pool bucket of a request: >= 16 bytes, multiple of 256 up to 1 MiB, then of 64 KiB."""
    n = max(16, nbytes)
    step = 256 if n <= 2**20 else 65536
    return -(-n // step) * step


class BufferPool:
    """Creates, recycles and destroys the buffers of one device.

    Args:
        device: the GPUDevice. submission: the pending :class:`Submission` (in-flight uids).
        max_binding_size: the binding limit in use (bytes). limit_desc: (its name, where it
            comes from) for messages, e.g. ("the device's maxStorageBufferBindingSize", "default limits").
        storage_usage: the usage flags of storage buffers.
        emit_created: ``f(pooled, kind)``, called for every buffer created.
    """

    def __init__(self, device: Any, submission: Submission, max_binding_size: int, limit_desc: tuple[str, str],
                 storage_usage: int, emit_created: Callable[[Any, str], None]) -> None:
        self.device = device
        self.submission = submission
        self.max_binding_size = max_binding_size
        self.limit_desc = limit_desc
        #: the device's maxBufferSize (arrays written in bound ranges may reach it)
        self.max_buffer_size = max_binding_size
        self.storage_usage = storage_usage
        self.emit_created = emit_created
        self.live: dict[int, PooledBuffer] = {}
        self.free: dict[tuple[int, int], list[tuple[int, PooledBuffer]]] = collections.defaultdict(list)
        self.free_bytes = 0
        #: called with a uid when its buffer is destroyed (caches that name buffers by uid)
        self.on_destroy: list[Callable[[int], None]] = []
        #: uid -> purpose ("graph", "parameters", ...) of buffers an owner tagged (:meth:`tag`);
        #: dropped when the buffer goes back to the pool or is destroyed
        self.tags: dict[int, str] = {}
        self._uid = 0
        self._buckets: dict[int, int] = {}  # nbytes -> pool bucket size (sizes within limits)
        self._dummy: PooledBuffer | None = None

    def check_size(self, nbytes: int, what: str) -> None:
        """Refuse (never split) an array larger than the binding limit in use."""
        limit = self.max_binding_size
        if nbytes > limit:
            raise DeviceLimitError(
                f"{what} needs {nbytes} bytes, over {self.limit_desc[0]} = {limit} bytes ({self.limit_desc[1]}); "
                f"arrays are not split across buffers: use a smaller batch or graph"
            )

    def forget_sizes(self) -> None:
        """Drop the cache of sizes that passed :meth:`check_size` (after a limit change)."""
        self._buckets.clear()

    def tag(self, pooled: PooledBuffer, purpose: str) -> None:
        """Count ``pooled`` under ``purpose`` in the memory report until it is released."""
        self.tags[pooled.uid] = purpose

    def new_buffer(self, size: int, usage: int, kind: str = "storage") -> PooledBuffer:
        """A new buffer (not from the free lists), live until destroyed."""
        try:
            buf = self.device.create_buffer(size=size, usage=usage)
        except Exception as exc:
            raise DeviceError(f"could not create a buffer of {size} bytes: {type(exc).__name__}: {exc}") from exc
        self._uid += 1
        pooled = PooledBuffer(buf, size, usage, self._uid)
        self.live[pooled.uid] = pooled
        self.emit_created(pooled, kind)
        return pooled

    def new_array(self, backend: Any, shape: tuple[int, ...], dtype: Any, what: str = "array") -> DeviceArray:
        """An uninitialized device array of ``shape`` (4 bytes per element).

        The hot path of every op output: the pool bucket of a byte count is cached (sizes
        that passed :meth:`check_size`), and the array is built without re-normalizing."""
        dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        shape = tuple(map(int, shape))
        nbytes = math.prod(shape) * 4
        size = self._buckets.get(nbytes)
        if size is None:
            self.check_size(nbytes, f"{what} of shape {shape} ({dt.name})")
            size = min(round_size(nbytes), max(16, -(-self.max_binding_size // 4) * 4))
            if len(self._buckets) > 4096:
                self._buckets.clear()
            self._buckets[nbytes] = size
        return self._array_in(size, backend, shape, dt)

    def new_large_array(self, backend: Any, shape: tuple[int, ...], dtype: Any, what: str = "array") -> DeviceArray:
        """An uninitialized array that may exceed the binding limit (up to the device's
        maxBufferSize, :attr:`max_buffer_size`): an op output written in bound ranges (batch
        chunks) and read back whole; no kernel binds it whole (the encoder refuses that)."""
        dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        shape = tuple(map(int, shape))
        nbytes = math.prod(shape) * 4
        if nbytes <= self.max_binding_size:
            return self.new_array(backend, shape, dt, what)
        if nbytes > self.max_buffer_size:
            raise DeviceLimitError(
                f"{what} of shape {shape} ({dt.name}) needs {nbytes} bytes, over the device's maxBufferSize = "
                f"{self.max_buffer_size} bytes ({self.limit_desc[1]}); use a smaller batch or graph"
            )
        size = min(round_size(nbytes), self.max_buffer_size // 4 * 4)
        return self._array_in(size, backend, shape, dt)

    def new_split_array(self, backend: Any, shape: tuple[int, ...], dtype: Any, quantum: int, align: int,
                        what: str = "array", cuts: list[int] | None = None) -> DeviceArray:
        """An uninitialized array of any size: :meth:`new_large_array` up to the buffer size
        limit in use, past it a split array (``arrays.PartsAllocation``): parts of a whole
        number of ``quantum`` elements each (e.g. the rows of a batch chunk, so that a chunk
        lies in one part), as many per buffer as fit with the ``align``-ment pad; or, with
        ``cuts`` (element offsets, the first 0: e.g. edge windows), parts that start at cuts
        only, as many consecutive ranges between cuts per buffer as fit.

        Raises:
            DeviceLimitError: 2^32 elements or more (the kernels count in u32), or one quantum
                does not fit a buffer.
        """
        dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        shape = tuple(map(int, shape))
        total = math.prod(shape)
        if total * 4 <= self.max_buffer_size:
            return self.new_large_array(backend, shape, dt, what)
        if total >= 2**32:
            raise DeviceLimitError(
                f"{what} of shape {shape} ({dt.name}) has {total} elements, past 2^32 (the kernels' u32 element "
                f"range): use a smaller batch or graph"
            )
        if cuts is None:
            # parts start at multiples of the quantum: no pad at all when its bytes are aligned
            slack = 0 if 4 * quantum % align == 0 else align
            per = (self.max_buffer_size - slack) // (4 * quantum) * quantum
            if per < quantum:
                raise DeviceLimitError(
                    f"{what} of shape {shape} ({dt.name}) is split over buffers of at most {self.max_buffer_size} "
                    f"bytes ({self.limit_desc[1]}), but one part of {quantum} elements (and its {align}-byte "
                    f"alignment) does not fit one: use a smaller graph"
                )
            spans = [(s, min(per, total - s)) for s in range(0, total, per)]
        else:
            spans = self._spans_at(cuts, total, align)
        parts, starts, counts, pads = [], [], [], []
        for s, count in spans:
            pad = 4 * s % align
            size = min(round_size(-(-(pad + 4 * count) // 16) * 16), self.max_buffer_size // 16 * 16)
            parts.append(Allocation(self, self._take(size)))
            starts.append(s)
            counts.append(count)
            pads.append(pad)
        return new_device_array(backend, PartsAllocation(parts, starts, counts, pads), shape, dt)

    def _spans_at(self, cuts: list[int], total: int, align: int) -> list[tuple[int, int]]:
        """(first element, elements) of parts starting at ``cuts`` only, each as long as fits a
        buffer with its pad."""
        bounds = sorted(set(int(c) for c in cuts if 0 < c < total)) + [total]
        spans: list[tuple[int, int]] = []
        s = 0
        for i, b in enumerate(bounds):
            nxt = bounds[i + 1] if i + 1 < len(bounds) else None
            if nxt is not None and 4 * s % align + 4 * (nxt - s) <= self.max_buffer_size:
                continue  # the next range fits this part too
            if 4 * s % align + 4 * (b - s) > self.max_buffer_size:
                raise DeviceLimitError(
                    f"elements {s} .. {b} ({4 * (b - s)} bytes) must lie in one buffer, over the buffer size limit "
                    f"of {self.max_buffer_size} bytes"
                )
            spans.append((s, b - s))
            s = b
        return spans

    def _array_in(self, size: int, backend: Any, shape: tuple[int, ...], dt: np.dtype) -> DeviceArray:
        """A DeviceArray in a storage buffer of ``size`` bytes (:meth:`_take`)."""
        return new_device_array(backend, Allocation(self, self._take(size)), shape, dt)

    def _take(self, size: int) -> PooledBuffer:
        """A storage buffer of ``size`` bytes: a pooled one (lowest uid first) or a new one."""
        lst = self.free.get((size, self.storage_usage))
        if lst:
            self.free_bytes -= size
            return heapq.heappop(lst)[1]
        return self.new_buffer(size, self.storage_usage)

    def dummy(self) -> PooledBuffer:
        """A small buffer bound where an optional input is absent."""
        if self._dummy is None:
            self._dummy = self.new_buffer(256, self.storage_usage)
        return self._dummy

    @property
    def dummy_uid(self) -> int | None:
        """The uid of the dummy buffer (None until one is made)."""
        return None if self._dummy is None else self._dummy.uid

    def release(self, pooled: PooledBuffer) -> None:
        """An allocation is gone: pool its buffer now, or after the submit if in flight."""
        if self.tags:
            self.tags.pop(pooled.uid, None)
        if pooled.uid in self.submission.in_flight:
            self.submission.deferred.append(pooled)
        else:
            self._to_free(pooled)

    def recycle(self, deferred: list[PooledBuffer]) -> None:
        """After a submit: pool (or destroy, usage -1) the buffers deferred while in flight."""
        for p in deferred:
            if p.usage == -1:
                self.destroy(p)
            else:
                self._to_free(p)

    def _to_free(self, pooled: PooledBuffer) -> None:
        if self.free_bytes + pooled.size > MAX_FREE_BYTES:
            self.destroy(pooled)
            return
        heapq.heappush(self.free[(pooled.size, pooled.usage)], (pooled.uid, pooled))
        self.free_bytes += pooled.size

    def destroy(self, pooled: PooledBuffer) -> None:
        """Destroy the buffer now; caches naming it are told (:attr:`on_destroy`)."""
        uid = pooled.uid
        self.live.pop(uid, None)
        self.tags.pop(uid, None)
        for forget in self.on_destroy:
            forget(uid)
        try:
            pooled.buffer.destroy()
        except Exception:  # pragma: no cover
            pass

    def trim(self) -> None:
        """Destroy every pooled buffer that is not in use."""
        for lst in self.free.values():
            for _, p in lst:
                self.destroy(p)
        self.free.clear()
        self.free_bytes = 0
