"""The energetic router: parameters, multi-step forward, backward through all steps.

Shapes: N nodes, E edges, d feature dimension, B batch rows (B may be 0).
The router validates every user input (shapes, dtypes, values) *before* handing work to
its backend, so a bad call raises a clear error and leaves the backend usable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import Backend, METRIC_NAMES, get_backend
from .errors import InvalidArgumentError, ShapeError
from .graph import Graph
from .shortrepr import short_repr
from .validation import U32_MAX, check_float, check_int, check_not_foreign, check_tau, float_array, mask_array
from .validation import memory_budget

__all__ = ["RouterParams", "Router", "RouterOutput", "Gradients", "LossAndGrads", "TrainStepResult"]

#: a forward with keep_history=False submits its commands every this many steps, so that the
#: buffers of dropped states return to the pool (memory independent of ``steps``)
_FLUSH_EVERY = 128


def _device_array(be: Backend, value: Any) -> bool:
    """True for a backend array that is not a plain numpy array. numpy inputs (which are also
    the NumPy backend's arrays) always go through the full dtype/shape/finiteness checks."""
    return be.is_array(value) and not isinstance(value, np.ndarray)


@dataclass
class RouterParams:
    """Router parameters and hyper-parameters.

    Attributes:
        q, k: float [N, d] query and key projections.
        bias: float [E] per-edge bias.
        tau: softmax temperature: a float whose float32 is a normal positive number
            (>= 1.1754944e-38, the smallest normal float32).
        alpha: energy distribution coefficient (finite in float32).
        top_k: 0 = keep every edge; else keep the top_k most probable edges of each segment
            (at most 2**32 - 1: it reaches the shaders as a u32).
    """

    q: np.ndarray
    k: np.ndarray
    bias: np.ndarray
    tau: float = 1.0
    alpha: float = 1.0
    top_k: int = 0

    @classmethod
    def init(
        cls,
        graph: Graph,
        dim: int,
        tau: float = 1.0,
        alpha: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        noise: float = 0.01,
    ) -> "RouterParams":
        """Seeded sin/cos positional initialization.

        Node positions ``(p0, p1)`` (layer, index for lattices) give features
        ``sin(f_c * theta + p0 * f_c / 2)`` (even columns c) and ``cos(...)`` (odd columns) with
        ``theta = 2 pi p1 / P`` (P = 1 + the largest p1) and frequencies ``f_c = c // 2 + 1``,
        scaled by ``1/sqrt(dim)``, plus ``noise`` times seeded Gaussian noise (different for Q
        and K). ``bias`` starts at the graph's ``weights`` (zeros when it has none).
        The same (graph, dim, seed) always gives the same arrays.
        """
        if not isinstance(graph, Graph):
            raise InvalidArgumentError(f"graph must be a Graph, got {type(graph).__name__}")
        dim = check_int(dim, "dim", 1)
        tau = check_tau(tau, "tau")
        alpha = check_float(alpha, "alpha")
        top_k = check_int(top_k, "top_k", 0, U32_MAX)
        seed = check_int(seed, "seed", 0)
        noise = check_float(noise, "noise")
        n = graph.num_nodes
        pos = graph.positions
        period = max(float(pos[:, 1].max() + 1), 1.0) if n else 1.0
        theta = 2.0 * np.pi * pos[:, 1] / period
        c = np.arange(dim)
        freq = (c // 2 + 1).astype(np.float64)
        phase = 0.5 * (c // 2 + 1)
        angle = freq[None, :] * theta[:, None] + pos[:, 0:1] * phase[None, :]
        feats = np.where(c % 2 == 0, np.sin(angle), np.cos(angle)) / np.sqrt(dim)
        rng = np.random.default_rng(seed)
        q = feats + noise * rng.standard_normal((n, dim))
        k = feats + noise * rng.standard_normal((n, dim))
        if graph.weights is None:
            bias = np.zeros(graph.num_edges)
        else:
            bias = float_array(graph.weights, "graph.weights", None, np.float32)
        return cls(
            q.astype(np.float32), k.astype(np.float32), bias.astype(np.float32), tau=tau, alpha=alpha, top_k=top_k
        )

    @property
    def dim(self) -> int:
        """d, the feature dimension (columns of ``q``)."""
        return int(np.shape(self.q)[1])

    def validate(self, graph: Graph, dtype: Any = np.float32) -> "RouterParams":
        """Check shapes and values against ``graph``; return a copy with numpy arrays of
        ``dtype`` (the backend's float dtype; every value must be finite in it)."""
        def host(x: Any) -> Any:  # a backend array (any backend) is read back: params are copied anyway
            return x.backend.to_numpy(x) if hasattr(x, "backend") and not isinstance(x, np.ndarray) else x

        q = float_array(host(self.q), "params.q", None, dtype)
        if q.ndim != 2:
            raise ShapeError(f"params.q must be 2-D [N, d], got shape {q.shape}")
        n, d = graph.num_nodes, q.shape[1]
        if d < 1:
            raise ShapeError(f"params.q must have d >= 1 columns, got shape {q.shape}")
        return RouterParams(
            q=float_array(q, "params.q", (n, d), dtype),
            k=float_array(host(self.k), "params.k", (n, d), dtype),
            bias=float_array(host(self.bias), "params.bias", (graph.num_edges,), dtype),
            tau=check_tau(self.tau, "params.tau"),
            alpha=check_float(self.alpha, "params.alpha"),
            top_k=check_int(self.top_k, "params.top_k", 0, U32_MAX),
        )


@dataclass
class RouterOutput:
    """The result of :meth:`Router.forward`. Arrays are backend arrays (``to_numpy`` them).

    Attributes:
        next_energies: float [B, N] (or [N] for an unbatched input) after ``steps`` steps.
        edge_pi: float [E], the routing probabilities.
        edge_flow: float [B, E] (or [E]) of the last step, computed on first access.
        metrics: dict of the last step's metrics (``METRIC_NAMES``), read back on first access.
        history: the backend's own states (``steps + 1``; the last two with
            ``keep_history=False``): on wgpu every state but the last is node-major, an internal
            layout; :meth:`energies_at` gives any of them as float [B, N] (or [N]).
    """

    router: "Router"
    edge_pi: Any
    history: list[Any]  # energies before each step and after the last: steps + 1 backend states
    # (Backend.scatter_state; the last is [B, N]; with keep_history=False only the last two)
    active: Any
    batched: bool
    steps: int
    retain_sinks: bool
    params_used: tuple[Any, Any, Any]
    keep_history: bool = True
    active_state: Any = None  # the mask as the backend's scatter state (Backend.scatter_state)
    _flow: Any = field(default=None, repr=False)
    _metrics: dict[str, float] | None = field(default=None, repr=False)
    _metrics_array: Any = field(default=None, repr=False)

    @property
    def next_energies(self) -> Any:
        """float [B, N] (or [N] for an unbatched input): the energies after the last step."""
        return self._unbatch(self.history[-1])

    @property
    def batch_size(self) -> int:
        """B, the number of rows routed (1 for an unbatched input)."""
        return int(self.history[-1].shape[0])

    def energies_at(self, t: int) -> Any:
        """float [B, N] (or [N]): the energies before step ``t`` (0-based; ``t = steps`` is
        after the last step), as a backend array. With ``keep_history=False`` only the last
        two states exist (``t = steps - 1`` and ``steps``). On wgpu an earlier state costs one
        conversion dispatch."""
        first = self.steps + 1 - len(self.history)
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) or not first <= t <= self.steps:
            raise InvalidArgumentError(
                f"t must be an int in [{first}, {self.steps}] (the states this output kept), got {short_repr(t)}"
            )
        return self._unbatch(self.router.backend.public_state(self.history[int(t) - first]))

    def _unbatch(self, x: Any) -> Any:
        if self.batched:
            return x
        return self.router.backend.reshape(x, tuple(x.shape[1:]))

    @property
    def edge_flow(self) -> Any:
        """float [B, E] (or [E]): the energy each edge carried in the last step."""
        if self._flow is None:
            r = self.router
            before = r.backend.public_state(self.history[-2])
            self._flow = r.backend.edge_flow(r.graph, before, self.edge_pi, r.alpha, self.active)
        return self._unbatch(self._flow)

    @property
    def metrics_array(self) -> Any:
        """float [5] backend array of the metrics (no readback)."""
        if self._metrics_array is None:
            r = self.router
            self._metrics_array = r.backend.step_metrics(
                r.graph, r.backend.public_state(self.history[-2]), self.history[-1], self.edge_pi, r.alpha, self.active
            )
        return self._metrics_array

    @property
    def metrics(self) -> dict[str, float]:
        """The last step's metrics by name (``METRIC_NAMES``), read back on first access."""
        if self._metrics is None:
            values = self.router.backend.to_numpy(self.metrics_array)
            self._metrics = {name: float(v) for name, v in zip(METRIC_NAMES, values)}
        return self._metrics


@dataclass
class Gradients:
    """Gradients of a loss with respect to the router's parameters and its input energies.

    Attributes:
        q, k: float [N, d]; bias: float [E]; energies: float, the shape of the forward input
            (None when ``backward`` ran with ``energies_grad=False``, as ``train_step`` does).
        norm: sqrt(|q|^2 + |k|^2 + |bias|^2) as a Python float (read back on access).
        norm_sq: the same squared, as a float [1] backend array, computed on first access
            (a training step does not pay for it: the optimizer computes its own norm).
    """

    q: Any
    k: Any
    bias: Any
    energies: Any
    backend: Backend
    _norm_sq: Any = field(default=None, repr=False)

    @property
    def norm_sq(self) -> Any:
        """float [1] backend array: |q|^2 + |k|^2 + |bias|^2 (computed on first access)."""
        if self._norm_sq is None:
            self._norm_sq = self.backend.sum_squares([self.q, self.k, self.bias])
        return self._norm_sq

    @property
    def norm(self) -> float:
        """sqrt(``norm_sq``) as a Python float (reads back)."""
        return float(np.sqrt(float(self.backend.to_numpy(self.norm_sq)[0])))

    def as_list(self) -> list[Any]:
        """[q, k, bias]: the parameter gradients, in the optimizer's order."""
        return [self.q, self.k, self.bias]


@dataclass
class LossAndGrads:
    """The result of :meth:`Router.loss_and_grads`: the forward output, the loss as a float
    [1] backend array (``loss`` reads it back) and the :class:`Gradients`."""

    backend: Backend
    output: RouterOutput
    loss_array: Any
    grads: Gradients

    @property
    def loss(self) -> float:
        """The loss as a Python float (one readback on a GPU backend)."""
        return float(self.backend.to_numpy(self.loss_array)[0])


@dataclass
class TrainStepResult:
    """The handle returned by :meth:`Router.train_step`; values are read back on access.

    Attributes:
        loss: the step's loss (float, read back on first access).
        grad_norm: the global gradient norm before clipping (float, read back on access).
        skipped: True when the non-finite guard skipped the update (the loss or the gradient
            norm was NaN or inf: parameters, optimizer moments and step count unchanged);
            read back on access.
        metrics: the forward's metrics dict (read back on access).
        loss_array, grad_norm_array: float [1] backend arrays (no readback).
        skipped_array: float [1] backend array, 1.0 when skipped (no readback).
    """

    backend: Backend
    output: RouterOutput
    loss_array: Any
    grad_norm_array: Any
    grads: Gradients
    skipped_array: Any = None

    @property
    def loss(self) -> float:
        """The step's loss (read back on access)."""
        return float(self.backend.to_numpy(self.loss_array)[0])

    @property
    def grad_norm(self) -> float:
        """The global gradient norm before clipping (read back on access)."""
        return float(self.backend.to_numpy(self.grad_norm_array)[0])

    @property
    def skipped(self) -> bool:
        """True when the non-finite guard skipped the update (read back on access)."""
        if self.skipped_array is None:
            return False
        return bool(self.backend.to_numpy(self.skipped_array)[0] != 0)

    @property
    def metrics(self) -> dict[str, float]:
        """The forward's metrics (read back on access)."""
        return self.output.metrics


class Router:
    """The energetic router on a backend.

    Args:
        graph: the routing graph.
        params: initial parameters (copied to the backend).
        backend: a Backend, a backend name, or None for ``get_backend("auto")``.
    """

    PARAM_NAMES = ("q", "k", "bias")

    def __init__(self, graph: Graph, params: RouterParams, backend: Backend | str | None = None) -> None:
        if not isinstance(graph, Graph):
            raise InvalidArgumentError(f"graph must be a Graph, got {type(graph).__name__}")
        if not isinstance(params, RouterParams):
            raise InvalidArgumentError(f"params must be a RouterParams, got {type(params).__name__}")
        self.graph = graph
        self.backend = get_backend("auto" if backend is None else backend)
        self._defer_loss = False  # set by train_step around loss_and_grads
        self.set_params(params)

    # -------------------------------------------------------------- parameters
    def set_params(self, params: RouterParams) -> None:
        """Validate ``params`` against the graph and upload them to the backend.

        Raises:
            DeviceLimitError: (wgpu) before the parameters are allocated: q and k past one
                binding (split at node blocks)
                whose row windows cannot hold a node's out-edges, or one gathered row
                (docs/architecture.md, "Limits"). A bias past one binding lives in the graph's
                edge windows.
        """
        be = self.backend
        p = params.validate(self.graph, be.dtype)
        # one allocation on backends that pack (wgpu: views into one flat buffer, so that the
        # optimizer updates every parameter in one dispatch)
        be.check_params(self.graph, p.q.shape[1])  # e.g. q and k past one storage binding (wgpu)
        self.q, self.k, self.bias = be.pack([p.q, p.k, be.edge_input(self.graph, p.bias)])
        be.tag_memory([self.q, self.k, self.bias], "parameters")  # backend.memory()'s "parameters"
        self.tau, self.alpha, self.top_k = p.tau, p.alpha, p.top_k
        self.dim = p.q.shape[1]

    # tau, alpha and top_k are checked on every assignment (they reach float32 / u32 uniforms)
    @property
    def tau(self) -> float:
        """Softmax temperature (float32 normal positive: >= 1.1754944e-38)."""
        return self._tau

    @tau.setter
    def tau(self, value: Any) -> None:
        self._tau = check_tau(value, "tau")

    @property
    def alpha(self) -> float:
        """Energy distribution coefficient (finite in float32)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: Any) -> None:
        self._alpha = check_float(value, "alpha")

    @property
    def top_k(self) -> int:
        """0 = keep every edge, else the top_k most probable edges of each segment (<= 2**32 - 1)."""
        return self._top_k

    @top_k.setter
    def top_k(self, value: Any) -> None:
        self._top_k = check_int(value, "top_k", 0, U32_MAX)

    def params(self) -> RouterParams:
        """A copy of the current parameters as numpy arrays (reads back from a GPU backend)."""
        be = self.backend
        return RouterParams(
            be.to_numpy(self.q), be.to_numpy(self.k), be.to_numpy(self.bias), self.tau, self.alpha, self.top_k
        )

    def parameters(self) -> list[Any]:
        """[q, k, bias] backend arrays (the live parameters, updated in place by optimizers)."""
        return [self.q, self.k, self.bias]

    def to(self, backend: Backend | str) -> "Router":
        """Move the parameters to another backend (this router object is updated and returned)."""
        params = self.params()
        self.backend = get_backend(backend)
        self.set_params(params)
        return self

    # ------------------------------------------------------------- validation
    def _energies(self, energies: Any) -> tuple[Any, bool]:
        be, n = self.backend, self.graph.num_nodes
        if _device_array(be, energies):
            shape = tuple(energies.shape)
            if np.dtype(energies.dtype) != be.dtype:
                raise ShapeError(f"energies must have dtype {be.dtype}, got {energies.dtype}")
            arr = energies
        else:
            check_not_foreign(be, energies, "energies")
            arr_np = float_array(energies, "energies", None, be.dtype)
            shape = arr_np.shape
            arr = None
        if len(shape) not in (1, 2) or shape[-1] != n:
            raise ShapeError(f"energies must have shape [N] or [B, N] with N = {n}, got {shape}")
        batched = len(shape) == 2
        if arr is None:
            arr = be.asarray(arr_np.reshape(-1, n) if not batched else arr_np, dtype=be.dtype)
        elif not batched:
            arr = be.reshape(arr, (1, n))
        return arr, batched

    def _active(self, active: Any, batch: int) -> Any:
        if active is None:
            return None
        be, n = self.backend, self.graph.num_nodes
        if _device_array(be, active):
            if np.dtype(active.dtype) != np.bool_ or tuple(active.shape) != (batch, n):
                raise ShapeError(f"active must be bool [{batch}, {n}], got {active.dtype} {tuple(active.shape)}")
            return active
        check_not_foreign(be, active, "active")
        a = mask_array(active, "active")
        if a.shape == (n,):
            a = np.broadcast_to(a, (batch, n))
        elif a.shape != (batch, n):
            raise ShapeError(f"active must have shape [N] = ({n},) or [B, N] = ({batch}, {n}), got {a.shape}")
        return be.asarray(np.ascontiguousarray(a))

    def _mask(self, mask: Any, shape: tuple[int, ...]) -> Any:
        be = self.backend
        if _device_array(be, mask):
            if tuple(mask.shape) != shape or np.dtype(mask.dtype) != np.bool_:
                raise ShapeError(f"mask must be bool {shape}, got {mask.dtype} {tuple(mask.shape)}")
            return mask
        check_not_foreign(be, mask, "mask")
        m = mask_array(mask, "mask")
        if m.shape != shape:
            raise ShapeError(f"mask must have shape {shape} (the target's), got {m.shape}")
        return be.asarray(m)

    def _check_history(self, steps: int, batch: int, keep_history: bool) -> None:
        """Refuse a forward whose energies history cannot fit in memory, before any work."""
        per_state = batch * self.graph.num_nodes * np.dtype(self.backend.dtype).itemsize
        states = steps + 1 if keep_history else 3  # without history: input, previous, last
        need = states * per_state
        budget = memory_budget()
        if need > budget:
            hint = "" if not keep_history else " (keep_history=False keeps only the last states)"
            raise InvalidArgumentError(
                f"steps = {steps} needs {need} bytes of energies history ({states} states of [{batch}, "
                f"{self.graph.num_nodes}]), over the memory budget of {budget} bytes{hint}"
            )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        energies: Any,
        active: Any = None,
        steps: int = 1,
        retain_sinks: bool = False,
        keep_history: bool = True,
    ) -> RouterOutput:
        """Route ``energies`` ([N] or [B, N] float) along the graph ``steps`` times.

        Args:
            energies: float [N] or [B, N] (B may be 0), numpy or a backend array.
            active: bool [N] or [B, N]; inactive nodes send nothing (default: all active).
            steps: T >= 1 applications of the step.
            retain_sinks: out-degree-0 nodes keep their energy from step to step.
            keep_history: keep the energies before every step (steps + 1 arrays [B, N]), which
                :meth:`backward` needs. False keeps only the last two states (memory independent
                of ``steps``; ``edge_flow`` and ``metrics`` still work, ``backward`` refuses).

        Raises:
            InvalidArgumentError: naming ``steps`` when the history would not fit in memory
                (estimate (steps + 1) * B * N * itemsize bytes, against half the physical memory).
        """
        steps = check_int(steps, "steps", 1)
        if not isinstance(retain_sinks, (bool, np.bool_)):
            raise InvalidArgumentError(f"retain_sinks must be a bool, got {short_repr(retain_sinks)}")
        if not isinstance(keep_history, (bool, np.bool_)):
            raise InvalidArgumentError(f"keep_history must be a bool, got {short_repr(keep_history)}")
        x, batched = self._energies(energies)
        self._check_history(steps, int(x.shape[0]), bool(keep_history))
        act = self._active(active, int(x.shape[0]))
        be, g = self.backend, self.graph
        pi = be.edge_probs(g, self.q, self.k, self.bias, self.tau, self.top_k)
        # the backend's own layout between steps (wgpu: node-major), [B, N] after the last
        x, act_state = be.scatter_state(g, x, act)
        history = [x]
        for i in range(steps):
            x = be.scatter_step(g, x, pi, self.alpha, act_state, bool(retain_sinks), i == steps - 1)
            history.append(x)
            if not keep_history and len(history) > 2:
                del history[0]  # only the previous and the last state are kept
                if i % _FLUSH_EVERY == _FLUSH_EVERY - 1:
                    be.flush()  # dropped states are reused only once their commands are submitted
        return RouterOutput(
            router=self,
            edge_pi=pi,
            history=history,
            active=act,
            batched=batched,
            steps=steps,
            retain_sinks=bool(retain_sinks),
            params_used=(self.q, self.k, self.bias),
            keep_history=bool(keep_history),
            active_state=act_state,
        )

    __call__ = forward

    # ----------------------------------------------------------------- backward
    def backward(self, out: RouterOutput, grad_next: Any, grad_pi: Any = None, energies_grad: bool = True) -> Gradients:
        """Gradients of a loss L through all steps of ``out``.

        Args:
            out: the output of :meth:`forward` on this router.
            grad_next: dL/dnext_energies, the shape of ``out.next_energies``.
            grad_pi: optional extra dL/dpi [E] (e.g. from entropy regularization).
            energies_grad: compute ``Gradients.energies`` (dL/d the input energies, the shape
                of the input). False leaves it None and skips its kernels in the last
                backward step (``train_step`` does not need it).
        """
        if not isinstance(energies_grad, (bool, np.bool_)):
            raise InvalidArgumentError(f"energies_grad must be True or False, got {energies_grad!r}")
        if not isinstance(out, RouterOutput) or out.router is not self:
            raise InvalidArgumentError("out must be the RouterOutput of this router's forward()")
        if not out.keep_history:
            raise InvalidArgumentError(
                "out was computed by forward(..., keep_history=False): it has no history to backpropagate "
                "through; run forward with keep_history=True (the default) before backward"
            )
        be, g = self.backend, self.graph
        n, b = g.num_nodes, out.batch_size
        expected = (b, n) if out.batched else (n,)
        gn = self._grad_array(grad_next, "grad_next", expected)
        if not out.batched:
            gn = be.reshape(gn, (1, n))
        extra = None if grad_pi is None else self._grad_array(grad_pi, "grad_pi", (g.num_edges,))
        gpi_total = extra
        for t in reversed(range(out.steps)):  # each step's dL/dpi is added to the total in its kernel
            gn, gpi_total = be.scatter_step_backward(g, out.history[t], out.edge_pi, gn, self.alpha, out.active_state,
                                                     out.retain_sinks, t > 0 or bool(energies_grad), gpi_total, t == 0)
        q, k, _ = out.params_used
        gq, gk, gb = be.softmax_logits_backward(g, out.edge_pi, gpi_total, self.tau, q, k)
        return Gradients(
            q=gq,
            k=gk,
            bias=gb,
            energies=gn if out.batched or gn is None else be.reshape(gn, (n,)),
            backend=be,
        )

    def _grad_array(self, value: Any, name: str, shape: tuple[int, ...]) -> Any:
        be = self.backend
        if _device_array(be, value):
            if tuple(value.shape) != shape:
                raise ShapeError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
            if np.dtype(value.dtype) != be.dtype:
                raise ShapeError(f"{name} must have dtype {be.dtype}, got {value.dtype}")
            return value
        check_not_foreign(be, value, name)
        return be.asarray(float_array(value, name, shape, be.dtype), dtype=be.dtype)

    # --------------------------------------------------------------- training
    def train_step(
        self,
        energies: Any,
        target: Any,
        optimizer: Any,
        loss: str = "mse",
        mask: Any = None,
        active: Any = None,
        steps: int = 1,
        retain_sinks: bool = False,
        entropy_lambda: float = 0.0,
        eps: float = 1e-12,
    ) -> "TrainStepResult":
        """One training step on this router's backend: forward, loss and its gradient,
        backward through all steps (:meth:`loss_and_grads`), clipped AdamW (``optimizer``).

        Nothing is read back: on a GPU backend the whole step is encoded on the device, and
        the returned :class:`TrainStepResult` reads the loss, gradient norm and metrics only
        when asked.

        Args:
            energies: float [N] or [B, N]; target: the same shape.
            optimizer: an :class:`~energetic_wgpu.AdamW` over this router.
            loss: "mse" or "cross_entropy".
            mask: the shape of target, for "mse" only (None: every element): bool, or numbers
                that are all 0 or 1.
            entropy_lambda: adds ``-lambda * sum pi log pi`` (entropy regularization) when != 0.
            eps: cross-entropy clamp (finite, > 0 in float32), as :func:`energetic_wgpu.losses.cross_entropy`.

        A step whose loss or gradient norm is not finite changes nothing (the optimizer's
        non-finite guard, decided on the device): ``result.skipped`` is then True.
        """
        if getattr(optimizer, "router", None) is not self:
            raise InvalidArgumentError("optimizer must be an optimizer built over this router")
        self._defer_loss = True  # the optimizer step finishes the mse loss (Backend.mse(..., final=False))
        try:
            lg = self.loss_and_grads(
                energies, target, loss=loss, mask=mask, active=active, steps=steps, retain_sinks=retain_sinks,
                entropy_lambda=entropy_lambda, eps=eps,
            )
        finally:
            self._defer_loss = False
        norm = optimizer.step(lg.grads, loss=lg.loss_array)  # completes the loss (its final pass)
        self.backend.finish_loss(lg.loss_array)  # an optimizer that did not: finish it here
        return TrainStepResult(
            backend=self.backend, output=lg.output, loss_array=lg.loss_array, grad_norm_array=norm, grads=lg.grads,
            skipped_array=getattr(optimizer, "last_skipped", None),
        )

    def loss_and_grads(
        self,
        energies: Any,
        target: Any,
        loss: str = "mse",
        mask: Any = None,
        active: Any = None,
        steps: int = 1,
        retain_sinks: bool = False,
        entropy_lambda: float = 0.0,
        eps: float = 1e-12,
    ) -> "LossAndGrads":
        """The first half of :meth:`train_step` (same arguments, no optimizer): forward, loss
        and its gradient, backward. The parameters are not changed, so the gradients can be
        combined with others (e.g. all-reduced across data-parallel ranks by
        :mod:`energetic_wgpu.distributed`) before ``optimizer.step(result.grads, loss=result.loss_array)``.
        Nothing is read back. ``result.grads.energies`` is None (the input-energy gradient is
        not computed: :meth:`backward` with ``energies_grad=True`` gives it)."""
        if loss not in ("mse", "cross_entropy"):
            raise InvalidArgumentError(f"loss must be 'mse' or 'cross_entropy', got {short_repr(loss)}")
        lam = check_float(entropy_lambda, "entropy_lambda")
        eps_v = check_float(eps, "eps", positive=True)
        if mask is not None and loss != "mse":
            raise InvalidArgumentError("mask is only supported with loss='mse'")
        be = self.backend
        out = self.forward(energies, active=active, steps=steps, retain_sinks=retain_sinks)
        shape = tuple(out.next_energies.shape)
        tgt = self._grad_array(target, "target", shape)
        if loss == "mse":
            m = None if mask is None else self._mask(mask, shape)
            # entropy regularization adds to the loss right away: it must be final then
            loss_arr, grad = be.mse(out.next_energies, tgt, m, final=not self._defer_loss or lam != 0.0)
        else:
            loss_arr, grad = be.cross_entropy(out.next_energies, tgt, eps_v)
        grad_pi = None
        if lam != 0.0:
            ent_loss, grad_pi = be.entropy_regularization(self.graph, out.edge_pi, lam)
            loss_arr = be.add(loss_arr, ent_loss)
        grads = self.backward(out, grad, grad_pi, energies_grad=False)
        return LossAndGrads(backend=be, output=out, loss_array=loss_arr, grads=grads)

    def __repr__(self) -> str:
        return (
            f"Router({self.graph!r}, dim={self.dim}, tau={self.tau}, alpha={self.alpha}, "
            f"top_k={self.top_k}, backend={self.backend.describe()!r})"
        )
