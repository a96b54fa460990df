"""``WgpuBackend``: the forward ops as WGSL compute shaders through wgpu-py.

Every op encodes dispatches into the runtime's pending command encoder and returns
``DeviceArray`` objects at once; nothing is submitted until a result is read
(:meth:`WgpuBackend.to_numpy`) or :meth:`WgpuBackend.synchronize` is called.

Degree strategies (SMALL = ``kernels.SMALL_DEGREE_MAX`` = 256):

* ``segment_softmax`` / ``segment_topk``: segments of degree 1..SMALL run one thread per
  segment (degree <= 16: one-pass online max/sum; top_k 1..4: a register top-4 in one pass,
  for softmax in the ``softmax_small_k4`` entry point; otherwise serial compensated sums and
  top-k by k selection passes); larger segments run one
  workgroup of 256 each (top-k threshold by a radix bisection over the float keys, O(64 deg)
  independent of k; fixed-order tree reductions).
* ``energy_scatter``: a gather over the reverse (CSC) index; nodes of in-degree <= SMALL run
  one thread per (node, chunk of 8 batch rows) after a transpose of the energies to
  [N, ceil(B/4)] vec4, larger ones one workgroup of 256 per (b, node).
* ``step_metrics`` and ``sum_squares``: two-pass fixed-order reductions (per-workgroup
  partials, then one workgroup).

All results are bit-identical run to run (no atomics on floats, fixed summation orders).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import InvalidArgumentError, ShapeError
from ...graph import Graph
from ..base import Backend
from . import ops_backward, ops_train
from .kernels import REDUCE_ITEMS, SMALL_DEGREE_MAX
from .runtime import DeviceArray, Runtime

__all__ = ["WgpuBackend"]

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_REDUCE_SPAN = 256 * REDUCE_ITEMS  # elements covered by one reduction workgroup


@dataclass
class GraphData:
    """Device copies of one graph's index arrays (uploaded once, cached per graph object)."""

    num_nodes: int
    num_edges: int
    row_ptr: DeviceArray  # u32 [N+1]
    col_idx: DeviceArray  # u32 [E]
    src: DeviceArray  # u32 [E]
    rev_ptr: DeviceArray  # u32 [N+1]
    rev_pairs: DeviceArray  # u32 [E, 2]: (edge, source) grouped by target
    sink: DeviceArray  # u32 [N]: 1 for out-degree 0
    large_out: DeviceArray | None  # u32: nodes with out-degree > SMALL
    large_in: DeviceArray | None  # u32: nodes with in-degree > SMALL
    n_large_out: int
    n_large_in: int
    n_nonempty: int


class WgpuBackend(Backend):
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

    Raises:
        BackendUnavailable: wgpu is missing, or no adapter matches (the message lists them).
        InvalidArgumentError: a bad ``limits`` or ``dtype``.

    Arrays larger than the device's maxStorageBufferBindingSize (128 MiB with default limits)
    are refused with :class:`DeviceLimitError`; they are never split.
    """

    name = "wgpu"

    def __init__(
        self, adapter: Any = None, limits: str = "default", dtype: Any = "float32", features: Sequence[str] = ()
    ) -> None:
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise InvalidArgumentError(f"dtype must be 'float32' for the wgpu backend, got {dtype!r}") from exc
        if dt != np.float32:
            raise InvalidArgumentError(f"dtype must be 'float32' for the wgpu backend, got {dt.name!r}")
        self.dtype = np.dtype(np.float32)
        self.runtime = Runtime(adapter=adapter, limits=limits, features=features)
        self._graphs: "weakref.WeakKeyDictionary[Graph, GraphData]" = weakref.WeakKeyDictionary()
        # (weak ref to the graph, its data) of the last lookup: WeakKeyDictionary.get builds a
        # weak reference per call
        self._last_graph: tuple[Any, GraphData] | None = None

    # ------------------------------------------------------------------ info
    @property
    def limits(self) -> dict[str, int]:
        return self.runtime.limits

    @property
    def counters(self) -> Any:
        return self.runtime.counters

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
        out = self.runtime.new_array(self, host.shape, dt)
        self.runtime.upload(out.pooled, host.reshape(-1))
        return out

    # ------------------------------------------------------------------ packed arrays
    def _packed_layout(self, nbytes: Sequence[int]) -> tuple[list[int], int]:
        """(byte offsets, total bytes) of regions of ``nbytes`` bytes, each at a multiple of
        the device's storage offset alignment with room for its bound range."""
        rt = self.runtime
        align = rt.offset_alignment
        offsets, off = [], 0
        for n in nbytes:
            offsets.append(off)
            off += -(-rt.view_bind_size(n) // align) * align
        return offsets, max(off, 16)

    def _views(self, total: int, offsets: Sequence[int], shapes: Sequence[tuple[int, ...]],
               dtypes: Sequence[Any]) -> tuple[DeviceArray, list[DeviceArray]]:
        rt = self.runtime
        flat = rt.new_array(self, (total // 4,), np.float32, "packed arrays")
        return flat, [rt.view(flat, o, shp, dt) for o, shp, dt in zip(offsets, shapes, dtypes)]

    def pack(self, arrays: Sequence[Any]) -> list[DeviceArray]:
        """The arrays uploaded into ONE pooled buffer: a list of views, region i at a multiple
        of the device's minStorageBufferOffsetAlignment (256 by default), the layout a function
        of the sizes only. A DeviceArray of this backend is copied on the device."""
        items = []
        for a in arrays:
            if isinstance(a, DeviceArray) and a.backend is self:
                items.append((a, a.shape, a.dtype))
            else:
                host, dt = self._host(a, None)
                items.append((host, host.shape, dt))
        if not items:
            return []
        offsets, total = self._packed_layout([math.prod(shp) * 4 for _, shp, _ in items])
        _, views = self._views(total, offsets, [shp for _, shp, _ in items], [dt for _, _, dt in items])
        for (src, _, _), view in zip(items, views):
            if isinstance(src, DeviceArray):
                self.runtime.copy_buffer(src, view, src.size * 4)
            else:
                self.runtime.upload(view.pooled, src.reshape(-1), view.offset)
        return views

    def zeros_like_packed(self, arrays: Sequence[Any]) -> list[DeviceArray]:
        """Zero-filled float32 views in one new buffer: at the offsets of ``arrays`` when they
        are views of one buffer (the layout of a :meth:`pack`), else in a fresh packed layout."""
        arrays = list(arrays)
        if not arrays:
            return []
        shapes = [tuple(int(s) for s in a.shape) for a in arrays]
        first = arrays[0]
        if all(isinstance(a, DeviceArray) and a.backend is self and a.is_view and a.pooled is first.pooled
               for a in arrays):
            offsets = [a.offset for a in arrays]
            rt = self.runtime
            total = max(o + rt.view_bind_size(math.prod(s) * 4) for o, s in zip(offsets, shapes))
        else:
            offsets, total = self._packed_layout([math.prod(s) * 4 for s in shapes])
        flat, views = self._views(total, offsets, shapes, [np.float32] * len(shapes))
        self.runtime.clear(flat)
        return views

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
        array is copied into the reused staging buffer; one submit, one map)."""
        devs = [self._dev(a) for a in arrays]
        for a in devs:
            if a.dtype != np.float32:
                raise ShapeError(f"read_packed: arrays must be float32, got {a.dtype}")
        return self.runtime.read_many(devs).view(np.float32)

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
    def graph_data(self, graph: Graph) -> GraphData:
        """The device copies of ``graph``'s indices (uploaded on first use, cached)."""
        last = self._last_graph
        if last is not None and last[0]() is graph:  # the common case: the same graph again
            return last[1]
        gd = self._graphs.get(graph)
        if gd is not None:
            self._last_graph = (weakref.ref(graph), gd)
            return gd

        def up(a: np.ndarray) -> DeviceArray:
            return self.asarray(np.ascontiguousarray(a, dtype=np.uint32), np.uint32)

        rev_perm = graph.rev_perm
        pairs = np.stack([rev_perm, graph.src[rev_perm]], axis=1) if graph.num_edges else np.zeros((0, 2))
        large_out = np.flatnonzero(graph.out_degree > SMALL_DEGREE_MAX)
        large_in = np.flatnonzero(graph.in_degree > SMALL_DEGREE_MAX)
        gd = GraphData(
            num_nodes=graph.num_nodes,
            num_edges=graph.num_edges,
            row_ptr=up(graph.row_ptr),
            col_idx=up(graph.col_idx),
            src=up(graph.src),
            rev_ptr=up(graph.rev_ptr),
            rev_pairs=up(pairs),
            sink=up(graph.sink_mask.astype(np.uint32)),
            large_out=up(large_out) if large_out.size else None,
            large_in=up(large_in) if large_in.size else None,
            n_large_out=int(large_out.size),
            n_large_in=int(large_in.size),
            n_nonempty=int(np.count_nonzero(graph.out_degree)),
        )
        self._graphs[graph] = gd
        self._last_graph = (weakref.ref(graph), gd)
        return gd

    # ------------------------------------------------------------------ forward ops
    def edge_logits(self, graph: Graph, q: Any, k: Any, bias: Any) -> DeviceArray:
        gd = self.graph_data(graph)
        q, k, bias = self._dev(q), self._dev(k), self._dev(bias)
        dim = q.shape[1] if q.ndim == 2 else 0
        out = self.empty((gd.num_edges,))
        self.runtime.dispatch(
            "edge_logits",
            [gd.src, gd.col_idx, q, k, bias, out],
            threads=gd.num_edges,
            uniforms=(gd.num_edges, dim),
        )
        return out

    def _softmax(self, graph: Graph, logits: Any, tau: float, top_k: int, mode: int) -> DeviceArray:
        gd = self.graph_data(graph)
        logits = self._dev(logits)
        top_k = int(top_k)
        if top_k < 0:
            raise InvalidArgumentError(f"top_k must be >= 0, got {top_k}")
        out = self.empty((gd.num_edges,), np.bool_ if mode == 1 else np.float32)
        u = (gd.num_nodes, top_k, mode, gd.n_large_out, np.float32(tau), SMALL_DEGREE_MAX)
        # 1 <= top_k <= 4 (softmax): its own pipeline, with the register top-4 (segment_softmax.wgsl)
        small = "softmax_small_k4" if mode == 0 and 1 <= top_k <= 4 else "softmax_small"
        self.runtime.dispatch(small, [gd.row_ptr, logits, out], threads=gd.num_nodes, uniforms=u)
        if gd.n_large_out:
            self.runtime.dispatch(
                "softmax_large", [gd.row_ptr, logits, out, gd.large_out], workgroups=gd.n_large_out, uniforms=u
            )
        return out

    def segment_softmax(self, graph: Graph, logits: Any, tau: float = 1.0, top_k: int = 0) -> DeviceArray:
        return self._softmax(graph, logits, float(tau), top_k, 0)

    def segment_topk(self, graph: Graph, values: Any, k: int) -> DeviceArray:
        return self._softmax(graph, values, 1.0, k, 1)

    @staticmethod
    def _batch(energies: DeviceArray, n: int) -> tuple[int, bool]:
        if energies.ndim == 1:
            return 1, True
        return energies.shape[0], False

    def energy_scatter(
        self,
        graph: Graph,
        energies: Any,
        pi: Any,
        alpha: float = 1.0,
        active: Any = None,
        retain_sinks: bool = False,
        return_flow: bool = False,
    ) -> Any:
        gd = self.graph_data(graph)
        energies, pi = self._dev(energies), self._dev(pi)
        batch, flat = self._batch(energies, gd.num_nodes)
        act = self._opt(active)
        flags = (1 if active is not None else 0) | (2 if retain_sinks else 0)
        out = self.empty(energies.shape)
        u = (batch, gd.num_nodes, flags, gd.n_large_in, np.float32(alpha), SMALL_DEGREE_MAX)
        common = [gd.rev_ptr, gd.rev_pairs, pi, energies, act, gd.sink, out]
        if batch and gd.num_nodes:
            # x = alpha * active * energies transposed to [N, ceil(B/4)] vec4 (a pooled
            # workspace), then one thread per (node, 8 batch rows)
            nc4 = -(-batch // 4)
            xt = self.empty((gd.num_nodes * nc4 * 4,))
            self.runtime.dispatch("scatter_transpose", [energies, act, xt], threads=nc4 * gd.num_nodes, uniforms=u)
            self.runtime.dispatch(
                "scatter_small",
                [gd.rev_ptr, gd.rev_pairs, pi, energies, gd.sink, out, xt],
                threads=-(-batch // 8) * gd.num_nodes,
                uniforms=u,
            )
        if gd.n_large_in and batch:
            self.runtime.dispatch("scatter_large", common + [gd.large_in], workgroups=gd.n_large_in * batch, uniforms=u)
        if return_flow:
            return out, self.edge_flow(graph, energies, pi, alpha, active)
        return out

    def edge_flow(self, graph: Graph, energies: Any, pi: Any, alpha: float = 1.0, active: Any = None) -> DeviceArray:
        gd = self.graph_data(graph)
        energies, pi = self._dev(energies), self._dev(pi)
        batch, flat = self._batch(energies, gd.num_nodes)
        act = self._opt(active)
        out = self.empty((gd.num_edges,) if flat else (batch, gd.num_edges))
        u = (batch, gd.num_nodes, gd.num_edges, 1 if active is not None else 0, np.float32(alpha))
        self.runtime.dispatch("edge_flow", [gd.src, pi, energies, act, out], threads=batch * gd.num_edges, uniforms=u)
        return out

    def step_metrics(
        self,
        graph: Graph,
        energies: Any,
        next_energies: Any,
        pi: Any,
        alpha: float = 1.0,
        active: Any = None,
    ) -> DeviceArray:
        gd = self.graph_data(graph)
        energies, next_energies, pi = self._dev(energies), self._dev(next_energies), self._dev(pi)
        batch, _ = self._batch(energies, gd.num_nodes)
        if energies.ndim == 2 and energies.shape[0] == 0:
            batch = 0
        act = self._opt(active)
        n_total = max(batch * gd.num_nodes, batch * gd.num_edges, gd.num_edges)
        n_parts = -(-n_total // _REDUCE_SPAN)
        partials = self.empty((max(1, n_parts) * 8,))
        out = self.empty((5,))
        has_act = 1 if active is not None else 0
        u1 = (batch, gd.num_nodes, gd.num_edges, has_act, np.float32(alpha), n_total, gd.n_nonempty)
        self.runtime.dispatch(
            "metrics_partials", [gd.src, pi, energies, next_energies, act, partials], workgroups=n_parts, uniforms=u1
        )
        u2 = (batch, gd.num_nodes, gd.num_edges, has_act, np.float32(alpha), n_parts, gd.n_nonempty)
        self.runtime.dispatch("metrics_final", [partials, out], workgroups=1, uniforms=u2)
        return out

    # ------------------------------------------------------------------ elementwise / reductions
    def add(self, a: Any, b: Any) -> DeviceArray:
        a, b = self._dev(a), self._dev(b)
        if a.shape != b.shape:
            raise ShapeError(f"add: shapes differ, {a.shape} and {b.shape}")
        out = self.empty(a.shape)
        self.runtime.dispatch("add", [a, b, out], threads=a.size, uniforms=(a.size,))
        return out

    def copy(self, x: Any) -> DeviceArray:
        """A device copy of a float array through the vec4 copy kernel."""
        x = self._dev(x)
        out = self.empty(x.shape, x.dtype)
        n_vec = -(-x.size // 4)
        self.runtime.dispatch("copy_vec4", [x, out], threads=n_vec, uniforms=(x.size, n_vec))
        return out

    def sum_squares(self, arrays: Sequence[Any]) -> DeviceArray:
        arrs = [self._dev(a) for a in arrays]
        counts = [-(-a.size // _REDUCE_SPAN) for a in arrs]
        total = sum(counts)
        out = self.empty((1,))
        partials = self.empty((max(1, total),))
        offset = 0
        for a, c in zip(arrs, counts):
            self.runtime.dispatch("sumsq_partials", [a, partials], workgroups=c, uniforms=(a.size, offset))
            offset += c
        self.runtime.dispatch("sum_final", [partials, out], workgroups=1, uniforms=(total, 0))
        return out

    # ------------------------------------------------------------------ backward (ops_backward.py)
    def energy_scatter_backward(self, graph, energies, pi, grad_next, alpha=1.0, active=None, retain_sinks=False):  # type: ignore[no-untyped-def]
        return ops_backward.energy_scatter_backward(self, graph, energies, pi, grad_next, alpha, active, retain_sinks)

    def segment_softmax_backward(self, graph, pi, grad_pi, tau=1.0):  # type: ignore[no-untyped-def]
        return ops_backward.segment_softmax_backward(self, graph, pi, grad_pi, tau)

    def edge_logits_backward(self, graph, q, k, grad_logits):  # type: ignore[no-untyped-def]
        return ops_backward.edge_logits_backward(self, graph, q, k, grad_logits)

    # ------------------------------------------------------------------ losses / optimizer (ops_train.py)
    def mse(self, pred, target, mask=None):  # type: ignore[no-untyped-def]
        return ops_train.mse(self, pred, target, mask)

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
