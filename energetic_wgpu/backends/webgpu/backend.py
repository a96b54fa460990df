"""``WgpuBackend``: the forward ops as WGSL compute shaders through wgpu-py.

Every op encodes dispatches into the runtime's pending command encoder and returns
``DeviceArray`` objects at once; nothing is submitted until a result is read
(:meth:`WgpuBackend.to_numpy`) or :meth:`WgpuBackend.synchronize` is called.

Degree strategies (SMALL = ``kernels.SMALL_DEGREE_MAX`` = 256):

* ``edge_probs`` (the Router's forward), ``segment_softmax`` and ``segment_topk``: one dispatch
  of ``edge_probs.wgsl`` over the graph's degree bins (``graph_data.DegreeBins``): segments of
  degree 1..16 one thread each, 17..256 a group of 32 lanes each (2 per workgroup of 64); larger
  ones (a second dispatch, only when there are any) a workgroup of 256 each (top-k by an 8-bit
  radix select). ``edge_probs`` computes the logits in the
  same pass (q/k rows read as vec4) and never stores them; the other two read their input
  logits instead.
* ``energy_scatter``: a gather over the reverse (CSC) index; nodes of in-degree <= SMALL run
  one thread per (node, chunk of 8 batch rows) after a transpose of the energies to
  node-major [N, ceil(B/4)] vec4 (node_major.py), larger ones one workgroup of 256 per
  (b, node). The router's multi-step forward and backward keep that node-major state
  between steps (``scatter_state``, ``scatter_step``, ``scatter_step_backward``).
* ``step_metrics`` and ``sum_squares``: two-pass fixed-order reductions (per-workgroup
  partials, then one workgroup).
* Batch chunks (batch_chunks.py): when the [B, N] state is over one binding, the router's
  forward and backward, ``energy_scatter(_backward)``, the losses, ``edge_flow`` and
  ``step_metrics`` run per chunk of batch rows (the [B, N] arrays one buffer each, bound as
  row ranges), bit-identical to the unsplit run.

All results are bit-identical run to run (no atomics on floats, fixed summation orders).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any, Iterator, Sequence

import numpy as np

from ...errors import DeviceLimitError, InvalidArgumentError, ShapeError
from ...graph import Graph
from ..auto import is_software_adapter
from ..base import Backend, check_purpose
from . import batch_chunks, edge_windows, node_rows, ops_backward, ops_forward, ops_train, sumsq
from .graph_data import GraphData, ptr_block, upload_graph
from .kernels import CPU_THREAD_DEGREE_MAX, REDUCE_ITEMS, THREAD_DEGREE_MAX
from .arrays import binding_ranges, parts_of, range_view
from .packed import PackedArrays
from .runtime import DeviceArray, Runtime

__all__ = ["WgpuBackend"]

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_REDUCE_SPAN = 256 * REDUCE_ITEMS  # elements covered by one reduction workgroup


class WgpuBackend(PackedArrays, Backend):
    """The wgpu backend (float32 only).

    Args:
        adapter: None (wgpu's default adapter), an int index into :func:`list_adapters`, or a
            case-insensitive substring of the adapter's device name, description or backend
            type ("vulkan", "opengl", "llvmpipe").
        limits: "default" requests WebGPU's default limits (portable: what every browser
            grants); "adapter" requests the adapter's maxima.
        dtype: must be "float32".
        features: optional wgpu features to request (opt-in, none by default), e.g.
            ``["timestamp-query"]`` for :meth:`Runtime.gpu_time` in the benchmarks.
        max_binding_bytes: None (the device's maxStorageBufferBindingSize), or a smaller
            binding size limit in bytes (a multiple of 256, >= 256) used for every size
            decision, e.g. to exercise size limits at small sizes in tests.
        degree_bins: how segments are spread over lanes by degree (docs/kernels.md):
            "gpu" (one thread per segment up to degree 16, a 32-lane group up to 256, a
            workgroup above), "cpu" (one thread per segment up to degree 32: on a CPU adapter,
            where lanes are SIMD lanes and workgroup barriers are expensive), or
            "auto" (default: "cpu" on a CPU/software adapter, else "gpu"). Settable later as
            :attr:`degree_bins`. Results agree within float32 rounding across the two.

    Raises:
        BackendUnavailable: wgpu is missing, or no adapter matches (the message lists them).
        InvalidArgumentError: a bad ``limits``, ``dtype`` or ``max_binding_bytes`` (not an
            int multiple of 256, or above the device's limit).

    Arrays larger than the binding limit in use (128 MiB with default limits) are refused
    with :class:`DeviceLimitError`, except arrays given to :meth:`asarray`, :meth:`edge_flow`'s
    output and the router's [B, N] energies, targets and gradients (one buffer each up to the
    device's maxBufferSize, several buffers of whole batch chunks past it; the router's
    forward, backward and losses run over them in batch chunks: batch_chunks.py), packed
    arrays (:meth:`pack`: the Router's parameters and AdamW's moments), which are split past
    one binding (packed.py), and the [E] arrays of a graph past one binding, cut into edge
    windows that every graph op and the Router (forward, backward, metrics, AdamW) run over
    (edge_windows.py).
    """

    name = "wgpu"

    def __init__(
        self, adapter: Any = None, limits: str = "default", dtype: Any = "float32", features: Sequence[str] = (),
        max_binding_bytes: Any = None, degree_bins: str = "auto",
    ) -> None:
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise InvalidArgumentError(f"dtype must be 'float32' for the wgpu backend, got {dtype!r}") from exc
        if dt != np.float32:
            raise InvalidArgumentError(f"dtype must be 'float32' for the wgpu backend, got {dt.name!r}")
        self.dtype = np.dtype(np.float32)
        self.runtime = Runtime(adapter=adapter, limits=limits, features=features, max_binding_bytes=max_binding_bytes)
        self._graphs: "weakref.WeakKeyDictionary[Graph, GraphData]" = weakref.WeakKeyDictionary()
        # (weak ref to the graph, its data) of the last lookup: WeakKeyDictionary.get builds a
        # weak reference per call
        self._last_graph: tuple[Any, GraphData] | None = None
        #: node_major.py's never-written output buffer (made on first use)
        self.node_major_scratch: DeviceArray | None = None
        #: wide_rows.identity's u32 indices 0..count-1, by count (made on first use)
        self.wide_identity: dict[int, DeviceArray] = {}
        self.degree_bins = degree_bins

    # ------------------------------------------------------------------ degree bins
    @property
    def degree_bins(self) -> str:
        """The degree bins in use, "gpu" or "cpu" (see the constructor). Setting it ("auto",
        "gpu" or "cpu") re-bins every graph on its next use."""
        return self._degree_bins

    @degree_bins.setter
    def degree_bins(self, value: str) -> None:
        if value not in ("auto", "gpu", "cpu"):
            raise InvalidArgumentError(f"degree_bins must be 'auto', 'gpu' or 'cpu', got {value!r}")
        if value == "auto":
            value = "cpu" if is_software_adapter(self.runtime.adapter_info) else "gpu"
        if value != getattr(self, "_degree_bins", value):
            self._graphs.clear()
            self._last_graph = None
        self._degree_bins = value

    @property
    def thread_degree_max(self) -> int:
        """The largest degree served one thread per segment: THREAD_DEGREE_MAX (16, "gpu" bins)
        or CPU_THREAD_DEGREE_MAX (32, "cpu" bins)."""
        return CPU_THREAD_DEGREE_MAX if self._degree_bins == "cpu" else THREAD_DEGREE_MAX

    # ------------------------------------------------------------------ info
    @property
    def limits(self) -> dict[str, int]:
        return self.runtime.limits

    @property
    def counters(self) -> Any:  # type: ignore[override]
        """The runtime's work counters (events.Counters): call it, ``backend.counters()``, for
        a dict {name: int} (submits, dispatches, buffers_created, bytes_uploaded,
        bytes_read_back, and bind groups, pipelines, shader modules, uniform buffers,
        readbacks and compute passes created/run); its attributes are the live values."""
        return self.runtime.counters

    def limits_in_use(self) -> dict[str, Any]:
        """{limits_mode, max_binding_bytes, max_storage_buffer_binding_size, max_buffer_size}:
        "default" (WebGPU's default limits) or "adapter" (the adapter's maxima), the binding
        size limit size decisions use (bytes), and the device's limits."""
        return self.runtime.limits_in_use()

    @contextlib.contextmanager
    def binding_limit(self, max_binding_bytes: Any) -> Iterator[None]:
        """``with backend.binding_limit(n):`` runs its body with the binding limit in use set to
        ``n`` bytes (validated as the constructor's ``max_binding_bytes``; None: the device's),
        restoring the previous limit afterwards; e.g. to exercise size limits at small sizes."""
        old = self.runtime.set_max_binding_bytes(max_binding_bytes)
        try:
            yield
        finally:
            dev = self.runtime.limits["max_storage_buffer_binding_size"]
            self.runtime.set_max_binding_bytes(None if old == dev else old)

    @contextlib.contextmanager
    def buffer_limit(self, max_buffer_bytes: Any) -> Iterator[None]:
        """``with backend.buffer_limit(n):`` runs its body with the buffer size limit in use set
        to ``n`` bytes (None: the device's maxBufferSize; else an int multiple of 256, at most
        the device's; never below the binding limit), restoring the previous setting afterwards.
        Packed arrays (:meth:`pack`) over it are made as one buffer per region; tests use it
        to reach that layout at small sizes."""
        old = self.runtime.set_max_buffer_bytes(max_buffer_bytes)
        try:
            yield
        finally:
            self.runtime.set_max_buffer_bytes(old)

    def memory(self) -> dict[str, int]:
        """Live device bytes by purpose: graph, parameters, optimizer, activations, workspace,
        pool_free and total (ints; buffer sizes, pool rounding included). See
        ``docs/architecture.md`` "Device memory"."""
        return self.runtime.memory()

    def tag_memory(self, arrays: Sequence[Any], purpose: str) -> None:
        """Count the buffers of ``arrays`` (DeviceArrays of this backend; others are ignored)
        under ``purpose`` ("graph", "parameters", "optimizer" or "workspace") in
        :meth:`memory` until they are released."""
        check_purpose(purpose)
        for a in arrays:
            if isinstance(a, DeviceArray) and a.backend is self:
                for *_, pooled, _ in parts_of(a) or [(a.pooled, 0)]:
                    self.runtime.pool.tag(pooled, purpose)

    @property
    def adapter_info(self) -> dict[str, Any]:
        return self.runtime.adapter_info

    def describe(self) -> str:
        return self.runtime.describe()

    def __repr__(self) -> str:
        return f"WgpuBackend({self.describe()!r})"

    # ------------------------------------------------------------------ arrays
    def _target_dtype(self, arr: np.ndarray, dtype: Any) -> np.dtype:
        if dtype is not None:
            dt = np.dtype(dtype)
            if dt.kind == "f":
                return np.dtype(np.float32)
            if dt in (np.dtype(np.int32), np.dtype(np.uint32), np.dtype(np.bool_)):
                return dt
            if dt.kind in "iu":
                return np.dtype(np.int32)
            raise InvalidArgumentError(f"dtype must be float, int32, uint32 or bool on the wgpu backend, got {dt}")
        kind = arr.dtype.kind
        if kind == "f":
            return np.dtype(np.float32)
        if kind == "b":
            return np.dtype(np.bool_)
        if kind in "iu":
            return np.dtype(np.uint32) if arr.dtype == np.uint32 else np.dtype(np.int32)
        raise InvalidArgumentError(
            f"arrays of dtype {arr.dtype} are not supported by the wgpu backend (float, int or bool expected)"
        )

    def _host(self, x: Any, dtype: Any) -> tuple[np.ndarray, np.dtype]:
        """(host array to upload, device dtype) of ``x`` (see :meth:`asarray`)."""
        if isinstance(x, DeviceArray):
            x = x.backend.to_numpy(x)
        elif hasattr(x, "backend") and hasattr(x.backend, "to_numpy") and not isinstance(x, np.ndarray):
            x = x.backend.to_numpy(x)
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise InvalidArgumentError(f"cannot convert {type(x).__name__} to an array: {exc}") from exc
        dt = self._target_dtype(arr, dtype)
        if dt == np.int32 and arr.dtype.kind in "iu" and arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < _I32_MIN or hi > _I32_MAX:
                raise InvalidArgumentError(f"integer values must fit in int32, got range [{lo}, {hi}]")
        if dt == np.uint32 and arr.dtype.kind in "iu" and arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 2**32 - 1:
                raise InvalidArgumentError(f"values must fit in uint32, got range [{lo}, {hi}]")
        host = arr.astype(np.uint32) if dt == np.bool_ else arr.astype(dt, copy=False)
        return host, dt

    def asarray(self, x: Any, dtype: Any = None) -> DeviceArray:
        if isinstance(x, DeviceArray) and x.backend is self and (
            dtype is None or np.dtype(dtype) == x.dtype or (np.dtype(dtype).kind == "f" and x.dtype == np.float32)
        ):
            return x
        host, dt = self._host(x, dtype)
        # past one binding (e.g. [B, N] energies of a batch split into chunks): one buffer up to
        # maxBufferSize (2-D: several past it), bound by ops in ranges
        if host.ndim in (1, 2):  # [B, N] or [E] data: split over buffers past the buffer size limit
            out = batch_chunks.new_rows(self, host.shape, dt, "array")
        else:
            out = self.runtime.pool.new_large_array(self, host.shape, dt)
        self.runtime.write(out, host)
        return out

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, DeviceArray):
            if x.backend is not self:
                return x.backend.to_numpy(x)
            return self.runtime.read(x)
        arr = np.array(x, copy=True)
        if arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        return arr

    def read_packed(self, arrays: Sequence[Any]) -> np.ndarray:
        """float32 1-D: the float ``arrays`` raveled and concatenated, in ONE readback (each
        array is copied into the reused staging buffer; one submit, one map) — or one per
        group of consecutive arrays when together they exceed the buffer size limit in use
        (the staging buffer is one buffer)."""
        devs = [self._dev(a) for a in arrays]
        for a in devs:
            if a.dtype != np.float32:
                raise ShapeError(f"read_packed: arrays must be float32, got {a.dtype}")
        if any(a.is_split for a in devs):  # an array over several buffers: each read on its own
            return np.concatenate([self.runtime.read(a).reshape(-1) for a in devs]) if devs else np.zeros(0, np.float32)
        limit = self.runtime.max_buffer_bytes
        groups: list[list[DeviceArray]] = [[]]
        size = 0
        for a in devs:
            if groups[-1] and size + a.nbytes > limit:
                groups.append([])
                size = 0
            groups[-1].append(a)
            size += a.nbytes
        if len(groups) == 1:
            return self.runtime.read_many(devs).view(np.float32)
        return np.concatenate([self.runtime.read_many(g).view(np.float32) for g in groups])

    def read_async(self, x: DeviceArray) -> Any:
        """Start reading ``x`` back; returns a handle whose ``result()`` gives the numpy array."""
        return self.runtime.read_async(x)

    def is_array(self, x: Any) -> bool:
        return isinstance(x, DeviceArray) and x.backend is self

    def write(self, x: DeviceArray, data: Any) -> None:
        host, _ = self._host(np.asarray(data).reshape(x.shape), x.dtype)
        self.runtime.write(x, host)

    def zeros(self, shape: Any, dtype: Any = None) -> DeviceArray:
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ShapeError(f"shape must be non-negative, got {shape}")
        dt = np.dtype(np.float32) if dtype is None else self._target_dtype(np.zeros(0, dtype=dtype), dtype)
        if len(shape) == 2 and math.prod(shape) * 4 > self.runtime.max_binding_size:
            # [B, N] data past one binding, as asarray makes it (split past the buffer size limit)
            out = batch_chunks.new_rows(self, shape, dt, "array")
            for part in parts_of(out) or [None]:
                self.runtime.clear(out if part is None else part[2])
            return out
        out = self.runtime.new_array(self, shape, dt)
        self.runtime.clear(out)
        return out

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> DeviceArray:
        """An uninitialized device array (for kernels that write every element)."""
        return self.runtime.new_array(self, shape, dtype)  # new_array normalizes both

    def synchronize(self) -> None:
        self.runtime.synchronize()

    def flush(self) -> None:
        """Submit the pending commands without waiting."""
        self.runtime.flush()

    def _dev(self, x: Any, dtype: Any = None) -> DeviceArray:
        return x if isinstance(x, DeviceArray) and x.backend is self else self.asarray(x, dtype)

    def _opt(self, x: Any) -> Any:
        """A bindable buffer for an optional bool input (the runtime's dummy when None)."""
        return self.runtime.dummy() if x is None else self._dev(x)

    # ------------------------------------------------------------------ graph data
    def check_params(self, graph: Graph, dim: int) -> None:
        gd = self.graph_data(graph) if ptr_block(self.runtime, graph.num_nodes) else None
        if gd is not None and gd.ptr_block:  # one row of N past one binding: row by row (wide_rows.py)
            gd.reverse_windows("Router")
        else:  # every forward's scatter: one row of N in one binding (also for a graph uploaded
            batch_chunks.plan(self, 1, graph.num_nodes)  # under a larger limit, which keeps its layout)
        if node_rows.needs_rows(self.runtime, graph.num_nodes, dim):
            node_rows.window_edges(self.runtime, graph.num_nodes, dim)  # before the graph's upload
            node_rows.row_plan(self, graph, self.graph_data(graph), dim)

    def edge_input(self, graph: Graph, x: Any) -> Any:
        gd = self.graph_data(graph)
        if gd.windows is None:
            return x
        return edge_windows.in_windows(self, gd, self._dev(x), "edge array")

    def graph_data(self, graph: Graph) -> GraphData:
        """The device copies of ``graph``'s indices (uploaded on first use, cached)."""
        last = self._last_graph
        if last is not None and last[0]() is graph:  # the common case: the same graph again
            return last[1]
        gd = self._graphs.get(graph)
        if gd is None:
            gd = upload_graph(self, graph)
            self.tag_memory(gd.device_arrays(), "graph")
            self._graphs[graph] = gd
        # the graph's collection drops this reference too (the device data is freed with the graph)
        self._last_graph = (weakref.ref(graph, self._forget_last_graph), gd)
        return gd

    def _forget_last_graph(self, ref: Any) -> None:
        last = self._last_graph
        if last is not None and last[0] is ref:
            self._last_graph = None

    # ------------------------------------------------------------------ forward ops (ops_forward.py)
    def edge_logits(self, graph: Graph, q: Any, k: Any, bias: Any) -> DeviceArray:
        return ops_forward.edge_logits(self, graph, q, k, bias)

    def edge_probs(self, graph: Graph, q: Any, k: Any, bias: Any, tau: float = 1.0, top_k: int = 0) -> DeviceArray:
        return ops_forward.edge_probs(self, graph, q, k, bias, tau, top_k)

    def segment_softmax(self, graph: Graph, logits: Any, tau: float = 1.0, top_k: int = 0) -> DeviceArray:
        return ops_forward.segment_softmax(self, graph, logits, tau, top_k)

    def segment_topk(self, graph: Graph, values: Any, k: int) -> DeviceArray:
        return ops_forward.segment_topk(self, graph, values, k)

    def energy_scatter(self, graph: Graph, energies: Any, pi: Any, alpha: float = 1.0, active: Any = None,
                       retain_sinks: bool = False, return_flow: bool = False) -> Any:
        return ops_forward.energy_scatter(self, graph, energies, pi, alpha, active, retain_sinks, return_flow)

    def scatter_state(self, graph: Graph, energies: Any, active: Any) -> tuple[Any, Any]:
        return ops_forward.scatter_state(self, graph, energies, active)

    def scatter_step(self, graph: Graph, state: Any, pi: Any, alpha: float, active_state: Any, retain_sinks: bool,
                     last: bool) -> Any:
        return ops_forward.scatter_step(self, graph, state, pi, alpha, active_state, retain_sinks, last)

    def scatter_step_backward(self, graph, state, pi, grad_next, alpha, active_state, retain_sinks,  # type: ignore[no-untyped-def]
                              grad_energies, grad_pi_acc, last):
        """The backward of :meth:`scatter_step` (ops_backward.py): node-major in, the
        input-energy gradient node-major, or float [B, N] when ``last``."""
        return ops_backward.scatter_step_backward(self, graph, state, pi, grad_next, alpha, active_state,
                                                  retain_sinks, grad_energies, grad_pi_acc, last)

    def public_state(self, state: Any) -> Any:
        return ops_forward.public_state(self, state)

    def edge_flow(self, graph: Graph, energies: Any, pi: Any, alpha: float = 1.0, active: Any = None) -> DeviceArray:
        return ops_forward.edge_flow(self, graph, energies, pi, alpha, active)

    def step_metrics(self, graph: Graph, energies: Any, next_energies: Any, pi: Any, alpha: float = 1.0,
                     active: Any = None) -> DeviceArray:
        return ops_forward.step_metrics(self, graph, energies, next_energies, pi, alpha, active)

    # ------------------------------------------------------------------ elementwise / reductions
    def add(self, a: Any, b: Any) -> DeviceArray:
        a, b = self._dev(a), self._dev(b)
        if a.shape != b.shape:
            raise ShapeError(f"add: shapes differ, {a.shape} and {b.shape}")
        rt = self.runtime
        if not any(x.is_split or x.nbytes > rt.max_binding_bytes for x in (a, b)):
            out = self.empty(a.shape)
            rt.dispatch("add", threads=a.size, uniform=dict(n=a.size, lo=0, count=0, base=0, off=0, dim=0), a=a, b=b,
                        out=out)
            return out
        # past one binding (or split over buffers): one buffer up to the buffer size limit, split
        # past it, added over ranges that fit one binding and lie in one buffer of each array
        out = rt.pool.new_split_array(self, a.shape, np.float32, 1, rt.offset_alignment, "add")
        for s, count in binding_ranges((a, b, out), rt.max_binding_bytes, rt.offset_alignment):
            (av, e0), (bv, e1), (ov, e2) = (range_view(x, s, count, rt.offset_alignment) for x in (a, b, out))
            if not e0 == e1 == e2:  # a view at an unaligned offset of its buffer (not made by this backend's ops)
                raise DeviceLimitError(f"add: arrays past one binding are added in ranges bound from aligned "
                                       f"offsets, and the inputs' elements {s} .. lie at different offsets modulo "
                                       f"{rt.offset_alignment} bytes; copy them first (backend.copy)")
            rt.dispatch("add", threads=count, uniform=dict(n=count, lo=0, count=0, base=0, off=e0, dim=0), a=av, b=bv,
                        out=ov)
        return out

    def copy(self, x: Any) -> DeviceArray:
        """A device copy of a float array through the vec4 copy kernel."""
        x = self._dev(x)
        out = self.empty(x.shape, x.dtype)
        n_vec = -(-x.size // 4)
        self.runtime.dispatch("copy_vec4", threads=n_vec, uniform=dict(n=x.size, n_vec=n_vec), src=x, dst=out)
        return out

    def sum_squares(self, arrays: Sequence[Any]) -> DeviceArray:
        arrs = [self._dev(a) for a in arrays]
        out = self.empty((1,))
        recorded = sumsq.partials_for(self, arrs)  # gradients whose kernels wrote their partials
        if recorded is not None:
            partials, total = recorded
        else:
            total = sum(-(-a.size // _REDUCE_SPAN) for a in arrs)
            partials = self.empty((max(1, total),))
            ops_train.sumsq_partials(self.runtime, arrs, partials, self)
        self.runtime.dispatch("sum_final", workgroups=1, uniform=dict(n=total, out_offset=0, n1=0, n2=0), x=partials,
                              result=out)
        return out

    # ------------------------------------------------------------------ backward (ops_backward.py)
    def energy_scatter_backward(self, graph, energies, pi, grad_next, alpha=1.0, active=None, retain_sinks=False,  # type: ignore[no-untyped-def]
                                grad_energies=True, grad_pi_acc=None):
        return ops_backward.energy_scatter_backward(self, graph, energies, pi, grad_next, alpha, active, retain_sinks,
                                                    grad_energies, grad_pi_acc)

    def segment_softmax_backward(self, graph, pi, grad_pi, tau=1.0):  # type: ignore[no-untyped-def]
        return ops_backward.segment_softmax_backward(self, graph, pi, grad_pi, tau)

    def edge_logits_backward(self, graph, q, k, grad_logits):  # type: ignore[no-untyped-def]
        return ops_backward.edge_logits_backward(self, graph, q, k, grad_logits)

    def softmax_logits_backward(self, graph, pi, grad_pi, tau, q, k):  # type: ignore[no-untyped-def]
        return ops_backward.softmax_logits_backward(self, graph, pi, grad_pi, tau, q, k)

    # ------------------------------------------------------------------ losses / optimizer (ops_train.py)
    def mse(self, pred, target, mask=None, final=True):  # type: ignore[no-untyped-def]
        return ops_train.mse(self, pred, target, mask, final)

    def finish_loss(self, loss):  # type: ignore[no-untyped-def]
        ops_train.finish_loss(self, loss)

    def cross_entropy(self, pred, target, eps=1e-12):  # type: ignore[no-untyped-def]
        return ops_train.cross_entropy(self, pred, target, eps)

    def entropy_regularization(self, graph, pi, lam):  # type: ignore[no-untyped-def]
        return ops_train.entropy_regularization(self, graph, pi, lam)

    def adamw_step(  # type: ignore[no-untyped-def]
        self, params, grads, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, max_grad_norm,
        loss=None, return_skipped=False,
    ):
        return ops_train.adamw_step(
            self, params, grads, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, max_grad_norm,
            loss, return_skipped,
        )
