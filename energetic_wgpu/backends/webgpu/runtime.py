"""The wgpu runtime: adapter selection, device, buffer pool, lazy command encoding, caches.

One :class:`Runtime` per backend object. Every op calls :meth:`Runtime.dispatch`, which
appends a dispatch to one pending compute pass of one pending command encoder; nothing is
submitted until results are needed (:meth:`Runtime.read`, :meth:`Runtime.flush`,
:meth:`Runtime.synchronize`). Storage buffers come from a pool keyed by (rounded size,
usage); an array's buffer goes back to the pool when the array is garbage-collected, but
only after the next submit if a pending command may still use it (a ``write_buffer`` into a
recycled buffer runs at submit, *before* the encoder's commands).

Host path: a dispatch identical to an earlier one (same kernel, binding buffers, workgroup
count and uniform bytes) replays a cached record (pipeline, bind group, workgroup counts),
dropped when one of its buffers is destroyed; consecutive dispatches share one compute pass
(only copies, clears and readbacks end it) and a pass skips redundant set_pipeline /
set_bind_group calls. With ``trace`` set to a list every dispatch takes the full path and is
appended to it.
"""

from __future__ import annotations

import collections
import heapq
import math
import struct
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

from ...environment import ensure_xdg_runtime_dir
from ...errors import BackendUnavailable, DeviceError, DeviceLimitError, InvalidArgumentError, ShaderCompileError
from ...shaders import shader_source
from .kernels import KERNELS, KernelSpec, kernel

__all__ = [
    "Runtime",
    "DeviceArray",
    "Counters",
    "list_adapters",
    "DEFAULT_LIMITS",
    "ReadHandle",
]

try:  # imported lazily so that a missing wgpu gives BackendUnavailable with the reason
    import wgpu  # type: ignore

    _WGPU_IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the environment
    wgpu = None  # type: ignore
    _WGPU_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

#: WebGPU's default limits (the portable baseline requested with limits="default").
DEFAULT_LIMITS: dict[str, int] = {
    "max-texture-dimension-1d": 8192,
    "max-texture-dimension-2d": 8192,
    "max-texture-dimension-3d": 2048,
    "max-texture-array-layers": 256,
    "max-bind-groups": 4,
    "max-bind-groups-plus-vertex-buffers": 24,
    "max-bindings-per-bind-group": 1000,
    "max-dynamic-uniform-buffers-per-pipeline-layout": 8,
    "max-dynamic-storage-buffers-per-pipeline-layout": 4,
    "max-sampled-textures-per-shader-stage": 16,
    "max-samplers-per-shader-stage": 16,
    "max-storage-buffers-per-shader-stage": 8,
    "max-storage-textures-per-shader-stage": 4,
    "max-uniform-buffers-per-shader-stage": 12,
    "max-uniform-buffer-binding-size": 65536,
    "max-storage-buffer-binding-size": 134217728,
    "min-uniform-buffer-offset-alignment": 256,
    "min-storage-buffer-offset-alignment": 256,
    "max-vertex-buffers": 8,
    "max-buffer-size": 268435456,
    "max-vertex-attributes": 16,
    "max-vertex-buffer-array-stride": 2048,
    "max-inter-stage-shader-variables": 16,
    "max-color-attachments": 8,
    "max-color-attachment-bytes-per-sample": 32,
    "max-compute-workgroup-storage-size": 16384,
    "max-compute-invocations-per-workgroup": 256,
    "max-compute-workgroup-size-x": 256,
    "max-compute-workgroup-size-y": 256,
    "max-compute-workgroup-size-z": 64,
    "max-compute-workgroups-per-dimension": 65535,
}

_MAX_WG_PER_DIM = 65535
_UNIFORM_CACHE_SIZE = 4096
_BIND_GROUP_CACHE_SIZE = 8192
_RECORD_CACHE_SIZE = 8192  # cached dispatch records (see Runtime.dispatch)
_TS_MAX_PASSES = 64  # compute passes one gpu_time call can time
_MAX_FREE_BYTES = 512 * 2**20  # pooled but unused bytes kept before destroying buffers

_DTYPES = {
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.int32): np.dtype(np.int32),
    np.dtype(np.uint32): np.dtype(np.uint32),
    np.dtype(np.bool_): np.dtype(np.bool_),
}


def _snake(key: str) -> str:
    return key.replace("-", "_")


def _require_wgpu() -> Any:
    if wgpu is None:
        raise BackendUnavailable(f"wgpu cannot be imported: {_WGPU_IMPORT_ERROR}")
    return wgpu


def _enumerate() -> list[Any]:
    w = _require_wgpu()
    ensure_xdg_runtime_dir()  # before the drivers load: Mesa complains without it
    try:
        return list(w.gpu.enumerate_adapters_sync())
    except Exception as exc:
        raise BackendUnavailable(f"wgpu could not enumerate adapters: {type(exc).__name__}: {exc}") from exc


def _adapter_dict(index: int, adapter: Any) -> dict[str, Any]:
    info = adapter.info
    return {
        "index": index,
        "name": info.get("device", ""),
        "description": info.get("description", ""),
        "backend_type": info.get("backend_type", ""),
        "adapter_type": info.get("adapter_type", ""),
        "vendor": info.get("vendor", ""),
        "limits": {_snake(k): v for k, v in dict(adapter.limits).items()},
        "features": sorted(str(f) for f in adapter.features),
    }


def list_adapters() -> list[dict[str, Any]]:
    """Every adapter wgpu offers here: dicts with index, name, description, backend_type,
    adapter_type, limits (snake_case keys) and features (sorted).

    Raises:
        BackendUnavailable: wgpu cannot be imported or cannot enumerate adapters.
    """
    return [_adapter_dict(i, a) for i, a in enumerate(_enumerate())]


def _describe_adapters(adapters: list[Any]) -> str:
    if not adapters:
        return "no adapters found"
    return "; ".join(
        f"[{i}] {a.info.get('device', '?')} ({a.info.get('backend_type', '?')}, {a.info.get('description', '')})"
        for i, a in enumerate(adapters)
    )


def _select_adapter(selector: Any) -> Any:
    w = _require_wgpu()
    ensure_xdg_runtime_dir()  # before the drivers load: Mesa complains without it
    if selector is None:
        try:
            adapter = w.gpu.request_adapter_sync(power_preference="high-performance")
        except Exception as exc:
            raise BackendUnavailable(f"wgpu found no adapter: {type(exc).__name__}: {exc}") from exc
        if adapter is None:
            raise BackendUnavailable("wgpu found no adapter")
        return adapter
    adapters = _enumerate()
    if isinstance(selector, bool) or not isinstance(selector, (int, np.integer, str)):
        raise InvalidArgumentError(
            f"adapter must be None, an int index or a str matched against the adapter's name, "
            f"description or backend type, got {selector!r}"
        )
    if isinstance(selector, str) and selector.strip().isdigit():
        selector = int(selector.strip())  # "1" from a command line or config means index 1, not a substring
    if isinstance(selector, (int, np.integer)):
        if not 0 <= int(selector) < len(adapters):
            raise BackendUnavailable(
                f"adapter index {selector} out of range; adapters found: {_describe_adapters(adapters)}"
            )
        return adapters[int(selector)]
    needle = selector.strip().lower()
    for a in adapters:
        info = a.info
        hay = [str(info.get(k, "")).lower() for k in ("device", "description", "backend_type", "vendor")]
        if any(needle and needle in h for h in hay):
            return a
    raise BackendUnavailable(f"no adapter matches {selector!r}; adapters found: {_describe_adapters(adapters)}")


# --------------------------------------------------------------------------- counters


@dataclass
class Counters:
    """Work counters of one runtime (tests assert a steady-state step allocates nothing)."""

    submits: int = 0
    dispatches: int = 0
    buffers_created: int = 0
    bind_groups_created: int = 0
    pipelines_created: int = 0
    shader_modules_created: int = 0
    uniform_buffers_created: int = 0
    bytes_uploaded: int = 0
    bytes_read_back: int = 0
    readbacks: int = 0

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, key: str) -> int:
        return getattr(self, key)


# --------------------------------------------------------------------------- buffers


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
    every pooled buffer strongly (``Runtime._live_buffers``), so even when an array dies in a
    garbage cycle its buffer is not part of the garbage and is returned intact."""

    __slots__ = ("pooled", "runtime", "bkey", "__weakref__")

    #: byte offset of the array in its buffer (a whole-buffer allocation starts at 0)
    offset = 0

    def __init__(self, runtime: "Runtime", pooled: PooledBuffer) -> None:
        self.pooled = pooled
        self.runtime = runtime
        self.bkey: Any = pooled.uid  # the binding's part of a dispatch record key

    def __del__(self) -> None:
        try:
            self.runtime._release(self.pooled)
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
        self.runtime = owner.runtime
        self.offset = offset
        self.bind_size = bind_size
        self.bkey = (owner.pooled.uid, offset, bind_size)

    def __del__(self) -> None:
        pass


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

    def __repr__(self) -> str:
        off = f"+{self.offset}" if self.offset else ""
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype.name}, buffer#{self.pooled.uid}{off})"


_new_device_array = object.__new__


class ReadHandle:
    """An asynchronous readback: the copy is submitted; :meth:`result` maps and returns it."""

    def __init__(self, runtime: "Runtime", staging: Any, nbytes: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._runtime = runtime
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
                raw = self._runtime._map_read(self._staging, self._nbytes)
            self._value = _decode(raw, self._shape, self._dtype)
            self._runtime._staging_free.append(self._staging)
            self._staging = None
        return self._value


def _decode(raw: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype == np.bool_:
        return raw.view(np.uint32).reshape(shape) != 0
    return raw.view(dtype).reshape(shape)


def _round_size(nbytes: int) -> int:
    """Pool bucket of a request: >= 16 bytes, multiple of 256 up to 1 MiB, then of 64 KiB."""
    n = max(16, nbytes)
    step = 256 if n <= 2**20 else 65536
    return -(-n // step) * step


# --------------------------------------------------------------------------- runtime


class _Record:
    """What one dispatch encodes: pipeline, bind group (with its uniform buffer), workgroup
    counts, and the uids of every buffer it binds (pending until the next submit)."""

    __slots__ = ("spec", "pipeline", "bind_group", "gx", "gy", "uids", "uniform_key")

    def __init__(
        self, spec: KernelSpec, pipeline: Any, bind_group: Any, gx: int, gy: int, uids: tuple[int, ...], uniform_key: Any
    ) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.bind_group = bind_group
        self.gx = gx
        self.gy = gy
        self.uids = uids
        self.uniform_key = uniform_key


def _raw_pass_calls() -> tuple[Any, ...] | None:
    """(compute pass class, SetPipeline, SetBindGroup, DispatchWorkgroups, NULL) of wgpu-py's
    wgpu-native backend, or None where that backend's internals are not as expected (then the
    public methods are used). ``ENERGETIC_WGPU_RAW_PASS=0`` turns it off."""
    import os

    if os.environ.get("ENERGETIC_WGPU_RAW_PASS", "1") == "0":
        return None
    try:
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


def _uniform_key(data: bytes) -> bytes:
    """The key of ``data`` in the uniform cache (padded to 16 bytes, as ``Runtime.uniform``)."""
    pad = (-len(data)) % 16
    data = bytes(data) + b"\0" * pad if pad or not data else bytes(data)
    return data if data else b"\0" * 16



class Runtime:
    """Device, pool, caches and the pending command encoder of one wgpu backend."""

    STORAGE_USAGE = 0  # set in __init__ (needs wgpu)

    def __init__(self, adapter: Any = None, limits: str = "default", features: Sequence[str] = ()) -> None:
        w = _require_wgpu()
        if limits not in ("default", "adapter"):
            raise InvalidArgumentError(f"limits must be 'default' or 'adapter', got {limits!r}")
        if isinstance(features, str) or not all(isinstance(f, str) for f in features):
            raise InvalidArgumentError(f"features must be a sequence of feature names (str), got {features!r}")
        self.adapter = _select_adapter(adapter)
        self.adapter_info = dict(self.adapter.info)
        adapter_features = {str(f) for f in self.adapter.features}
        missing = [f for f in features if f not in adapter_features]
        if missing:
            raise BackendUnavailable(
                f"adapter {self.adapter_info.get('device', '?')} ({self.adapter_info.get('backend_type', '?')}) "
                f"lacks the requested features {missing}"
            )
        adapter_limits = dict(self.adapter.limits)
        if limits == "default":
            required = {k: v for k, v in DEFAULT_LIMITS.items() if k in adapter_limits}
            # never ask for more than the adapter has (a "max" limit) or less alignment freedom
            for k, v in list(required.items()):
                if k.startswith("max") and adapter_limits[k] < v:
                    required[k] = adapter_limits[k]
                if k.startswith("min") and adapter_limits[k] > v:
                    required[k] = adapter_limits[k]
        else:
            required = None
        try:
            self.device = self.adapter.request_device_sync(
                required_limits=required, required_features=list(dict.fromkeys(features))
            )
        except Exception as exc:
            raise BackendUnavailable(
                f"could not create a device on {self.adapter_info.get('device', '?')}: {type(exc).__name__}: {exc}"
            ) from exc
        self.queue = self.device.queue
        self.limits: dict[str, int] = {_snake(k): int(v) for k, v in dict(self.device.limits).items()}
        self.limits_mode = limits
        #: the optional features this device was created with (opt-in: none by default)
        self.features: frozenset[str] = frozenset(str(f) for f in self.device.features)
        self.STORAGE_USAGE = w.BufferUsage.STORAGE | w.BufferUsage.COPY_SRC | w.BufferUsage.COPY_DST
        self.counters = Counters()
        #: set to a list to record every dispatch as a JSON-able dict
        self.trace: list[dict[str, Any]] | None = None

        self._uid = 0
        # every pooled buffer not yet destroyed, held strongly: an array collected in a
        # reference cycle must find its buffer intact (the cycle's finalizers run in any order,
        # so the GPUBuffer must not be part of the garbage that _Allocation.__del__ returns)
        self._live_buffers: dict[int, PooledBuffer] = {}
        self._buckets: dict[int, int] = {}  # nbytes -> pool bucket size (sizes within limits)
        # free lists are min-heaps by uid: the buffer handed out depends only on which buffers
        # are free, not on the order they were released in, so a repeated step gets the same
        # buffers (and therefore the same cached bind groups) every time
        self._free: dict[tuple[int, int], list[tuple[int, PooledBuffer]]] = collections.defaultdict(list)
        self._free_bytes = 0
        self._deferred: list[PooledBuffer] = []
        self._pending_uids: set[int] = set()
        self._encoder: Any = None
        self._pass: Any = None
        # the pipeline and bind group last set in the open pass (redundant sets are skipped)
        self._pass_pipeline: Any = None
        self._pass_bind_group: Any = None
        # dispatch records by (spec, threads, workgroups, uniform bytes, binding uids), and
        # the keys of the records that bind each buffer uid (dropped when it is destroyed)
        self._records: dict[tuple[Any, ...], _Record] = {}
        self._records_by_uid: dict[int, dict[tuple[Any, ...], None]] = {}
        self._raw_pass_calls = _raw_pass_calls()
        self._modules: dict[tuple[str, ...], Any] = {}
        self._pipelines: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._layouts: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._uniforms: collections.OrderedDict[bytes, PooledBuffer] = collections.OrderedDict()
        self._bind_groups: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()
        self._staging: Any = None
        self._staging_size = 0
        self._staging_free: list[Any] = []
        self._dummy: PooledBuffer | None = None
        # timestamp queries (see gpu_time): the query set being written, passes timed so far
        self._ts_query: Any = None
        self._ts_passes = 0
        self._ts_set: Any = None
        self._ts_resolve: Any = None

    # ------------------------------------------------------------------ info
    def describe(self) -> str:
        info = self.adapter_info
        return f"wgpu: {info.get('device', '?')} via {info.get('backend_type', '?')}"

    @property
    def max_binding_size(self) -> int:
        return self.limits["max_storage_buffer_binding_size"]

    # ------------------------------------------------------------------ pool
    def check_size(self, nbytes: int, what: str) -> None:
        """Refuse (never split) an array larger than maxStorageBufferBindingSize."""
        limit = self.max_binding_size
        if nbytes > limit:
            raise DeviceLimitError(
                f"{what} needs {nbytes} bytes, over the device's maxStorageBufferBindingSize = {limit} bytes "
                f"({self.limits_mode} limits); arrays are not split across buffers: use a smaller batch or graph"
            )

    def _new_buffer(self, size: int, usage: int) -> PooledBuffer:
        try:
            buf = self.device.create_buffer(size=size, usage=usage)
        except Exception as exc:
            raise DeviceError(f"could not create a buffer of {size} bytes: {type(exc).__name__}: {exc}") from exc
        self._uid += 1
        self.counters.buffers_created += 1
        pooled = PooledBuffer(buf, size, usage, self._uid)
        self._live_buffers[pooled.uid] = pooled
        return pooled

    def acquire(self, nbytes: int, what: str = "array") -> PooledBuffer:
        """A storage buffer of at least ``nbytes`` (rounded) bytes, from the pool if possible."""
        self.check_size(nbytes, what)
        size = min(_round_size(nbytes), max(16, -(-self.max_binding_size // 4) * 4))
        key = (size, self.STORAGE_USAGE)
        lst = self._free.get(key)
        if lst:
            self._free_bytes -= size
            return heapq.heappop(lst)[1]
        return self._new_buffer(size, self.STORAGE_USAGE)

    def _release(self, pooled: PooledBuffer) -> None:
        if pooled.uid in self._pending_uids:
            self._deferred.append(pooled)
        else:
            self._to_free(pooled)

    def _to_free(self, pooled: PooledBuffer) -> None:
        if self._free_bytes + pooled.size > _MAX_FREE_BYTES:
            self._destroy(pooled)
            return
        heapq.heappush(self._free[(pooled.size, pooled.usage)], (pooled.uid, pooled))
        self._free_bytes += pooled.size

    def _destroy(self, pooled: PooledBuffer) -> None:
        uid = pooled.uid
        self._live_buffers.pop(uid, None)
        for key in [k for k in self._bind_groups if uid in k[2]]:
            del self._bind_groups[key]
        for rkey in self._records_by_uid.pop(uid, ()):
            rec = self._records.pop(rkey, None)
            if rec is not None:
                for u in rec.uids:
                    if u != uid:
                        keys = self._records_by_uid.get(u)
                        if keys is not None:
                            keys.pop(rkey, None)
        try:
            pooled.buffer.destroy()
        except Exception:  # pragma: no cover
            pass

    def trim(self) -> None:
        """Destroy every pooled buffer that is not in use."""
        for lst in self._free.values():
            for _, p in lst:
                self._destroy(p)
        self._free.clear()
        self._free_bytes = 0

    def new_array(self, backend: Any, shape: tuple[int, ...], dtype: Any, what: str = "array") -> DeviceArray:
        """An uninitialized device array.

        The hot path of every op output: the pool bucket of a byte count is cached (sizes
        that passed :meth:`check_size`), and the array is built without re-normalizing."""
        dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
        shape = tuple(map(int, shape))
        nbytes = math.prod(shape) * 4
        size = self._buckets.get(nbytes)
        if size is None:
            self.check_size(nbytes, f"{what} of shape {shape} ({dt.name})")
            size = min(_round_size(nbytes), max(16, -(-self.max_binding_size // 4) * 4))
            if len(self._buckets) > 4096:
                self._buckets.clear()
            self._buckets[nbytes] = size
        lst = self._free.get((size, self.STORAGE_USAGE))
        if lst:
            self._free_bytes -= size
            pooled = heapq.heappop(lst)[1]
        else:
            pooled = self._new_buffer(size, self.STORAGE_USAGE)
        arr = _new_device_array(DeviceArray)
        arr.backend = backend
        arr._alloc = _Allocation(self, pooled)
        arr.shape = shape
        arr.dtype = dt
        return arr

    def dummy(self) -> PooledBuffer:
        """A 16-byte buffer bound where an optional input is absent."""
        if self._dummy is None:
            self._dummy = self._new_buffer(256, self.STORAGE_USAGE)
        return self._dummy

    @property
    def offset_alignment(self) -> int:
        """The device's minStorageBufferOffsetAlignment (256 by default)."""
        return int(self.limits.get("min_storage_buffer_offset_alignment", 256))

    @staticmethod
    def view_bind_size(nbytes: int) -> int:
        """Bytes bound for a view of ``nbytes`` bytes: rounded up to 16 (vec4 kernels read whole
        vec4s; a region of a packed buffer always has this room)."""
        return max(16, -(-nbytes // 16) * 16)

    def view(self, base: DeviceArray, offset: int, shape: tuple[int, ...], dtype: Any = np.float32) -> DeviceArray:
        """A DeviceArray at byte ``offset`` of ``base``'s buffer (``base`` may itself be a view;
        offsets compose). ``offset`` must be a multiple of :attr:`offset_alignment`; the view's
        bound range (:meth:`view_bind_size`) must lie in the buffer. The view keeps the buffer
        alive."""
        dt = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        owner = base._alloc
        offset = int(offset) + owner.offset
        if type(owner) is _ViewAllocation:
            owner = owner.owner
        align = self.offset_alignment
        if offset < 0 or offset % align:
            raise InvalidArgumentError(f"view offset {offset} is not a non-negative multiple of {align}")
        bind = self.view_bind_size(math.prod(shape) * 4)
        if offset + bind > owner.pooled.size:
            raise InvalidArgumentError(
                f"view of shape {shape} at offset {offset} ({bind} bytes bound) exceeds the buffer's "
                f"{owner.pooled.size} bytes"
            )
        arr = _new_device_array(DeviceArray)
        arr.backend = base.backend
        arr._alloc = _ViewAllocation(owner, offset, bind)
        arr.shape = shape
        arr.dtype = dt
        return arr

    @staticmethod
    def _binding(x: Any) -> tuple[PooledBuffer, int, int]:
        """(pooled buffer, byte offset, bound size) of a binding."""
        if isinstance(x, DeviceArray):
            a = x._alloc
            if type(a) is _ViewAllocation:
                return a.pooled, a.offset, a.bind_size
            return a.pooled, 0, a.pooled.size
        if isinstance(x, PooledBuffer):
            return x, 0, x.size
        raise TypeError(f"a binding must be a DeviceArray or PooledBuffer, got {type(x).__name__}")

    # ------------------------------------------------------------------ upload
    def upload(self, pooled: PooledBuffer, data: np.ndarray, offset: int = 0) -> None:
        """Write ``data`` (contiguous, 4-byte elements) at byte ``offset`` of ``pooled``.

        ``queue.write_buffer`` runs at the next submit before the encoder's commands, so a
        buffer that pending commands use is flushed first."""
        raw = np.ascontiguousarray(data)
        if raw.nbytes == 0:
            return
        if pooled.uid in self._pending_uids:
            self.flush()
        try:
            self.queue.write_buffer(pooled.buffer, int(offset), raw)
        except Exception as exc:
            raise DeviceError(f"upload of {raw.nbytes} bytes failed: {type(exc).__name__}: {exc}") from exc
        self.counters.bytes_uploaded += raw.nbytes

    def write(self, x: DeviceArray, data: np.ndarray) -> None:
        """Upload ``data`` (x.size 4-byte elements) into ``x`` (at its offset)."""
        raw = np.ascontiguousarray(data).reshape(-1)
        if raw.size != x.size or raw.itemsize != 4:
            raise InvalidArgumentError(f"write: need {x.size} 4-byte elements, got {raw.size} of {raw.dtype}")
        self.upload(x.pooled, raw, x.offset)

    def uniform(self, data: bytes) -> PooledBuffer:
        """An immutable uniform buffer with ``data`` (padded to 16 bytes), cached by content."""
        pad = (-len(data)) % 16
        data = bytes(data) + b"\0" * pad if pad or not data else bytes(data)
        if not data:
            data = b"\0" * 16
        hit = self._uniforms.get(data)
        if hit is not None:
            self._uniforms.move_to_end(data)
            return hit
        w = _require_wgpu()
        usage = w.BufferUsage.UNIFORM | w.BufferUsage.COPY_DST
        pooled = self._new_buffer(len(data), usage)
        self.counters.uniform_buffers_created += 1
        self.queue.write_buffer(pooled.buffer, 0, data)
        self._uniforms[data] = pooled
        if len(self._uniforms) > _UNIFORM_CACHE_SIZE:
            _, old = self._uniforms.popitem(last=False)
            if old.uid in self._pending_uids:
                self._deferred_destroy(old)
            else:
                self._destroy(old)
        return pooled

    def _deferred_destroy(self, pooled: PooledBuffer) -> None:
        # a uniform evicted while pending: destroy after the next submit
        pooled.usage = -1  # marks "destroy, do not pool"
        self._deferred.append(pooled)

    # ------------------------------------------------------------------ shaders & pipelines
    def shader_module(self, sources: tuple[str, ...], code: str | None = None) -> Any:
        """The shader module of the concatenated ``sources`` (cached). ``code`` overrides the
        text (tests feed bad WGSL this way)."""
        key = sources if code is None else sources + ("\0code", code)
        mod = self._modules.get(key)
        if mod is not None:
            return mod
        text = code if code is not None else "\n".join(shader_source(s) for s in sources)
        name = "+".join(sources)
        try:
            mod = self.device.create_shader_module(label=name, code=text)
        except Exception as exc:
            raise ShaderCompileError(f"shader {name} failed to compile:\n{exc}") from exc
        self.counters.shader_modules_created += 1
        self._modules[key] = mod
        return mod

    def _layout(self, spec: KernelSpec) -> tuple[Any, Any]:
        key = spec.bindings
        hit = self._layouts.get(key)
        if hit is not None:
            return hit
        w = _require_wgpu()
        kinds = {
            "uniform": w.BufferBindingType.uniform,
            "read": w.BufferBindingType.read_only_storage,
            "read_write": w.BufferBindingType.storage,
        }
        entries = [
            {"binding": i, "visibility": w.ShaderStage.COMPUTE, "buffer": {"type": kinds[b]}}
            for i, b in enumerate(spec.bindings)
            if b is not None
        ]
        bgl = self.device.create_bind_group_layout(entries=entries)
        pl = self.device.create_pipeline_layout(bind_group_layouts=[bgl])
        self._layouts[key] = (bgl, pl)
        return bgl, pl

    def pipeline(self, spec: KernelSpec, constants: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """(pipeline, bind group layout) of ``spec`` with override ``constants`` (cached)."""
        consts = spec.override_constants()
        if constants:
            consts.update(constants)
        key = (spec.name, spec.sources, spec.entry_point, spec.bindings, tuple(sorted(consts.items())))
        hit = self._pipelines.get(key)
        if hit is not None:
            return hit
        module = self.shader_module(spec.sources)
        bgl, pl = self._layout(spec)
        try:
            pipe = self.device.create_compute_pipeline(
                label=spec.name,
                layout=pl,
                compute={"module": module, "entry_point": spec.entry_point, "constants": consts},
            )
        except Exception as exc:
            raise ShaderCompileError(
                f"pipeline {spec.name} (entry point {spec.entry_point} of {'+'.join(spec.sources)}) "
                f"failed to build:\n{exc}"
            ) from exc
        self.counters.pipelines_created += 1
        self._pipelines[key] = (pipe, bgl)
        return pipe, bgl

    # ------------------------------------------------------------------ encoding
    def _ensure_encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = self.device.create_command_encoder()
        return self._encoder

    def _ensure_pass(self) -> Any:
        if self._pass is None:
            self._pass_pipeline = self._pass_bind_group = None  # a new pass has no state
            if self._ts_query is not None and self._ts_passes < _TS_MAX_PASSES:
                i = self._ts_passes
                self._ts_passes += 1
                self._pass = self._ensure_encoder().begin_compute_pass(
                    timestamp_writes={
                        "query_set": self._ts_query,
                        "beginning_of_pass_write_index": 2 * i,
                        "end_of_pass_write_index": 2 * i + 1,
                    }
                )
            else:
                self._pass = self._ensure_encoder().begin_compute_pass()
        return self._pass

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
        w = _require_wgpu()
        if self._ts_set is None:
            self._ts_set = self.device.create_query_set(type=w.QueryType.timestamp, count=2 * _TS_MAX_PASSES)
            self._ts_resolve = self.device.create_buffer(
                size=16 * _TS_MAX_PASSES, usage=w.BufferUsage.QUERY_RESOLVE | w.BufferUsage.COPY_SRC
            )
        self.flush()
        self._ts_query, self._ts_passes = self._ts_set, 0
        try:
            result = fn()
            self._end_pass()
        finally:
            self._ts_query = None
        n = self._ts_passes
        if n == 0:
            self.flush()
            return result, 0.0
        nbytes = 16 * n
        staging = self._get_staging(nbytes)
        enc = self._ensure_encoder()
        enc.resolve_query_set(self._ts_set, 0, 2 * n, self._ts_resolve, 0)
        enc.copy_buffer_to_buffer(self._ts_resolve, 0, staging, 0, nbytes)
        self.flush()
        ts = self._map_read(staging, nbytes).view(np.uint64).reshape(n, 2).astype(np.int64)
        return result, float(np.sum(ts[:, 1] - ts[:, 0])) / 1e6

    def _end_pass(self) -> None:
        if self._pass is not None:
            self._pass.end()
            self._pass = None

    @staticmethod
    def _as_pooled(x: Any) -> PooledBuffer:
        if isinstance(x, DeviceArray):
            return x.pooled
        if isinstance(x, PooledBuffer):
            return x
        raise TypeError(f"a binding must be a DeviceArray or PooledBuffer, got {type(x).__name__}")

    @staticmethod
    def fold(groups: int) -> tuple[int, int]:
        """Workgroup counts (gx, gy) covering ``groups`` with gx, gy <= 65,535."""
        if groups <= _MAX_WG_PER_DIM:
            return groups, 1
        gy = -(-groups // _MAX_WG_PER_DIM)
        gx = -(-groups // gy)
        if gy > _MAX_WG_PER_DIM:
            raise DeviceLimitError(
                f"a dispatch of {groups} workgroups exceeds maxComputeWorkgroupsPerDimension^2 = {_MAX_WG_PER_DIM}^2"
            )
        return gx, gy

    def dispatch(
        self,
        kernel_name: str,
        bindings: Sequence[Any],
        *,
        threads: int | None = None,
        workgroups: int | None = None,
        uniforms: bytes | Sequence[Any] = b"",
        constants: dict[str, Any] | None = None,
    ) -> None:
        """Encode one dispatch of ``kernel_name`` into the pending encoder.

        Args:
            bindings: the storage buffers (DeviceArray or PooledBuffer) in the order of the
                spec's storage bindings; each is bound whole (its pooled size), a view
                DeviceArray as (buffer, its offset, its bound size).
            threads: number of invocations wanted (workgroups = ceil(threads / WG)); or
            workgroups: number of workgroups wanted (workgroup-per-item kernels).
                Either is folded into (gx, gy) when > 65,535; 0 skips the dispatch.
            uniforms: the uniform struct: raw bytes, or a sequence of scalars packed as 4 bytes
                each (python int / np.uint32 -> u32, np.int32 -> i32, float / np.float32 -> f32),
                zero-padded to 16 bytes. Cached by content.
            constants: extra override constants (``WG`` comes from the spec).
        """
        # fast path: a dispatch identical to an earlier one (same kernel, buffers, workgroup
        # count and uniform bytes) replays its cached record: (pipeline, bind group, gx, gy)
        # were derived from exactly these inputs, so the encoded commands are the same.
        # Tracing and override constants take the full path.
        if constants is None and self.trace is None:
            try:
                if type(uniforms) is tuple:
                    ubytes = pack_uniforms_fast(uniforms)
                elif isinstance(uniforms, (bytes, bytearray)):
                    ubytes = bytes(uniforms)
                else:
                    ubytes = pack_uniforms_fast(tuple(uniforms))
                uids = tuple([b._alloc.bkey if type(b) is DeviceArray else b.uid for b in bindings])
            except Exception:  # bad arguments: the full path raises the documented errors
                uids = None
            if uids is not None:
                rkey = (kernel_name, threads, workgroups, ubytes, uids)
                rec = self._records.get(rkey)
                # the spec check: a kernel re-registered under the same name is rebuilt
                if rec is not None and rec.spec is KERNELS.get(kernel_name):
                    self._encode(rec)
                    return
                self._dispatch_full(kernel_name, bindings, threads, workgroups, ubytes, None, rkey)
                return
        self._dispatch_full(kernel_name, bindings, threads, workgroups, uniforms, constants, None)

    def _encode(self, rec: "_Record") -> None:
        """set_pipeline (if changed), set_bind_group (if changed), dispatch_workgroups."""
        cpass = self._pass
        if cpass is None:
            cpass = self._ensure_pass()
        pipe, bg = rec.pipeline, rec.bind_group
        raw = self._raw_pass_calls
        if raw is not None and type(cpass) is raw[0]:
            # wgpu-native's C entry points directly (what wgpu-py's methods call, minus the
            # per-call error-capture wrapper: pass commands are validated at pass end / finish,
            # which still go through wgpu-py and raise)
            handle = cpass._internal
            if pipe is not self._pass_pipeline:
                raw[1](handle, pipe._internal)
                self._pass_pipeline = pipe
                self._pass_bind_group = None
            if bg is not self._pass_bind_group:
                raw[2](handle, 0, bg._internal, 0, raw[4])
                self._pass_bind_group = bg
            raw[3](handle, rec.gx, rec.gy, 1)
        else:
            if pipe is not self._pass_pipeline:
                cpass.set_pipeline(pipe)
                self._pass_pipeline = pipe
                self._pass_bind_group = None
            if bg is not self._pass_bind_group:
                cpass.set_bind_group(0, bg)
                self._pass_bind_group = bg
            cpass.dispatch_workgroups(rec.gx, rec.gy, 1)
        self.counters.dispatches += 1
        self._pending_uids.update(rec.uids)
        if rec.uniform_key is not None:
            self._uniforms.move_to_end(rec.uniform_key)  # keep the uniform buffer's LRU place

    def _dispatch_full(
        self,
        kernel_name: str,
        bindings: Sequence[Any],
        threads: int | None,
        workgroups: int | None,
        uniforms: bytes | Sequence[Any],
        constants: dict[str, Any] | None,
        rkey: tuple[Any, ...] | None,
    ) -> None:
        spec = kernel(kernel_name)
        slots = spec.storage_bindings
        if len(bindings) != len(slots):
            raise InvalidArgumentError(
                f"kernel {kernel_name} takes {len(slots)} storage bindings, got {len(bindings)}"
            )
        wg = int((constants or {}).get("WG", spec.workgroup_size))
        if (threads is None) == (workgroups is None):
            raise InvalidArgumentError("dispatch: give exactly one of threads= or workgroups=")
        groups = -(-int(threads) // wg) if threads is not None else int(workgroups)  # type: ignore[arg-type]
        if groups <= 0:
            return
        gx, gy = self.fold(groups)
        ubytes = pack_uniforms(uniforms) if not isinstance(uniforms, (bytes, bytearray)) else bytes(uniforms)
        pipe, bgl = self.pipeline(spec, constants)
        bound = [self._binding(b) for b in bindings]
        ubuf = self.uniform(ubytes) if spec.uniform_binding is not None else None
        key_entries: list[tuple[int, int, int]] = []
        entries = []
        if ubuf is not None:
            entries.append({"binding": spec.uniform_binding, "resource": {"buffer": ubuf.buffer, "offset": 0, "size": ubuf.size}})
            key_entries.append((ubuf.uid, 0, ubuf.size))
        for slot, (p, off, size) in zip(slots, bound):
            entries.append({"binding": slot, "resource": {"buffer": p.buffer, "offset": off, "size": size}})
            key_entries.append((p.uid, off, size))
        bg_key = (spec.name, id(bgl), tuple(u for u, _, _ in key_entries), tuple(key_entries))
        bg = self._bind_groups.get(bg_key)
        if bg is None:
            try:
                bg = self.device.create_bind_group(layout=bgl, entries=entries)
            except Exception as exc:
                raise DeviceError(f"bind group for kernel {kernel_name} rejected: {exc}") from exc
            self.counters.bind_groups_created += 1
            self._bind_groups[bg_key] = bg
            if len(self._bind_groups) > _BIND_GROUP_CACHE_SIZE:
                self._bind_groups.popitem(last=False)
        else:
            self._bind_groups.move_to_end(bg_key)
        all_uids = tuple(u for u, _, _ in key_entries)
        rec = _Record(spec, pipe, bg, gx, gy, all_uids, _uniform_key(ubytes) if ubuf is not None else None)
        self._encode(rec)
        if rkey is not None:
            self._remember(rkey, rec)
        if self.trace is not None:
            self.trace.append(
                {
                    "kernel": spec.name,
                    "entry_point": spec.entry_point,
                    "sources": list(spec.sources),
                    "workgroups": [gx, gy, 1],
                    "constants": dict(sorted({**spec.override_constants(), **(constants or {})}.items())),
                    "uniforms": ubytes.hex(),
                    "bindings": [
                        {"binding": s, "buffer": p.uid, "offset": off, "size": size}
                        for s, (p, off, size) in zip(slots, bound)
                    ],
                }
            )

    def _remember(self, rkey: tuple[Any, ...], rec: "_Record") -> None:
        """Cache a dispatch record; index it by every buffer it binds (see :meth:`_destroy`)."""
        self._records[rkey] = rec
        for u in rec.uids:
            self._records_by_uid.setdefault(u, {})[rkey] = None
        if len(self._records) > _RECORD_CACHE_SIZE:
            old_key = next(iter(self._records))
            old = self._records.pop(old_key)
            for u in old.uids:
                keys = self._records_by_uid.get(u)
                if keys is not None:
                    keys.pop(old_key, None)
                    if not keys:
                        del self._records_by_uid[u]

    def copy_buffer(self, src: Any, dst: Any, nbytes: int) -> None:
        """Encode a buffer-to-buffer copy of ``nbytes`` (multiple of 4) from ``src``'s offset
        to ``dst``'s offset (0 for whole-buffer arrays)."""
        if nbytes <= 0:
            return
        (s, so, _), (d, do, _) = self._binding(src), self._binding(dst)
        self._end_pass()
        self._ensure_encoder().copy_buffer_to_buffer(s.buffer, so, d.buffer, do, nbytes)
        self._pending_uids.update((s.uid, d.uid))

    def clear_range(self, x: Any) -> tuple[PooledBuffer, int, int]:
        """(pooled, offset, size) that :meth:`clear` zero-fills: the whole buffer of a
        whole-buffer array, the view's bound range of a view."""
        return self._binding(x)

    def clear(self, x: Any) -> None:
        """Encode zero-filling of ``x``'s whole buffer (of its bound range for a view)."""
        p, off, size = self._binding(x)
        self._end_pass()
        self._ensure_encoder().clear_buffer(p.buffer, off, size)
        self._pending_uids.add(p.uid)

    # ------------------------------------------------------------------ submit / errors
    def _reset_pending(self) -> None:
        self._pass = None
        self._encoder = None
        self._pending_uids.clear()
        deferred, self._deferred = self._deferred, []
        for p in deferred:
            if p.usage == -1:
                self._destroy(p)
            else:
                self._to_free(p)

    def abandon(self) -> None:
        """Drop the pending encoder without submitting (after an error)."""
        try:
            if self._pass is not None:
                self._pass.end()
        except Exception:
            pass
        self._reset_pending()

    def flush(self) -> None:
        """Submit the pending encoder (if any). Errors -> DeviceError, pending work dropped."""
        if self._encoder is None:
            return
        try:
            self._end_pass()
            cmd = self._encoder.finish()
            self.queue.submit([cmd])
        except Exception as exc:
            self.abandon()
            raise DeviceError(f"the device rejected the pending commands: {type(exc).__name__}: {exc}") from exc
        self.counters.submits += 1
        self._reset_pending()

    def synchronize(self) -> None:
        """Submit pending work and wait for the queue to finish (by a tiny readback)."""
        self.flush()
        staging = self._get_staging(4)
        try:
            enc = self.device.create_command_encoder()
            enc.copy_buffer_to_buffer(self.dummy().buffer, 0, staging, 0, 4)
            self.queue.submit([enc.finish()])
            self.counters.submits += 1
            staging.map_sync(_require_wgpu().MapMode.READ, 0, 4)
            staging.unmap()
        except Exception as exc:
            raise DeviceError(f"synchronize failed: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ readback
    def _get_staging(self, nbytes: int) -> Any:
        if self._staging is None or self._staging_size < nbytes:
            w = _require_wgpu()
            size = max(256, 1 << (max(nbytes, 1) - 1).bit_length())
            if self._staging is not None:
                self._staging.destroy()
            self._staging = self.device.create_buffer(size=size, usage=w.BufferUsage.MAP_READ | w.BufferUsage.COPY_DST)
            self._staging_size = size
            self.counters.buffers_created += 1
        return self._staging

    def _map_read(self, staging: Any, nbytes: int) -> np.ndarray:
        w = _require_wgpu()
        try:
            staging.map_sync(w.MapMode.READ, 0, nbytes)
            try:
                view = staging.read_mapped(0, nbytes, copy=False)
                raw = np.frombuffer(view, dtype=np.uint8, count=nbytes).copy()
            finally:
                staging.unmap()
        except Exception as exc:
            raise DeviceError(f"readback of {nbytes} bytes failed: {type(exc).__name__}: {exc}") from exc
        self.counters.bytes_read_back += nbytes
        self.counters.readbacks += 1
        return raw

    def read(self, x: DeviceArray) -> np.ndarray:
        """Flush, copy ``x`` to the reused staging buffer, map, one numpy copy, unmap."""
        dtype = x.dtype
        if x.size == 0:
            return np.zeros(x.shape, dtype=dtype)
        nbytes = x.size * 4
        staging = self._get_staging(nbytes)
        self._end_pass()
        self._ensure_encoder().copy_buffer_to_buffer(x.buffer, x.offset, staging, 0, nbytes)
        self._pending_uids.add(x.pooled.uid)
        self.flush()
        return _decode(self._map_read(staging, nbytes), x.shape, dtype)

    def read_many(self, arrays: Sequence[DeviceArray]) -> np.ndarray:
        """uint8 bytes of ``arrays`` one after the other: each copied at its offset into the
        reused staging buffer, one submit, one map (a single readback)."""
        total = sum(x.size * 4 for x in arrays)
        if total == 0:
            return np.zeros(0, dtype=np.uint8)
        staging = self._get_staging(total)
        self._end_pass()
        enc = self._ensure_encoder()
        pos = 0
        for x in arrays:
            if x.size:
                enc.copy_buffer_to_buffer(x.buffer, x.offset, staging, pos, x.size * 4)
                self._pending_uids.add(x.pooled.uid)
                pos += x.size * 4
        self.flush()
        return self._map_read(staging, total)

    def read_raw(self, pooled: PooledBuffer, nbytes: int) -> np.ndarray:
        """uint8 copy of the first ``nbytes`` of a pooled buffer (tests: guard regions)."""
        staging = self._get_staging(nbytes)
        self._end_pass()
        self._ensure_encoder().copy_buffer_to_buffer(pooled.buffer, 0, staging, 0, nbytes)
        self.flush()
        return self._map_read(staging, nbytes)

    def read_async(self, x: DeviceArray) -> ReadHandle:
        """Submit a copy of ``x`` into its own staging buffer now; map when ``result()`` is called."""
        w = _require_wgpu()
        nbytes = max(4, x.size * 4)
        staging = None
        for i, s in enumerate(self._staging_free):
            if s.size >= nbytes:
                staging = self._staging_free.pop(i)
                break
        if staging is None:
            size = max(256, 1 << (nbytes - 1).bit_length())
            staging = self.device.create_buffer(size=size, usage=w.BufferUsage.MAP_READ | w.BufferUsage.COPY_DST)
            self.counters.buffers_created += 1
        if x.size:
            self._end_pass()
            self._ensure_encoder().copy_buffer_to_buffer(x.buffer, x.offset, staging, 0, nbytes)
            self._pending_uids.add(x.pooled.uid)
        self.flush()
        return ReadHandle(self, staging, x.size * 4, x.shape, x.dtype)


def pack_uniforms(values: Sequence[Any]) -> bytes:
    """Pack scalars as 4-byte little-endian fields (int -> u32, float -> f32), padded to 16 bytes."""
    out = bytearray()
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            out += np.uint32(int(v)).tobytes()
        elif isinstance(v, np.int32):
            out += v.tobytes()
        elif isinstance(v, (int, np.integer)):
            iv = int(v)
            if not 0 <= iv < 2**32:
                raise InvalidArgumentError(f"uniform value {iv} does not fit in u32")
            out += np.uint32(iv).tobytes()
        elif isinstance(v, (float, np.floating)):
            out += np.float32(v).tobytes()
        else:
            raise TypeError(f"uniform values must be int or float scalars, got {type(v).__name__}")
    out += b"\0" * ((-len(out)) % 16)
    return bytes(out) if out else b"\0" * 16


# struct formats by the exact types of a uniform tuple (None: not packable by struct, use
# pack_uniforms). struct gives the same bytes as pack_uniforms: "I"/"i" are the 4-byte
# little-endian integers, and "f" rounds a double to float32 exactly as np.float32() does (a C
# cast); the cases where they would differ (an int out of u32 range, a float that overflows
# float32) make struct raise, and pack_uniforms then decides (it raises or gives inf).
_UNIFORM_CODES: dict[type, str] = {
    int: "I",
    bool: "I",
    np.uint32: "I",
    np.int64: "I",
    np.uint64: "I",
    np.int32: "i",
    float: "f",
    np.float32: "f",
    np.float64: "f",
}
_UNIFORM_FORMATS: dict[tuple[type, ...], Any] = {}


def _uniform_format(types: tuple[type, ...]) -> Any:
    codes = [_UNIFORM_CODES.get(t) for t in types]
    if not types or None in codes:
        fmt = None
    else:
        pad = (-len(codes)) % 4
        fmt = struct.Struct("<" + "".join(codes) + "x" * (4 * pad))
    _UNIFORM_FORMATS[types] = fmt
    return fmt


def pack_uniforms_fast(values: Sequence[Any]) -> bytes:
    """:func:`pack_uniforms` with a cached ``struct`` format per tuple of value types
    (the same bytes; ~10x faster)."""
    types = tuple(map(type, values))
    fmt = _UNIFORM_FORMATS.get(types, False)
    if fmt is False:
        fmt = _uniform_format(types)
    if fmt is not None:
        try:
            return fmt.pack(*values)
        except (struct.error, OverflowError):
            pass
    return pack_uniforms(values)
