"""The NumPy backend: the readable, vectorized definition of every op (SPEC §2, §4, §5).

No Python loop runs over nodes, edges or batch rows. Segment reductions use
``ufunc.reduceat`` over the non-empty segments; sums over incoming edges and the
node-level products use ``scipy.sparse`` matrices built from the CSR arrays (a gather,
never a float atomic). float32 by default, float64 on request.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidArgumentError, ShapeError
from ..graph import Graph
from .base import Backend

__all__ = ["NumpyBackend"]


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

    def describe(self) -> str:
        return f"numpy ({self.dtype})"

    def __repr__(self) -> str:
        return f"NumpyBackend(dtype={str(self.dtype)!r})"

    # ------------------------------------------------------------------ arrays
    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        arr = np.asarray(x)
        if dtype is not None:
            return np.ascontiguousarray(arr, dtype=dtype)
        if arr.dtype == np.bool_:
            return np.ascontiguousarray(arr)
        if np.issubdtype(arr.dtype, np.integer):
            return np.ascontiguousarray(arr, dtype=np.int32)
        if np.issubdtype(arr.dtype, np.floating):
            return np.ascontiguousarray(arr, dtype=self.dtype)
        raise ShapeError(f"cannot make a backend array of dtype {arr.dtype}; expected float, int or bool")

    def to_numpy(self, x: Any) -> np.ndarray:
        arr = np.array(x, copy=True)
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(self.dtype, copy=False)
        return arr

    def is_array(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def zeros(self, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    # ------------------------------------------------------------- helpers
    def _matrix(self, graph: Graph, values: np.ndarray) -> sp.csr_matrix:
        """The [N, N] sparse matrix with entry (src[e], col_idx[e]) = values[e] (duplicates summed)."""
        n = graph.num_nodes
        return sp.csr_matrix((values, graph.col_idx, graph.row_ptr), shape=(n, n))

    @staticmethod
    def _segment_reduce(graph: Graph, ufunc: np.ufunc, values: np.ndarray, empty: float) -> np.ndarray:
        """[N]: ufunc-reduction of ``values`` [E] over each segment; ``empty`` for empty segments."""
        out = np.full(graph.num_nodes, empty, dtype=values.dtype)
        nonempty = graph.out_degree > 0
        if values.size:
            out[nonempty] = ufunc.reduceat(values, graph.row_ptr[:-1][nonempty])
        return out

    def _source_scale(self, energies: np.ndarray, alpha: float, active: np.ndarray | None) -> np.ndarray:
        """x[b, j] = alpha * active[b, j] * energies[b, j] (float [B, N])."""
        x = energies * self.dtype.type(alpha)
        if active is not None:
            x = np.where(active, x, self.dtype.type(0))
        return x

    # ------------------------------------------------------------ forward ops
    def edge_logits(self, graph: Graph, q: np.ndarray, k: np.ndarray, bias: np.ndarray) -> np.ndarray:
        dots = np.einsum("ed,ed->e", q[graph.src], k[graph.col_idx])
        return (dots + bias).astype(self.dtype, copy=False)

    def segment_topk(self, graph: Graph, values: np.ndarray, k: int) -> np.ndarray:
        e = graph.num_edges
        if k == 0:
            return np.ones(e, dtype=bool)
        edge = np.arange(e)
        # sort by (segment, value descending, edge index ascending): rank inside the segment
        order = np.lexsort((edge, -values, graph.src))
        rank = np.empty(e, dtype=np.int64)
        rank[order] = edge - graph.row_ptr[graph.src[order]]
        return rank < k

    def _z(self, logits: np.ndarray, tau: float) -> np.ndarray:
        with np.errstate(over="ignore"):
            z = logits / self.dtype.type(tau)
        return np.clip(z, -self._finfo_max, self._finfo_max)

    def segment_softmax(self, graph: Graph, logits: np.ndarray, tau: float = 1.0, top_k: int = 0) -> np.ndarray:
        z = self._z(logits, tau)
        kept = self.segment_topk(graph, z, top_k)
        neg = self.dtype.type(-np.inf)
        zk = np.where(kept, z, neg)
        m = self._segment_reduce(graph, np.maximum, zk, 0.0)
        with np.errstate(under="ignore"):
            ex = np.where(kept, np.exp(zk - m[graph.src]), self.dtype.type(0))
        # the denominator is accumulated in float64 so a segment of 1,000 edges sums to 1 within 1e-6
        s = self._segment_reduce(graph, np.add, ex.astype(np.float64), 1.0).astype(self.dtype)
        return (ex / s[graph.src]).astype(self.dtype, copy=False)

    def energy_scatter(
        self,
        graph: Graph,
        energies: np.ndarray,
        pi: np.ndarray,
        alpha: float = 1.0,
        active: np.ndarray | None = None,
        retain_sinks: bool = False,
    ) -> np.ndarray:
        x = self._source_scale(energies, alpha, active)
        nxt = np.asarray(self._matrix(graph, pi).T.dot(x.T).T, dtype=self.dtype)
        if retain_sinks:
            nxt = nxt + np.where(graph.sink_mask, energies, self.dtype.type(0))
        return np.ascontiguousarray(nxt, dtype=self.dtype)

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
    ) -> tuple[np.ndarray, np.ndarray]:
        # dL/dx[b, j] = sum_{e in segment j} pi[e] * g[b, col[e]]  (x = alpha * active * energies)
        gx = np.asarray(self._matrix(graph, pi).dot(grad_next.T).T, dtype=self.dtype)
        grad_energies = self._source_scale(gx, alpha, active)
        if retain_sinks:
            grad_energies = grad_energies + np.where(graph.sink_mask, grad_next, self.dtype.type(0))
        x = self._source_scale(energies, alpha, active)
        grad_pi = np.einsum("be,be->e", x[:, graph.src], grad_next[:, graph.col_idx])
        return (
            np.ascontiguousarray(grad_energies, dtype=self.dtype),
            np.ascontiguousarray(grad_pi, dtype=self.dtype),
        )

    def segment_softmax_backward(
        self, graph: Graph, pi: np.ndarray, grad_pi: np.ndarray, tau: float = 1.0
    ) -> np.ndarray:
        dot = self._segment_reduce(graph, np.add, (pi * grad_pi).astype(np.float64), 0.0).astype(self.dtype)
        gz = pi * (grad_pi - dot[graph.src])
        return (gz / self.dtype.type(tau)).astype(self.dtype, copy=False)

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
        total = sum((float(np.dot(a.ravel().astype(np.float64), a.ravel().astype(np.float64))) for a in arrays), 0.0)
        return np.array([total], dtype=self.dtype)

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
        loss = np.array([np.dot(diff.ravel().astype(np.float64), diff.ravel().astype(np.float64)) / count])
        grad = diff * self.dtype.type(2.0 / count)
        return loss.astype(self.dtype), grad.astype(self.dtype, copy=False)

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
    ) -> np.ndarray:
        t = self.dtype.type
        step += t(1)
        n = float(step[0])
        norm = float(np.sqrt(self.sum_squares(grads)[0]))
        coef = 1.0 if max_grad_norm is None else min(1.0, max_grad_norm / (norm + 1e-6))
        bc1 = 1.0 - beta1**n
        bc2 = 1.0 - beta2**n
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
            g = g * t(coef)
            p *= t(1.0 - lr * weight_decay)
            m *= t(beta1)
            m += t(1.0 - beta1) * g
            v *= t(beta2)
            v += t(1.0 - beta2) * g * g
            p -= t(lr) * (m / t(bc1)) / (np.sqrt(v / t(bc2)) + t(eps))
        return np.array([norm], dtype=self.dtype)
