"""The NumPy backend: the readable, vectorized definition of every op (docs/definitions.md).

No Python loop runs over nodes, edges or batch rows. Segment reductions use
``ufunc.reduceat`` over the non-empty segments; sums over incoming edges and the
node-level products use ``scipy.sparse`` matrices built from the CSR arrays (a gather,
never a float atomic). float32 by default, float64 on request.

Speed (see ``benchmarks/bench_cpu.py``): index arrays and patterns derived from a graph are
built once per graph and kept in a per-backend cache (:class:`_GraphCache`); batched
gathers and sparse products work on the node-major ``[N, B]`` layout, where each node's
batch values are contiguous; top-k ranks short segments in a padded dense layout.
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidArgumentError, ShapeError
from ..graph import Graph
from .base import MEMORY_PURPOSES, Backend, check_purpose

__all__ = ["NumpyBackend"]

#: top-k ranks segments of degree up to this in a padded [degree, segments] layout (work
#: ~ degree * edges); longer segments are ranked by a sort.
_DENSE_TOPK_MAX_DEGREE = 64

#: size in bytes of the blocks in which per-edge gathers are processed (cache-sized)
_BLOCK_BYTES = 2**19

#: nodes per block of the [B, N] -> [N, B] transpose (:meth:`NumpyBackend._node_major`)
_TRANSPOSE_BLOCK = 1024


class _GraphCache:
    """Index arrays derived from one (immutable) graph, built on first use."""

    def __init__(self, graph: Graph) -> None:
        n = graph.num_nodes
        self.src = np.ascontiguousarray(graph.src, dtype=np.intp)
        self.col = np.ascontiguousarray(graph.col_idx, dtype=np.intp)
        nonempty = graph.out_degree > 0
        self.nonempty = nonempty
        self.all_nonempty = bool(nonempty.all())
        self.starts = np.ascontiguousarray(graph.row_ptr[:-1][nonempty], dtype=np.intp)
        # scipy.sparse pattern of the [N, N] edge matrix; int32 indices when they fit, so
        # scipy takes its index arrays as they are (no per-call scan or conversion)
        idx_t = np.int32 if graph.num_edges < 2**31 and n < 2**31 else np.int64
        self.indptr = graph.row_ptr.astype(idx_t)
        self.indices = graph.col_idx.astype(idx_t)
        self.shape = (n, n)
        self.topk: dict[int, _TopkPlan] = {}

    def matrix(self, values: np.ndarray) -> sp.csr_matrix:
        """The [N, N] matrix with entry (src[e], col_idx[e]) = values[e] (duplicates summed)."""
        return sp.csr_matrix((values, self.indices, self.indptr), shape=self.shape, copy=False)

    def segment_reduce(self, ufunc: np.ufunc, values: np.ndarray, empty: float) -> np.ndarray:
        """[N]: ufunc-reduction of ``values`` [E] over each segment; ``empty`` for empty segments."""
        if self.all_nonempty and values.size:
            return ufunc.reduceat(values, self.starts)
        out = np.full(self.nonempty.shape[0], empty, dtype=values.dtype)
        if values.size:
            out[self.nonempty] = ufunc.reduceat(values, self.starts)
        return out


class _TopkPlan:
    """How :meth:`NumpyBackend.segment_topk` ranks the segments of one graph for one k.

    Segments of degree <= k keep every edge and are not ranked. Segments of degree in
    (k, 64] are grouped by degree class ((k, max(2k, 8)], then classes of doubling degree up
    to 64, so a short segment is not padded to the longest one) and each class is laid out
    as ``slots [D, S]``: the edge ids of its S segments, one column per segment, padded with
    the sentinel id E (value -inf). Longer segments are ranked by a lexsort over their edges
    only.
    """

    def __init__(self, graph: Graph, k: int) -> None:
        deg = graph.out_degree
        row_ptr = graph.row_ptr
        e = graph.num_edges
        self.all_kept = not bool((deg > k).any())
        self.groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (slots, valid, edges)
        lo = k
        while lo < _DENSE_TOPK_MAX_DEGREE:
            hi = min(max(2 * lo, 8), _DENSE_TOPK_MAX_DEGREE)
            nodes = np.flatnonzero((deg > lo) & (deg <= hi))
            if nodes.size:
                d = int(deg[nodes].max())
                slot = np.arange(d)[:, None]
                valid = slot < deg[nodes][None, :]
                slots = np.where(valid, row_ptr[nodes][None, :] + slot, e).astype(np.intp)
                self.groups.append((slots, valid, slots[valid]))
            lo = hi
        # long segments: their edges (ascending), the source of each and the position of its
        # segment's first edge among them
        long_deg = deg[deg > max(k, _DENSE_TOPK_MAX_DEGREE)]
        self.long_edges = np.flatnonzero(deg[graph.src] > max(k, _DENSE_TOPK_MAX_DEGREE))
        self.long_src = graph.src[self.long_edges]
        self.long_first = np.repeat(np.cumsum(long_deg) - long_deg, long_deg)


def _held_bytes(obj: Any, depth: int = 0) -> int:
    """Bytes of the numpy arrays an object holds (attributes, lists, tuples, dicts; 3 levels)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if depth > 3:
        return 0
    if isinstance(obj, (list, tuple)):
        return sum(_held_bytes(v, depth + 1) for v in obj)
    if isinstance(obj, dict):
        return sum(_held_bytes(v, depth + 1) for v in obj.values())
    if hasattr(obj, "__dict__"):
        return sum(_held_bytes(v, depth + 1) for v in vars(obj).values())
    return 0


class NumpyBackend(Backend):
    """Reference backend. Backend arrays are plain ``numpy.ndarray``.

    Args:
        dtype: "float32" (default) or "float64".
    """

    name = "numpy"

    def __init__(self, dtype: Any = "float32") -> None:
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise InvalidArgumentError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
        if dt not in (np.float32, np.float64):
            raise InvalidArgumentError(f"dtype must be 'float32' or 'float64', got {dt}")
        self.dtype = dt
        self._finfo_max = float(np.finfo(dt).max)

        self._graphs: weakref.WeakKeyDictionary[Graph, _GraphCache] = weakref.WeakKeyDictionary()
        # id -> (weak reference, purpose) of the arrays tagged with tag_memory
        self._tagged: dict[int, tuple[weakref.ref, str]] = {}

    def memory(self) -> dict[str, int | None]:
        """Host bytes by purpose: ``graph`` (the index arrays this backend derived from live
        graphs), ``parameters`` / ``optimizer`` / ``workspace`` (live arrays tagged with
        :meth:`tag_memory`: the Router's parameters, AdamW's state), ``pool_free`` 0 (no pool),
        ``total`` their sum; ``activations`` is None (op outputs are ordinary numpy arrays
        that this backend does not track: measure them with ``tracemalloc``)."""
        out: dict[str, int | None] = dict.fromkeys(MEMORY_PURPOSES, 0)
        out["graph"] = sum(_held_bytes(c) for c in list(self._graphs.values()))
        for key, (ref, purpose) in list(self._tagged.items()):
            arr = ref()
            if arr is None:
                del self._tagged[key]
            else:
                out[purpose] += arr.nbytes  # type: ignore[operator]
        out["activations"] = None
        out["total"] = sum(v for k, v in out.items() if k != "total" and v is not None)
        return out

    def tag_memory(self, arrays: Sequence[Any], purpose: str) -> None:
        """Count the numpy ``arrays`` under ``purpose`` in :meth:`memory` while they live."""
        check_purpose(purpose)
        for a in arrays:
            if isinstance(a, np.ndarray):
                self._tagged[id(a)] = (weakref.ref(a), purpose)

    def _cache(self, graph: Graph) -> _GraphCache:
        """The derived index arrays of ``graph`` (built on first use, dropped with the graph)."""
        c = self._graphs.get(graph)
        if c is None:
            c = self._graphs[graph] = _GraphCache(graph)
        return c

    def describe(self) -> str:
        return f"numpy ({self.dtype})"

    def __repr__(self) -> str:
        return f"NumpyBackend(dtype={str(self.dtype)!r})"

    # ------------------------------------------------------------------ arrays
    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        """A new contiguous array (always a copy, like an upload: later changes to ``x``
        do not reach the backend, and in-place optimizer updates do not reach ``x``)."""
        arr = np.asarray(x)
        if dtype is None:
            if arr.dtype == np.bool_:
                dtype = np.bool_
            elif np.issubdtype(arr.dtype, np.integer):
                dtype = np.int32
            elif np.issubdtype(arr.dtype, np.floating):
                dtype = self.dtype
            else:
                raise ShapeError(f"cannot make a backend array of dtype {arr.dtype}; expected float, int or bool")
        return np.array(arr, dtype=dtype, order="C", copy=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        arr = np.array(x, copy=True)
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(self.dtype, copy=False)
        return arr

    def is_array(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def write(self, x: np.ndarray, data: Any) -> None:
        np.copyto(x, np.asarray(data).reshape(x.shape), casting="same_kind")

    def zeros(self, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    # ------------------------------------------------------------- helpers
    def _matrix(self, graph: Graph, values: np.ndarray) -> sp.csr_matrix:
        """The [N, N] sparse matrix with entry (src[e], col_idx[e]) = values[e] (duplicates summed)."""
        return self._cache(graph).matrix(values)

    def _segment_reduce(self, graph: Graph, ufunc: np.ufunc, values: np.ndarray, empty: float) -> np.ndarray:
        """[N]: ufunc-reduction of ``values`` [E] over each segment; ``empty`` for empty segments."""
        return self._cache(graph).segment_reduce(ufunc, values, empty)

    @staticmethod
    def _gather_row_dots(a: np.ndarray, rows_a: np.ndarray, b: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
        """[R]: dot(a[rows_a[r]], b[rows_b[r]]) for a, b [*, C] (e.g. one value per edge).

        Computed over blocks of rows gathered into two reused, cache-sized buffers: a loop
        over blocks, each one vectorized, instead of two [R, C] temporaries (3-5x faster at
        R = 90k edges, C = 64: no page faults on fresh memory, the rows stay in cache)."""
        r, cols = rows_a.shape[0], a.shape[1]
        out = np.empty(r, dtype=np.result_type(a, b))
        step = max(1, min(r, _BLOCK_BYTES // max(1, cols * a.itemsize)))
        buf_a = np.empty((step, cols), dtype=a.dtype)
        buf_b = np.empty((step, cols), dtype=b.dtype)
        for s in range(0, r, step):  # over blocks of rows
            n = min(step, r - s)
            # mode="clip" (the indices are valid anyway) lets take write straight into out=
            ga = np.take(a, rows_a[s : s + n], axis=0, out=buf_a[:n], mode="clip")
            gb = np.take(b, rows_b[s : s + n], axis=0, out=buf_b[:n], mode="clip")
            np.einsum("rc,rc->r", ga, gb, out=out[s : s + n])
        return out

    @staticmethod
    def _node_major(x: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """[N, B] contiguous copy of x [B, N], zero where ``active`` [B, N] is False: each
        node's batch values side by side, the layout of scipy's sparse-times-dense products
        and of fast row gathers.

        Copied in blocks of 1024 nodes through a small buffer whose rows are an odd number
        of cache lines long: reading straight down the columns of x hits the same few cache
        sets over and over when a row of x is a multiple of 1 KiB (N = 10240 float32) and
        runs ~6x slower; the small buffer also spares a full-size temporary (fresh large
        arrays cost page faults)."""
        rows, cols = x.shape
        out = np.empty((cols, rows), dtype=x.dtype)
        width = max(1, min(cols, _TRANSPOSE_BLOCK))
        stage = np.empty((rows, width + 64 // x.itemsize), dtype=x.dtype)
        for c0 in range(0, cols, width):  # over blocks of nodes
            block = stage[:, : min(width, cols - c0)]
            np.copyto(block, x[:, c0 : c0 + width])
            if active is not None:
                np.copyto(block, 0, where=~active[:, c0 : c0 + width])
            out[c0 : c0 + width] = block.T
        return out

    def _source_scale(self, energies: np.ndarray, alpha: float, active: np.ndarray | None) -> np.ndarray:
        """x[b, j] = alpha * active[b, j] * energies[b, j] (float [B, N])."""
        x = energies * self.dtype.type(alpha)
        if active is not None:
            x = np.where(active, x, self.dtype.type(0))
        return x

    # ------------------------------------------------------------ forward ops
    def edge_logits(self, graph: Graph, q: np.ndarray, k: np.ndarray, bias: np.ndarray) -> np.ndarray:
        c = self._cache(graph)
        dots = self._gather_row_dots(q, c.src, k, c.col)
        return (dots + bias).astype(self.dtype, copy=False)

    def segment_topk(self, graph: Graph, values: np.ndarray, k: int) -> np.ndarray:
        e = graph.num_edges
        kept = np.ones(e, dtype=bool)
        if k == 0:
            return kept
        c = self._cache(graph)
        plan = c.topk.get(k)
        if plan is None:
            plan = c.topk[k] = _TopkPlan(graph, k)
        if plan.all_kept:
            return kept
        # short segments, padded [D, S] (sentinel E holds -inf, below every value): the rank
        # of an edge is the number of edges of its segment with a larger value, or an equal
        # value and a lower slot (= lower edge index); padding only follows real slots
        ext = np.empty(e + 1, dtype=values.dtype)
        ext[:e] = values
        ext[e] = -np.inf
        for slots, valid, edges in plan.groups:
            v = np.take(ext, slots)
            rank = np.zeros(v.shape, dtype=np.int32)
            for j in range(v.shape[0]):  # over slot positions (<= 64), not over edges
                before = v[j] > v
                before[j + 1 :] |= v[j] == v[j + 1 :]
                rank += before
            kept[edges] = rank[valid] < k
        if plan.long_edges.size:
            # long segments: sort by (segment, value descending, edge index ascending)
            le = plan.long_edges
            order = np.lexsort((le, -values[le], plan.long_src))
            rank = np.empty(le.size, dtype=np.int64)
            rank[order] = np.arange(le.size) - plan.long_first[order]
            kept[le] = rank < k
        return kept

    def _z(self, logits: np.ndarray, tau: float) -> np.ndarray:
        t = self.dtype.type(tau)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            z = logits / t
        if t == 0:  # tau > 0 underflowed in this dtype: 0 / tau is still 0, not NaN
            z = np.where(logits == 0, self.dtype.type(0), z)
        return np.clip(z, -self._finfo_max, self._finfo_max)

    def segment_softmax(self, graph: Graph, logits: np.ndarray, tau: float = 1.0, top_k: int = 0) -> np.ndarray:
        c = self._cache(graph)
        z = self._z(logits, tau)
        kept = self.segment_topk(graph, z, top_k)
        zk = z if kept.all() else np.where(kept, z, self.dtype.type(-np.inf))
        m = c.segment_reduce(np.maximum, zk, 0.0)
        with np.errstate(under="ignore", over="ignore"):
            zk = zk - np.take(m, c.src)
            ex = np.exp(zk, out=zk)  # dropped edges: exp(-inf) = 0
        # the denominator is accumulated in float64 so a segment of 1,000 edges sums to 1 within 1e-6
        s = c.segment_reduce(np.add, ex.astype(np.float64), 1.0).astype(self.dtype)
        ex /= np.take(s, c.src)
        return ex

    def energy_scatter(
        self,
        graph: Graph,
        energies: np.ndarray,
        pi: np.ndarray,
        alpha: float = 1.0,
        active: np.ndarray | None = None,
        retain_sinks: bool = False,
        return_flow: bool = False,
    ) -> Any:
        a = self.dtype.type(alpha)
        x = self._node_major(energies, active)  # [N, B]: active * energies
        # next^T = M^T x with M[src[e], col_idx[e]] = alpha * pi[e] (scipy sums each target's
        # edges in edge order)
        m = self._matrix(graph, pi if a == 1 else pi * a)
        nxt = np.ascontiguousarray(m.T.dot(x).astype(self.dtype, copy=False).T)
        if retain_sinks:
            nxt += np.where(graph.sink_mask, energies, self.dtype.type(0))
        if return_flow:
            return nxt, self.edge_flow(graph, energies, pi, alpha, active)
        return nxt

    def edge_flow(
        self, graph: Graph, energies: np.ndarray, pi: np.ndarray, alpha: float = 1.0, active: np.ndarray | None = None
    ) -> np.ndarray:
        x = self._source_scale(energies, alpha, active)
        return (x[:, graph.src] * pi).astype(self.dtype, copy=False)

    def step_metrics(
        self,
        graph: Graph,
        energies: np.ndarray,
        next_energies: np.ndarray,
        pi: np.ndarray,
        alpha: float = 1.0,
        active: np.ndarray | None = None,
    ) -> np.ndarray:
        b = energies.shape[0]
        act = np.ones(energies.shape, dtype=bool) if active is None else active
        out = np.zeros(5, dtype=self.dtype)
        if b:
            out[0] = next_energies.sum(axis=1, dtype=np.float64).mean()
            out[1] = (act & (energies != 0)).sum(axis=1).mean()
            out[2] = (act[:, graph.src] & (pi > 0)).sum(axis=1).mean()
            if graph.num_edges:
                out[3] = self.edge_flow(graph, energies, pi, alpha, active).max()
        nonempty = graph.out_degree > 0
        if nonempty.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                plogp = np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1)), 0.0)
            ent = -self._segment_reduce(graph, np.add, plogp.astype(np.float64), 0.0)
            out[4] = ent[nonempty].mean()
        return out

    # ----------------------------------------------------------- backward ops
    def energy_scatter_backward(
        self,
        graph: Graph,
        energies: np.ndarray,
        pi: np.ndarray,
        grad_next: np.ndarray,
        alpha: float = 1.0,
        active: np.ndarray | None = None,
        retain_sinks: bool = False,
        grad_energies: bool = True,
        grad_pi_acc: np.ndarray | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray]:
        c = self._cache(graph)
        a = self.dtype.type(alpha)
        g = self._node_major(grad_next)  # [N, B]
        ge = None
        if grad_energies:
            # dL/denergies[b, j] = alpha * active[b, j] * sum_{e in segment j} pi[e] * g[b, col[e]]
            m = self._matrix(graph, pi if a == 1 else pi * a)
            ge = np.ascontiguousarray(m.dot(g).astype(self.dtype, copy=False).T)
            if active is not None:
                np.copyto(ge, 0, where=~active)
            if retain_sinks:
                ge += np.where(graph.sink_mask, grad_next, self.dtype.type(0))
        # dL/dpi[e] = alpha * sum_b active[b, src[e]] * energies[b, src[e]] * g[b, col[e]]:
        # dots of gathered node-major rows
        x = self._node_major(energies, active)
        grad_pi = self._gather_row_dots(g, c.col, x, c.src)
        if a != 1:
            grad_pi *= a
        if grad_pi_acc is not None:
            grad_pi = grad_pi_acc + grad_pi
        return (
            None if ge is None else np.ascontiguousarray(ge, dtype=self.dtype),
            np.ascontiguousarray(grad_pi, dtype=self.dtype),
        )

    def segment_softmax_backward(
        self, graph: Graph, pi: np.ndarray, grad_pi: np.ndarray, tau: float = 1.0
    ) -> np.ndarray:
        c = self._cache(graph)
        # inf/NaN gradients propagate quietly: the optimizer's non-finite guard skips them
        with np.errstate(over="ignore", invalid="ignore"):
            dot = c.segment_reduce(np.add, (pi * grad_pi).astype(np.float64), 0.0).astype(self.dtype)
            gz = grad_pi - np.take(dot, c.src)
            gz *= pi
            gz /= self.dtype.type(tau)
        return gz.astype(self.dtype, copy=False)

    def edge_logits_backward(
        self, graph: Graph, q: np.ndarray, k: np.ndarray, grad_logits: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = self._matrix(graph, grad_logits)
        grad_q = np.asarray(g.dot(k), dtype=self.dtype)
        grad_k = np.asarray(g.T.dot(q), dtype=self.dtype)
        return grad_q, grad_k, np.array(grad_logits, dtype=self.dtype, copy=True)

    # ------------------------------------------------------ elementwise / misc
    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b).astype(self.dtype, copy=False)

    def sum_squares(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        total = sum((self._sum_squares64(a) for a in arrays), 0.0)
        with np.errstate(over="ignore"):  # beyond the dtype's range: inf, as on the device
            return np.array([total], dtype=self.dtype)

    @staticmethod
    def _sum_squares64(a: np.ndarray) -> float:
        """sum(a**2) accumulated in float64 (einsum: single-threaded, no float64 copy of ``a``;
        a threaded BLAS dot is 20x slower on a busy machine)."""
        flat = a.ravel()
        return float(np.einsum("i,i->", flat, flat, dtype=np.float64))

    # ------------------------------------------------------------------ losses
    def mse(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        diff = pred - target
        if mask is not None:
            diff = np.where(mask, diff, self.dtype.type(0))
            count = int(np.count_nonzero(mask))
        else:
            count = diff.size
        if count == 0:
            return np.zeros(1, dtype=self.dtype), np.zeros_like(pred)
        with np.errstate(over="ignore"):  # beyond the dtype's range: inf, as on the device
            loss = np.array([self._sum_squares64(diff) / count], dtype=self.dtype)
        diff *= self.dtype.type(2.0 / count)  # diff is a fresh array: it becomes the gradient
        return loss, diff.astype(self.dtype, copy=False)

    def cross_entropy(
        self, pred: np.ndarray, target: np.ndarray, eps: float = 1e-12
    ) -> tuple[np.ndarray, np.ndarray]:
        batch = 1 if pred.ndim == 1 else pred.shape[0]
        if batch == 0:
            return np.zeros(1, dtype=self.dtype), np.zeros_like(pred)
        clamped = np.maximum(pred, self.dtype.type(eps))
        loss = -np.sum(target.astype(np.float64) * np.log(clamped.astype(np.float64))) / batch
        grad = np.where(pred >= self.dtype.type(eps), -target / clamped, self.dtype.type(0)) / self.dtype.type(batch)
        return np.array([loss], dtype=self.dtype), grad.astype(self.dtype, copy=False)

    def entropy_regularization(self, graph: Graph, pi: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
        pos = pi > 0
        logp = np.log(np.where(pos, pi, 1)).astype(self.dtype)
        loss = -lam * float(np.sum(np.where(pos, pi * logp, 0).astype(np.float64)))
        grad = np.where(pos, -self.dtype.type(lam) * (logp + 1), self.dtype.type(0))
        return np.array([loss], dtype=self.dtype), grad.astype(self.dtype, copy=False)

    # --------------------------------------------------------------- optimizer
    def adamw_step(
        self,
        params: Sequence[np.ndarray],
        grads: Sequence[np.ndarray],
        exp_avg: Sequence[np.ndarray],
        exp_avg_sq: Sequence[np.ndarray],
        step: np.ndarray,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        max_grad_norm: float | None,
        loss: np.ndarray | None = None,
        return_skipped: bool = False,
    ) -> Any:
        t = self.dtype.type
        # the sum of squares in this dtype (as the device's float32 reduction: it overflows
        # to inf where a float32 gradient's square would)
        total = self.sum_squares(grads)[0]
        with np.errstate(invalid="ignore"):
            norm = float(np.sqrt(total))
        bad = not np.isfinite(total) or (loss is not None and not np.all(np.isfinite(loss)))
        norm_out = np.array([norm], dtype=self.dtype)
        skipped = np.array([1.0 if bad else 0.0], dtype=self.dtype)
        if bad:  # the non-finite guard: nothing is updated, t stays
            if step.size >= 3:
                step[1:3] += t(1)
            return (norm_out, skipped) if return_skipped else norm_out
        step[0] += t(1)
        if step.size >= 3:
            step[1] = t(0)
        n = float(step[0])
        coef = 1.0 if max_grad_norm is None else min(1.0, max_grad_norm / (norm + 1e-6))
        bc1 = 1.0 - beta1**n
        bc2 = 1.0 - beta2**n
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
            # the formulas of the docstring, evaluated in the same order with fewer temporaries
            g = g * t(coef)
            p *= t(1.0 - lr * weight_decay)
            m *= t(beta1)
            m += t(1.0 - beta1) * g
            v *= t(beta2)
            g2 = t(1.0 - beta2) * g
            g2 *= g
            v += g2
            upd = m / t(bc1)
            upd *= t(lr)
            den = v / t(bc2)
            np.sqrt(den, out=den)
            den += t(eps)
            upd /= den
            p -= upd
        return (norm_out, skipped) if return_skipped else norm_out
