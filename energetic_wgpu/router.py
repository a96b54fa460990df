"""The energetic router: parameters, multi-step forward, backward through all steps.

Shapes: N nodes, E edges, d feature dimension, B batch rows (B may be 0).
The router validates every user input (shapes, dtypes, values) *before* handing work to
its backend, so a bad call raises a clear error and leaves the backend usable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import Backend, METRIC_NAMES, get_backend
from .errors import InvalidArgumentError, ShapeError
from .graph import Graph

__all__ = ["RouterParams", "Router", "RouterOutput", "Gradients", "LossAndGrads", "TrainStepResult"]


def _check_float(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidArgumentError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise InvalidArgumentError(f"{name} must be > 0, got {v}")
    return v


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _device_array(be: Backend, value: Any) -> bool:
    """True for a backend array that is not a plain numpy array. numpy inputs (which are also
    the NumPy backend's arrays) always go through the full dtype/shape/finiteness checks."""
    return be.is_array(value) and not isinstance(value, np.ndarray)


def _float_array(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) or arr.dtype == np.bool_:
        raise ShapeError(f"{name} must be a float array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidArgumentError(f"{name} must be finite (no NaN or inf)")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)  # integers are values here, never indices: make them floats
    return arr


@dataclass
class RouterParams:
    """Router parameters and hyper-parameters.

    Attributes:
        q, k: float [N, d] query and key projections.
        bias: float [E] per-edge bias.
        tau: softmax temperature (> 0).
        alpha: energy distribution coefficient.
        top_k: 0 = keep every edge; else keep the top_k most probable edges of each segment.
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
        dim = _check_int(dim, "dim", 1)
        tau = _check_float(tau, "tau", positive=True)
        alpha = _check_float(alpha, "alpha")
        top_k = _check_int(top_k, "top_k", 0)
        seed = _check_int(seed, "seed", 0)
        noise = _check_float(noise, "noise")
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
        bias = np.zeros(graph.num_edges) if graph.weights is None else graph.weights.copy()
        return cls(
            q.astype(np.float32), k.astype(np.float32), bias.astype(np.float32), tau=tau, alpha=alpha, top_k=top_k
        )

    @property
    def dim(self) -> int:
        return int(np.shape(self.q)[1])

    def validate(self, graph: Graph) -> "RouterParams":
        """Check shapes and values against ``graph``; return a copy with numpy arrays."""
        q = np.asarray(self.q)
        if q.ndim != 2:
            raise ShapeError(f"params.q must be 2-D [N, d], got shape {q.shape}")
        n, d = graph.num_nodes, q.shape[1]
        if d < 1:
            raise ShapeError(f"params.q must have d >= 1 columns, got shape {q.shape}")
        return RouterParams(
            q=_float_array(self.q, "params.q", (n, d)),
            k=_float_array(self.k, "params.k", (n, d)),
            bias=_float_array(self.bias, "params.bias", (graph.num_edges,)),
            tau=_check_float(self.tau, "params.tau", positive=True),
            alpha=_check_float(self.alpha, "params.alpha"),
            top_k=_check_int(self.top_k, "params.top_k", 0),
        )


@dataclass
class RouterOutput:
    """The result of :meth:`Router.forward`. Arrays are backend arrays (``to_numpy`` them).

    Attributes:
        next_energies: float [B, N] (or [N] for an unbatched input) after ``steps`` steps.
        edge_pi: float [E], the routing probabilities.
        edge_flow: float [B, E] (or [E]) of the last step, computed on first access.
        metrics: dict of the last step's metrics (``METRIC_NAMES``), read back on first access.
    """

    router: "Router"
    edge_pi: Any
    history: list[Any]  # energies before each step and after the last: steps + 1 arrays [B, N]
    active: Any
    batched: bool
    steps: int
    retain_sinks: bool
    params_used: tuple[Any, Any, Any]
    _flow: Any = field(default=None, repr=False)
    _metrics: dict[str, float] | None = field(default=None, repr=False)
    _metrics_array: Any = field(default=None, repr=False)

    @property
    def next_energies(self) -> Any:
        return self._unbatch(self.history[-1])

    @property
    def batch_size(self) -> int:
        return int(self.history[-1].shape[0])

    def _unbatch(self, x: Any) -> Any:
        if self.batched:
            return x
        return self.router.backend.reshape(x, tuple(x.shape[1:]))

    @property
    def edge_flow(self) -> Any:
        if self._flow is None:
            r = self.router
            self._flow = r.backend.edge_flow(r.graph, self.history[-2], self.edge_pi, r.alpha, self.active)
        return self._unbatch(self._flow)

    @property
    def metrics_array(self) -> Any:
        """float [5] backend array of the metrics (no readback)."""
        if self._metrics_array is None:
            r = self.router
            self._metrics_array = r.backend.step_metrics(
                r.graph, self.history[-2], self.history[-1], self.edge_pi, r.alpha, self.active
            )
        return self._metrics_array

    @property
    def metrics(self) -> dict[str, float]:
        if self._metrics is None:
            values = self.router.backend.to_numpy(self.metrics_array)
            self._metrics = {name: float(v) for name, v in zip(METRIC_NAMES, values)}
        return self._metrics


@dataclass
class Gradients:
    """Gradients of a loss with respect to the router's parameters and its input energies.

    Attributes:
        q, k: float [N, d]; bias: float [E]; energies: float, the shape of the forward input.
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
        if self._norm_sq is None:
            self._norm_sq = self.backend.sum_squares([self.q, self.k, self.bias])
        return self._norm_sq

    @property
    def norm(self) -> float:
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
        return float(self.backend.to_numpy(self.loss_array)[0])


@dataclass
class TrainStepResult:
    """The handle returned by :meth:`Router.train_step`; values are read back on access.

    Attributes:
        loss: the step's loss (float, read back on first access).
        grad_norm: the global gradient norm before clipping (float, read back on access).
        metrics: the forward's metrics dict (read back on access).
        loss_array, grad_norm_array: float [1] backend arrays (no readback).
    """

    backend: Backend
    output: RouterOutput
    loss_array: Any
    grad_norm_array: Any
    grads: Gradients

    @property
    def loss(self) -> float:
        return float(self.backend.to_numpy(self.loss_array)[0])

    @property
    def grad_norm(self) -> float:
        return float(self.backend.to_numpy(self.grad_norm_array)[0])

    @property
    def metrics(self) -> dict[str, float]:
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
        self.set_params(params)

    # -------------------------------------------------------------- parameters
    def set_params(self, params: RouterParams) -> None:
        """Validate ``params`` against the graph and upload them to the backend."""
        p = params.validate(self.graph)
        be = self.backend
        # one allocation on backends that pack (wgpu: views into one flat buffer, so that the
        # optimizer updates every parameter in one dispatch)
        self.q, self.k, self.bias = be.pack([p.q, p.k, p.bias])
        self.tau, self.alpha, self.top_k = p.tau, p.alpha, p.top_k
        self.dim = p.q.shape[1]

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
            arr_np = np.asarray(energies)
            if arr_np.dtype == np.bool_ or not (
                np.issubdtype(arr_np.dtype, np.floating) or np.issubdtype(arr_np.dtype, np.integer)
            ):
                raise ShapeError(f"energies must be a float array, got dtype {arr_np.dtype}")
            shape = arr_np.shape
            if arr_np.ndim in (1, 2) and shape[-1] == n and not np.all(np.isfinite(arr_np)):
                raise InvalidArgumentError("energies must be finite (no NaN or inf)")
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
        a = np.asarray(active)
        if a.dtype != np.bool_:
            raise ShapeError(f"active must be a bool array, got dtype {a.dtype}")
        if a.shape == (n,):
            a = np.broadcast_to(a, (batch, n))
        elif a.shape != (batch, n):
            raise ShapeError(f"active must have shape [N] = ({n},) or [B, N] = ({batch}, {n}), got {a.shape}")
        return be.asarray(np.ascontiguousarray(a))

    # ------------------------------------------------------------------ forward
    def forward(self, energies: Any, active: Any = None, steps: int = 1, retain_sinks: bool = False) -> RouterOutput:
        """Route ``energies`` ([N] or [B, N] float) along the graph ``steps`` times.

        Args:
            energies: float [N] or [B, N] (B may be 0), numpy or a backend array.
            active: bool [N] or [B, N]; inactive nodes send nothing (default: all active).
            steps: T >= 1 applications of the step.
            retain_sinks: out-degree-0 nodes keep their energy from step to step.
        """
        steps = _check_int(steps, "steps", 1)
        if not isinstance(retain_sinks, (bool, np.bool_)):
            raise InvalidArgumentError(f"retain_sinks must be a bool, got {retain_sinks!r}")
        x, batched = self._energies(energies)
        act = self._active(active, int(x.shape[0]))
        be, g = self.backend, self.graph
        logits = be.edge_logits(g, self.q, self.k, self.bias)
        pi = be.segment_softmax(g, logits, self.tau, self.top_k)
        history = [x]
        for _ in range(steps):
            x = be.energy_scatter(g, x, pi, self.alpha, act, bool(retain_sinks))
            history.append(x)
        return RouterOutput(
            router=self,
            edge_pi=pi,
            history=history,
            active=act,
            batched=batched,
            steps=steps,
            retain_sinks=bool(retain_sinks),
            params_used=(self.q, self.k, self.bias),
        )

    __call__ = forward

    # ----------------------------------------------------------------- backward
    def backward(self, out: RouterOutput, grad_next: Any, grad_pi: Any = None) -> Gradients:
        """Gradients of a loss L through all steps of ``out``.

        Args:
            out: the output of :meth:`forward` on this router.
            grad_next: dL/dnext_energies, the shape of ``out.next_energies``.
            grad_pi: optional extra dL/dpi [E] (e.g. from entropy regularization).
        """
        if not isinstance(out, RouterOutput) or out.router is not self:
            raise InvalidArgumentError("out must be the RouterOutput of this router's forward()")
        be, g = self.backend, self.graph
        n, b = g.num_nodes, out.batch_size
        expected = (b, n) if out.batched else (n,)
        gn = self._grad_array(grad_next, "grad_next", expected)
        if not out.batched:
            gn = be.reshape(gn, (1, n))
        extra = None if grad_pi is None else self._grad_array(grad_pi, "grad_pi", (g.num_edges,))
        gpi_total = extra
        for t in reversed(range(out.steps)):
            gn, gpi = be.energy_scatter_backward(g, out.history[t], out.edge_pi, gn, self.alpha, out.active, out.retain_sinks)
            gpi_total = gpi if gpi_total is None else be.add(gpi_total, gpi)
        glogits = be.segment_softmax_backward(g, out.edge_pi, gpi_total, self.tau)
        q, k, _ = out.params_used
        gq, gk, gb = be.edge_logits_backward(g, q, k, glogits)
        return Gradients(
            q=gq,
            k=gk,
            bias=gb,
            energies=gn if out.batched else be.reshape(gn, (n,)),
            backend=be,
        )

    def _grad_array(self, value: Any, name: str, shape: tuple[int, ...]) -> Any:
        be = self.backend
        if _device_array(be, value):
            if tuple(value.shape) != shape:
                raise ShapeError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
            return value
        return be.asarray(_float_array(value, name, shape), dtype=be.dtype)

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
            mask: bool, the shape of target, for "mse" only (None: every element).
            entropy_lambda: adds ``-lambda * sum pi log pi`` (entropy regularization) when != 0.
        """
        if getattr(optimizer, "router", None) is not self:
            raise InvalidArgumentError("optimizer must be an optimizer built over this router")
        lg = self.loss_and_grads(
            energies, target, loss=loss, mask=mask, active=active, steps=steps, retain_sinks=retain_sinks,
            entropy_lambda=entropy_lambda, eps=eps,
        )
        norm = optimizer.step(lg.grads)
        return TrainStepResult(
            backend=self.backend, output=lg.output, loss_array=lg.loss_array, grad_norm_array=norm, grads=lg.grads
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
        :mod:`energetic_wgpu.distributed`) before ``optimizer.step(result.grads)``.
        Nothing is read back."""
        if loss not in ("mse", "cross_entropy"):
            raise InvalidArgumentError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
        lam = _check_float(entropy_lambda, "entropy_lambda")
        be = self.backend
        out = self.forward(energies, active=active, steps=steps, retain_sinks=retain_sinks)
        shape = tuple(out.next_energies.shape)
        tgt = self._grad_array(target, "target", shape)
        if loss == "mse":
            m = None
            if mask is not None:
                if be.is_array(mask):
                    if tuple(mask.shape) != shape or np.dtype(mask.dtype) != np.bool_:
                        raise ShapeError(f"mask must be bool {shape}, got {mask.dtype} {tuple(mask.shape)}")
                    m = mask
                else:
                    mask_np = np.asarray(mask)
                    if mask_np.dtype != np.bool_ or mask_np.shape != shape:
                        raise ShapeError(f"mask must be bool {shape}, got {mask_np.dtype} {mask_np.shape}")
                    m = be.asarray(mask_np)
            loss_arr, grad = be.mse(out.next_energies, tgt, m)
        else:
            if mask is not None:
                raise InvalidArgumentError("mask is only supported with loss='mse'")
            loss_arr, grad = be.cross_entropy(out.next_energies, tgt, float(eps))
        grad_pi = None
        if lam != 0.0:
            ent_loss, grad_pi = be.entropy_regularization(self.graph, out.edge_pi, lam)
            loss_arr = be.add(loss_arr, ent_loss)
        grads = self.backward(out, grad, grad_pi)
        return LossAndGrads(backend=be, output=out, loss_array=loss_arr, grads=grads)

    def __repr__(self) -> str:
        return (
            f"Router({self.graph!r}, dim={self.dim}, tau={self.tau}, alpha={self.alpha}, "
            f"top_k={self.top_k}, backend={self.backend.describe()!r})"
        )
