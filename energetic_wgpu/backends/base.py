"""The backend interface: every router op, implemented once per backend.

A backend owns *backend arrays*: ``numpy.ndarray`` for the NumPy backend, device-resident
``DeviceArray`` objects for wgpu. Ops take and return backend arrays of the backend's float
dtype (``backend.dtype``); masks are boolean arrays. Shapes use N = graph.num_nodes,
E = graph.num_edges, B = batch size (may be 0), d = feature dimension.

Ops validate nothing about user input: the :class:`~energetic_wgpu.router.Router` and the
loss/optimizer front ends validate shapes and values *before* calling a backend, so a
backend may assume well-formed arguments. Ops never modify their inputs unless the method
says "in place".

The NumPy backend (``numpy_backend.py``) is the readable definition of every op; the wgpu
backend must give the same numbers (parity) and be bit-identical from run to run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from ..graph import Graph
from ..validation import check_int

__all__ = ["Backend", "METRIC_NAMES", "COUNTER_NAMES", "MEMORY_PURPOSES", "TAGGED_PURPOSES", "check_purpose"]

#: The order of the values in the array returned by :meth:`Backend.step_metrics`.
METRIC_NAMES = ("total_energy", "active_nodes", "active_edges", "max_edge_flow", "avg_entropy")

#: The work counters every backend's :meth:`Backend.counters` reports (a GPU backend may add more).
COUNTER_NAMES = ("submits", "dispatches", "buffers_created", "bytes_uploaded", "bytes_read_back")

#: The keys of :meth:`Backend.memory`, in order.
MEMORY_PURPOSES = ("graph", "parameters", "optimizer", "activations", "workspace", "pool_free", "total")
#: The purposes arrays can be tagged with (:meth:`Backend.tag_memory`).
TAGGED_PURPOSES = ("graph", "parameters", "optimizer", "workspace")


def check_purpose(purpose: Any) -> str:
    """``purpose`` if it is one of :data:`TAGGED_PURPOSES`, else InvalidArgumentError."""
    if not isinstance(purpose, str) or purpose not in TAGGED_PURPOSES:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError(f"purpose must be one of {list(TAGGED_PURPOSES)}, got {purpose!r}")
    return purpose


class Backend(ABC):
    """Abstract base of all backends. Construct through :func:`energetic_wgpu.get_backend`."""

    #: registry name ("numpy", "wgpu")
    name: str = "abstract"
    #: numpy dtype of float arrays on this backend (float32 or float64)
    dtype: np.dtype = np.dtype(np.float32)

    # ------------------------------------------------------------------ counters
    def counters(self) -> dict[str, int]:
        """Work done so far on this backend, as {name: int} with at least :data:`COUNTER_NAMES`:
        queue submits, compute dispatches, device buffers created, bytes written to and read
        back from the device. Cumulative since the backend was made; the difference of two
        calls is what the code between them cost. All 0 on a host backend (NumPy)."""
        return dict.fromkeys(COUNTER_NAMES, 0)

    # ------------------------------------------------------------------ memory
    def memory(self) -> dict[str, int | None]:
        """Live bytes of this backend's arrays by purpose, keys :data:`MEMORY_PURPOSES`:
        graph, parameters, optimizer, activations, workspace, pool_free, total (ints; None
        where the backend does not track a purpose). Device bytes on a GPU backend, host
        bytes on NumPy (see each backend)."""
        return dict.fromkeys(MEMORY_PURPOSES, None)

    def tag_memory(self, arrays: Sequence[Any], purpose: str) -> None:
        """Count ``arrays`` under ``purpose`` (one of :data:`TAGGED_PURPOSES`) in :meth:`memory`
        while they live. The Router tags its parameters, AdamW its state; a backend tags its
        graph data."""
        check_purpose(purpose)

    # ------------------------------------------------------------------ arrays
    @abstractmethod
    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Return ``x`` (numpy array, list, scalar or a backend array) as a backend array.
        Float inputs become ``self.dtype`` unless ``dtype`` is given; bool stays bool;
        integers stay int32 (``dtype`` may force another)."""

    @abstractmethod
    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy a backend array to a new numpy array (same shape; float -> ``self.dtype``)."""

    @abstractmethod
    def is_array(self, x: Any) -> bool:
        """True if ``x`` is an array of this backend."""

    @abstractmethod
    def zeros(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        """A new zero-filled backend array (float ``self.dtype`` unless ``dtype`` is given)."""

    @abstractmethod
    def write(self, x: Any, data: Any) -> None:
        """Copy host ``data`` (numpy-like, ``x``'s shape) into the backend array ``x`` **in
        place** (an upload on a GPU backend; no allocation)."""

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        """A backend array with the same data and a new shape (same element count); may alias ``x``."""
        return x.reshape(shape)

    def pack(self, arrays: Sequence[Any]) -> list[Any]:
        """The ``arrays`` as backend arrays, possibly laid out together in one allocation
        (the wgpu backend returns views into one flat buffer, each region aligned to the
        device's storage offset alignment, so that one dispatch can update them all).
        The layout depends only on the arrays' sizes. Default: ``asarray`` of each."""
        return [self.asarray(a) for a in arrays]

    def check_params(self, graph: Any, dim: int) -> None:
        """Check that router parameters q, k [N, ``dim``] on ``graph`` fit this backend's
        device limits, before anything is allocated: nothing to check by default; the wgpu
        backend checks that 4 rows of its node-major scatter state fit one storage binding and
        plans q and k past one binding here (its row windows).

        Raises:
            DeviceLimitError: what does not fit (the node, the bytes and the limit named).
        """

    def edge_input(self, graph: Any, x: Any) -> Any:
        """``x`` (an [E] array of ``graph``) as :meth:`pack` should receive it: unchanged by
        default; the wgpu backend gives a graph cut into edge windows (its [E] arrays past one
        storage binding) a device array in the windows' layout, so a packed [E] parameter
        keeps that layout (and its optimizer moments, :meth:`zeros_like_packed`)."""
        return x

    def zeros_like_packed(self, arrays: Sequence[Any]) -> list[Any]:
        """Zero-filled float arrays with the shapes of ``arrays`` and, where ``arrays`` came
        from :meth:`pack`, the same layout (e.g. optimizer moments of packed parameters).
        Default: ``zeros`` of each shape."""
        return [self.zeros(tuple(a.shape)) for a in arrays]

    def read_packed(self, arrays: Sequence[Any]) -> np.ndarray:
        """The float ``arrays`` raveled and concatenated in order into one new 1-D numpy array
        of ``self.dtype`` (on a GPU backend: one readback for all of them, e.g. a gradient's
        q, k and bias for an all-reduce)."""
        parts = [np.ravel(self.to_numpy(a)).astype(self.dtype, copy=False) for a in arrays]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)

    def write_packed(self, flat: np.ndarray, arrays: Sequence[Any]) -> None:
        """**In place**: fill the float ``arrays`` (backend arrays) with consecutive segments of
        the 1-D numpy array ``flat`` (the layout of :meth:`read_packed`; ``flat.size`` must be
        the arrays' total size), one :meth:`write` each (no allocation)."""
        offset = 0
        for a in arrays:
            n = int(np.prod(a.shape))
            self.write(a, np.reshape(flat[offset : offset + n], a.shape))
            offset += n

    def synchronize(self) -> None:
        """Wait until every queued operation has finished (no-op on CPU backends)."""

    def flush(self) -> None:
        """Start the queued operations without waiting (no-op on CPU backends); a GPU backend
        can then reuse the buffers of arrays dropped since."""

    def describe(self) -> str:
        """One line naming the backend (and adapter) for logs."""
        return self.name

    # ------------------------------------------------------------ forward ops
    @abstractmethod
    def edge_logits(self, graph: Graph, q: Any, k: Any, bias: Any) -> Any:
        """logit[e] = dot(q[src[e]], k[col_idx[e]]) + bias[e].

        q, k: float [N, d]; bias: float [E]. Returns float [E]."""

    @abstractmethod
    def segment_topk(self, graph: Graph, values: Any, k: int) -> Any:
        """bool [E]: True for the ``k`` largest ``values`` of each segment (ties go to the
        lower edge index). ``k == 0`` or a segment of degree <= k keeps every edge."""

    @abstractmethod
    def segment_softmax(self, graph: Graph, logits: Any, tau: float = 1.0, top_k: int = 0) -> Any:
        """pi [E] as docs/definitions.md §2: z = logits / tau (clamped to the dtype's finite range), keep the
        top_k largest z of each segment, softmax over the kept edges of each segment,
        0 on dropped edges. Empty segments are fine. No NaN for any finite input."""

    def edge_probs(self, graph: Graph, q: Any, k: Any, bias: Any, tau: float = 1.0, top_k: int = 0) -> Any:
        """pi [E] = segment_softmax(edge_logits(q, k, bias), tau, top_k): the router's forward
        edge probabilities (q, k float [N, d]; bias float [E]). A backend may fuse the two (the
        wgpu backend does: the logits are never stored); this default composes them.

        Raises:
            InvalidArgumentError: ``top_k`` not an int >= 0."""
        top_k = check_int(top_k, "top_k", 0)
        return self.segment_softmax(graph, self.edge_logits(graph, q, k, bias), tau, top_k)

    @abstractmethod
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
        """next [B, N]: next[b, k] = sum over edges e with col_idx[e] = k of
        alpha * active[b, src[e]] * energies[b, src[e]] * pi[e]; plus energies[b, k] when
        ``retain_sinks`` and k has out-degree 0. With ``return_flow`` the result is
        ``(next, flow)`` with flow [B, E] as :meth:`edge_flow` (the flow is the largest array;
        it is only materialized on request).

        energies: float [B, N]; pi: float [E]; active: bool [B, N] or None (all active)."""

    @abstractmethod
    def edge_flow(self, graph: Graph, energies: Any, pi: Any, alpha: float = 1.0, active: Any = None) -> Any:
        """flow [B, E]: alpha * active[b, src[e]] * energies[b, src[e]] * pi[e]."""

    @abstractmethod
    def step_metrics(
        self, graph: Graph, energies: Any, next_energies: Any, pi: Any, alpha: float = 1.0, active: Any = None
    ) -> Any:
        """float [5]: the metrics of one step, in the order of ``METRIC_NAMES``:
        total_energy (mean over b of sum_k next[b, k]), active_nodes (mean over b of the count
        of j with active[b, j] and energies[b, j] != 0), active_edges (mean over b of the
        count of e with pi[e] > 0 and active[b, src[e]]), max_edge_flow (max of edge_flow,
        0 when empty), avg_entropy (mean over non-empty segments of -sum pi log pi, 0 log 0 = 0;
        0 when there is no non-empty segment). Batch means are 0 when B = 0."""

    # ----------------------------------------------------------- backward ops
    @abstractmethod
    def energy_scatter_backward(
        self,
        graph: Graph,
        energies: Any,
        pi: Any,
        grad_next: Any,
        alpha: float = 1.0,
        active: Any = None,
        retain_sinks: bool = False,
        grad_energies: bool = True,
        grad_pi_acc: Any = None,
    ) -> tuple[Any, Any]:
        """(grad_energies [B, N], grad_pi [E]) of :meth:`energy_scatter` given
        grad_next = dL/dnext [B, N] (grad_energies is None, and not computed, when the
        ``grad_energies`` argument is False; with ``grad_pi_acc`` [E], the gradient of other
        uses of pi, the returned grad_pi is grad_pi_acc + the sum below, a new array):

        grad_energies[b, j] = alpha * active[b, j] * sum_{e in segment j} pi[e] * grad_next[b, col_idx[e]]
                              (+ grad_next[b, j] if retain_sinks and j is a sink)
        grad_pi[e] = sum_b alpha * active[b, src[e]] * energies[b, src[e]] * grad_next[b, col_idx[e]]
        """

    # ------------------------------------------- the router's multi-step scatter (layout hooks)
    # Router.forward / backward pass the batched state between steps through these four
    # methods. The defaults keep the public [B, N] arrays; a backend may keep another layout
    # inside (wgpu: node-major, see backends/webgpu/node_major.py). States are opaque: only
    # the backend that made one reads it.
    def scatter_state(self, graph: Graph, energies: Any, active: Any) -> tuple[Any, Any]:
        """(state, active_state) of energies float [B, N] and active (bool [B, N] or None) for
        :meth:`scatter_step` and :meth:`scatter_step_backward`. Default: the arrays themselves."""
        return energies, active

    def scatter_step(
        self, graph: Graph, state: Any, pi: Any, alpha: float, active_state: Any, retain_sinks: bool, last: bool
    ) -> Any:
        """:meth:`energy_scatter` of a state: the next state, a float [B, N] array when ``last``."""
        return self.energy_scatter(graph, state, pi, alpha, active_state, retain_sinks)

    def scatter_step_backward(
        self, graph: Graph, state: Any, pi: Any, grad_next: Any, alpha: float, active_state: Any, retain_sinks: bool,
        grad_energies: bool, grad_pi_acc: Any, last: bool,
    ) -> tuple[Any, Any]:
        """:meth:`energy_scatter_backward` of a :meth:`scatter_step`: ``grad_next`` is float
        [B, N] for the forward's last step, else the gradient state returned for the step after;
        the returned input-energy gradient is a state, float [B, N] when ``last`` (the
        forward's first step)."""
        return self.energy_scatter_backward(graph, state, pi, grad_next, alpha, active_state, retain_sinks,
                                            grad_energies, grad_pi_acc)

    def public_state(self, state: Any) -> Any:
        """A state as float [B, N] (default: the state itself)."""
        return state

    @abstractmethod
    def segment_softmax_backward(self, graph: Graph, pi: Any, grad_pi: Any, tau: float = 1.0) -> Any:
        """grad_logits [E] = pi * (grad_pi - sum_{e' in segment} pi[e'] grad_pi[e']) / tau
        (0 on edges dropped by top-k, since pi = 0 there)."""

    @abstractmethod
    def edge_logits_backward(self, graph: Graph, q: Any, k: Any, grad_logits: Any) -> tuple[Any, Any, Any]:
        """(grad_q [N, d], grad_k [N, d], grad_bias [E]) of :meth:`edge_logits`:
        grad_q[j] = sum_{e in segment j} grad_logits[e] * k[col_idx[e]];
        grad_k[n] = sum_{e : col_idx[e] = n} grad_logits[e] * q[src[e]] (over the reverse index);
        grad_bias = grad_logits (equal values; a backend may return the grad_logits array itself,
        so neither may be written in place afterwards)."""

    def softmax_logits_backward(
        self, graph: Graph, pi: Any, grad_pi: Any, tau: float, q: Any, k: Any
    ) -> tuple[Any, Any, Any]:
        """(grad_q [N, d], grad_k [N, d], grad_bias [E]) of ``edge_logits`` followed by
        ``segment_softmax``: :meth:`segment_softmax_backward` then :meth:`edge_logits_backward`
        (the same values; a GPU backend fuses them). grad_bias is grad_logits."""
        return self.edge_logits_backward(graph, q, k, self.segment_softmax_backward(graph, pi, grad_pi, tau))

    # ------------------------------------------------------ elementwise / misc
    @abstractmethod
    def add(self, a: Any, b: Any) -> Any:
        """a + b, same shapes."""

    @abstractmethod
    def sum_squares(self, arrays: Sequence[Any]) -> Any:
        """float [1]: sum of squares of every element of every array (a fixed-order reduction)."""

    # ------------------------------------------------------ losses (docs/definitions.md §5)
    @abstractmethod
    def mse(self, pred: Any, target: Any, mask: Any = None, final: bool = True) -> tuple[Any, Any]:
        """(loss float [1], grad [same shape as pred]): mean of (pred - target)^2 over the
        elements where mask is True (all when None); grad 2 (pred - target) / count on masked
        elements, 0 elsewhere. count = 0 gives loss 0 and grad 0.

        ``final=False`` allows a backend to leave the loss array unwritten until the next
        :meth:`adamw_step` given it as ``loss`` (which then computes it), or :meth:`finish_loss`:
        the caller passes it to one of them before anything else reads it. The gradient is
        complete either way."""

    def finish_loss(self, loss: Any) -> None:
        """Complete a loss array that ``mse(..., final=False)`` left unwritten and no
        :meth:`adamw_step` took over (nothing to do otherwise, and on backends that never defer)."""

    @abstractmethod
    def cross_entropy(self, pred: Any, target: Any, eps: float = 1e-12) -> tuple[Any, Any]:
        """(loss float [1], grad): pred, target [B, N] (or [N], then B = 1);
        loss = -sum target * log(max(pred, eps)) / B; grad = -target / max(pred, eps) / B,
        0 where pred < eps. B = 0 gives loss 0."""

    @abstractmethod
    def entropy_regularization(self, graph: Graph, pi: Any, lam: float) -> tuple[Any, Any]:
        """(loss float [1], grad_pi [E]): loss = -lam * sum_{pi > 0} pi log pi;
        grad = -lam (log pi + 1) where pi > 0, 0 elsewhere."""

    # ------------------------------------------------------ optimizer (docs/definitions.md §6)
    @abstractmethod
    def adamw_step(
        self,
        params: Sequence[Any],
        grads: Sequence[Any],
        exp_avg: Sequence[Any],
        exp_avg_sq: Sequence[Any],
        step: Any,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        max_grad_norm: float | None,
        loss: Any = None,
        return_skipped: bool = False,
    ) -> Any:
        """One clipped AdamW update, **in place** on params, exp_avg, exp_avg_sq and step.

        ``step`` is a backend array float [1] holding t (number of updates done), or float
        [3] holding [t, consecutive skipped steps, total skipped steps]; t is incremented
        first. Clipping (torch.nn.utils.clip_grad_norm_): total = sqrt(sum of
        squares of all grads); coef = min(1, max_grad_norm / (total + 1e-6)) if
        max_grad_norm is not None else 1; g = grad * coef. Then for each parameter p:
        p *= 1 - lr * weight_decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

        Non-finite guard (torch GradScaler's ``found_inf``), decided on the device with no
        readback: if the sum of squares of the grads (in ``self.dtype``: it overflows to inf
        where a float32 square would) or ``loss`` (optional float [1]) is NaN or +-inf, nothing
        is updated: params, m, v and t keep their values, and with a [3] ``step`` both skip
        counts grow by 1 (an applied update resets the consecutive count to 0).

        Returns float [1]: the total gradient norm before clipping; with ``return_skipped``
        ``(norm, skipped)`` where skipped is float [1], 1.0 if the update was skipped else 0.0."""
