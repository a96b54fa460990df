"""Device arrays: pooled GPU buffers, the allocations that return them, and views.

A :class:`DeviceArray` holds an allocation: a whole pooled buffer (returned to the pool when
the last array using it is collected) or a region of another allocation's buffer (a view, made
by ``Runtime.view`` / ``backend.pack``). :func:`binding_of` gives what a dispatch binds.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from ...errors import DeviceLimitError, InvalidArgumentError

__all__ = ["PooledBuffer", "DeviceArray", "binding_of", "decode", "new_device_array", "make_view", "view_bind_size",
           "Allocation", "ViewAllocation", "PartsAllocation", "parts_of", "range_view", "binding_ranges"]


class PooledBuffer:
    """A GPU storage buffer owned by the pool. ``uid`` is unique for the runtime's lifetime
    (bind groups are cached by it, never by ``id()``)."""

    __slots__ = ("buffer", "size", "usage", "uid", "__weakref__")

    def __init__(self, buffer: Any, size: int, usage: int, uid: int) -> None:
        self.buffer = buffer
        self.size = size
        self.usage = usage
        self.uid = uid


class _Allocation:
    """Shared by a DeviceArray and its reshaped views; returns the buffer when collected.

    ``__del__`` rather than ``weakref.finalize``: an allocation is made for every op output,
    and a finalizer object costs several microseconds to create and run. The runtime holds
    every pooled buffer strongly (``BufferPool.live``), so even when an array dies in a
    garbage cycle its buffer is not part of the garbage and is returned intact."""

    __slots__ = ("pooled", "pool", "bkey", "__weakref__")

    #: byte offset of the array in its buffer (a whole-buffer allocation starts at 0)
    offset = 0

    def __init__(self, pool: Any, pooled: PooledBuffer) -> None:
        self.pooled = pooled
        self.pool = pool  # a BufferPool (pool.py)
        self.bkey: Any = pooled.uid  # the binding's part of a dispatch record key

    def __del__(self) -> None:
        try:
            self.pool.release(self.pooled)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class _ViewAllocation(_Allocation):
    """A region (``offset``, ``bind_size`` bytes) of another allocation's buffer.

    Holds the owner allocation, so the pooled buffer goes back to the pool only when the
    owner array and every view of it are gone; a view itself releases nothing."""

    __slots__ = ("owner", "offset", "bind_size")

    def __init__(self, owner: _Allocation, offset: int, bind_size: int) -> None:
        self.owner = owner
        self.pooled = owner.pooled
        self.pool = owner.pool
        self.offset = offset
        self.bind_size = bind_size
        self.bkey = (owner.pooled.uid, offset, bind_size)

    def __del__(self) -> None:
        pass


class _PartsAllocation:
    """An array past the buffer size limit in use: consecutive element ranges, each in its own
    pooled buffer (``parts``: one whole-buffer :class:`_Allocation` each, which returns its
    buffer when this allocation and every view into it are gone).

    Part ``i`` holds elements ``starts[i] .. starts[i] + counts[i]`` at byte ``pads[i]`` of its
    buffer, ``pads[i] = 4 * starts[i] % alignment``: an element lies at the same offset modulo
    the storage offset alignment as in one contiguous buffer, so a range bound from the
    aligned-down offset before it (:func:`range_view`) starts the same number of elements
    into its binding either way. Nothing binds such an array whole (:attr:`pooled` raises):
    the ops that take one bind ranges inside a part (batch_chunks.py)."""

    __slots__ = ("parts", "starts", "counts", "pads", "__weakref__")

    offset = 0

    def __init__(self, parts: list[_Allocation], starts: list[int], counts: list[int], pads: list[int]) -> None:
        self.parts = parts
        self.starts = starts
        self.counts = counts
        self.pads = pads

    @property
    def pooled(self) -> PooledBuffer:
        total = 4 * (self.starts[-1] + self.counts[-1])
        raise DeviceLimitError(
            f"an array of {total} bytes split over {len(self.parts)} buffers (past the buffer size limit in use) "
            f"cannot be bound whole by this op: the router's ops, the losses, step metrics, edge_flow, sum_squares "
            f"and AdamW take such arrays (in ranges); read it back with to_numpy"
        )

    @property
    def bkey(self) -> Any:
        return self.pooled  # raises: never part of a dispatch record

    def part_array(self, backend: Any, i: int, dtype: np.dtype) -> "DeviceArray":
        """Part ``i``'s whole buffer as a flat DeviceArray (from byte 0, pad included)."""
        pooled = self.parts[i].pooled
        return new_device_array(backend, self.parts[i], (pooled.size // 4,), dtype)

    def locate(self, elem0: int, count: int) -> int:
        """The part holding elements ``elem0 .. elem0 + count`` (all of them)."""
        i = bisect.bisect_right(self.starts, elem0) - 1
        if i < 0 or elem0 + count > self.starts[i] + self.counts[i]:
            raise DeviceLimitError(
                f"elements {elem0} .. {elem0 + count} of a split array cross the boundary of its buffers at "
                f"{self.starts[i] + self.counts[i] if i >= 0 else 0} (the array was made under another binding "
                f"limit than the one in use: make it again under this one)"
            )
        return i


class DeviceArray:
    """A device-resident array of one wgpu backend.

    Attributes:
        shape: tuple of ints; dtype: numpy dtype (float32, int32, uint32 or bool — bools live
        on the device as u32 0/1); size, nbytes (logical, as numpy would report), backend.
        buffer: the ``GPUBuffer`` it lives in, at byte ``offset`` (0 unless the array is a
        view made by :meth:`Runtime.view` / ``backend.pack``; the buffer may be larger than
        ``nbytes``: pool rounding, other views).

    ``np.asarray(device_array)`` raises TypeError: reading back is explicit
    (``backend.to_numpy(x)``), because it synchronizes with the device.
    """

    __slots__ = ("shape", "dtype", "backend", "_alloc", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, backend: Any, alloc: _Allocation, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.backend = backend
        self._alloc = alloc
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * 4 if self.dtype == np.bool_ else self.size * self.dtype.itemsize

    @property
    def pooled(self) -> PooledBuffer:
        return self._alloc.pooled

    @property
    def buffer(self) -> Any:
        return self._alloc.pooled.buffer

    @property
    def offset(self) -> int:
        """Byte offset of the array's data in :attr:`buffer`."""
        return self._alloc.offset

    @property
    def is_view(self) -> bool:
        """Whether the array is a region of a buffer it shares (see ``backend.pack``)."""
        return type(self._alloc) is _ViewAllocation

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self.shape[0]

    def reshape(self, *shape: Any) -> "DeviceArray":
        """A view with another shape sharing the same device buffer (-1 allowed once)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(s) for s in shape)
        if shape.count(-1) > 1:
            raise InvalidArgumentError(f"reshape: at most one -1, got {shape}")
        if -1 in shape:
            rest = math.prod(s for s in shape if s != -1)
            if rest == 0 or self.size % rest:
                raise InvalidArgumentError(f"cannot reshape size {self.size} into {shape}")
            shape = tuple(self.size // rest if s == -1 else s for s in shape)
        if math.prod(shape) != self.size:
            raise InvalidArgumentError(f"cannot reshape array of shape {self.shape} into {shape}")
        return DeviceArray(self.backend, self._alloc, shape, self.dtype)

    def to_numpy(self) -> np.ndarray:
        return self.backend.to_numpy(self)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(
            "a DeviceArray lives on the GPU; use backend.to_numpy(x) (or energetic_wgpu.to_numpy(x)) to read it back"
        )

    @property
    def is_split(self) -> bool:
        """Whether the array lives in several buffers (past the buffer size limit; see
        :func:`parts_of`): it is read back, written and bound in ranges, never bound whole."""
        return type(self._alloc) is _PartsAllocation

    def __repr__(self) -> str:
        if self.is_split:
            return f"DeviceArray(shape={self.shape}, dtype={self.dtype.name}, {len(self._alloc.parts)} buffers)"
        off = f"+{self.offset}" if self.offset else ""
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype.name}, buffer#{self.pooled.uid}{off})"


_new_device_array = object.__new__


def new_device_array(backend: Any, alloc: _Allocation, shape: tuple[int, ...], dtype: np.dtype) -> DeviceArray:
    """A DeviceArray built without re-normalizing ``shape`` (ints) and ``dtype`` (np.dtype):
    the hot path of every op output."""
    arr = _new_device_array(DeviceArray)
    arr.backend = backend
    arr._alloc = alloc
    arr.shape = shape
    arr.dtype = dtype
    return arr


def view_bind_size(nbytes: int) -> int:
    """Bytes bound for a view of ``nbytes`` bytes: rounded up to 16 (vec4 kernels read whole
    vec4s; a region of a packed buffer always has this room)."""
    return max(16, -(-nbytes // 16) * 16)


def make_view(base: DeviceArray, offset: int, shape: tuple[int, ...], dtype: Any, align: int) -> DeviceArray:
    """A DeviceArray at byte ``offset`` of ``base``'s buffer (``base`` may itself be a view;
    offsets compose). ``offset`` must be a multiple of ``align`` (the device's
    minStorageBufferOffsetAlignment); the view's bound range (:func:`view_bind_size`) must lie
    in the buffer. The view keeps the buffer alive."""
    dt = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    owner = base._alloc
    offset = int(offset) + owner.offset
    if type(owner) is _ViewAllocation:
        owner = owner.owner
    if offset < 0 or offset % align:
        raise InvalidArgumentError(f"view offset {offset} is not a non-negative multiple of {align}")
    bind = view_bind_size(math.prod(shape) * 4)
    if offset + bind > owner.pooled.size:
        raise InvalidArgumentError(
            f"view of shape {shape} at offset {offset} ({bind} bytes bound) exceeds the buffer's "
            f"{owner.pooled.size} bytes"
        )
    return new_device_array(base.backend, _ViewAllocation(owner, offset, bind), shape, dt)


def parts_of(x: DeviceArray) -> list[tuple[int, int, PooledBuffer, int]] | None:
    """None for an array in one buffer; else (first element, elements, buffer, byte offset in
    it) of each of its parts, in element order."""
    a = x._alloc
    if type(a) is not _PartsAllocation:
        return None
    return [(s, c, p.pooled, pad) for s, c, p, pad in zip(a.starts, a.counts, a.parts, a.pads)]


def range_view(x: DeviceArray, elem0: int, count: int, align: int) -> tuple[DeviceArray, int]:
    """(bindable view, e0): elements ``elem0 .. elem0 + count`` of ``x`` (4-byte elements; one
    buffer or a split array, in which they must lie in one part) bound from the ``align``-ed
    offset at or before them, where they start ``e0`` elements in. ``e0`` does not depend on
    the layout: ``4 * elem0 % align // 4`` plus ``x``'s own offset's share (0 for whole
    buffers and split arrays)."""
    a = x._alloc
    if type(a) is _PartsAllocation:
        i = a.locate(elem0, count)
        local = a.pads[i] + 4 * (elem0 - a.starts[i])
        base_arr = a.part_array(x.backend, i, x.dtype)
        shift = 0
    else:
        local = 4 * elem0
        base_arr = x
        shift = a.offset
    base = (local + shift) // align * align - shift
    e0 = (local - base) // 4
    return make_view(base_arr, base, (e0 + count,), x.dtype, align), e0


def binding_of(x: Any) -> tuple[PooledBuffer, int, int]:
    """(pooled buffer, byte offset, bound size) of a binding: a whole-buffer DeviceArray or a
    PooledBuffer binds the whole buffer, a view its region."""
    if isinstance(x, DeviceArray):
        a = x._alloc
        if type(a) is _ViewAllocation:
            return a.pooled, a.offset, a.bind_size
        return a.pooled, 0, a.pooled.size
    if isinstance(x, PooledBuffer):
        return x, 0, x.size
    raise TypeError(f"a binding must be a DeviceArray or PooledBuffer, got {type(x).__name__}")


def decode(raw: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array of ``shape``/``dtype`` in ``raw`` bytes (uint8; bools are stored as u32)."""
    if dtype == np.bool_:
        return raw.view(np.uint32).reshape(shape) != 0
    return raw.view(dtype).reshape(shape)


Allocation = _Allocation
ViewAllocation = _ViewAllocation
PartsAllocation = _PartsAllocation


def binding_ranges(arrays: Any, binding_bytes: int, align: int) -> list[tuple[int, int]]:
    """(first element, elements) of consecutive ranges covering the 4-byte ``arrays`` (the same
    size; one buffer or split over buffers), each lying in one buffer of every array and
    fitting one binding of ``binding_bytes`` when bound from the ``align``-ed offset before it
    (:func:`range_view`: the same ``e0`` in every array)."""
    n = arrays[0].size
    cuts = sorted({s for a in arrays for s, *_ in (parts_of(a) or [])[1:]} | {n})
    per = (binding_bytes // 16 * 16 - align) // 4
    out, s = [], 0
    for cut in cuts:
        while s < cut:
            count = min(per, cut - s)
            out.append((s, count))
            s += count
    return out
