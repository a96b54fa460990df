"""The energetic router as a PyTorch module (optional: ``pip install "energetic_wgpu[torch]"``).

:class:`EnergeticRouter` is a ``torch.nn.Module`` whose ``q``, ``k`` and ``bias`` are
``nn.Parameter`` objects, so it composes with ordinary torch layers, optimizers and
``state_dict``. Its forward and backward run on one of the library's backends through
:meth:`Router.forward <energetic_wgpu.Router.forward>` and
:meth:`Router.backward <energetic_wgpu.Router.backward>`, the same code paths as
:meth:`Router.train_step <energetic_wgpu.Router.train_step>`::

    import torch
    from energetic_wgpu.torch import EnergeticRouter

    edge_index = torch.tensor([[0, 0, 1, 2], [1, 2, 3, 3]])
    router = EnergeticRouter(edge_index, num_nodes=4, dim=8, backend="numpy")
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    y = router(x)                      # [1, 4], differentiable
    y[:, 3].sum().backward()           # gradients reach router.q, router.k, router.bias and x

Data movement: on the NumPy backend the parameters, outputs and gradients share memory with
the torch tensors (``Tensor.numpy()`` / ``torch.from_numpy``, no copy; the router copies its
input energies once, as every backend upload does). On wgpu a parameter is uploaded only when
torch changed it (its version counter moved), a forward reads back one array (the next
energies) and a backward one array per gradient torch asks for.

Float64 parameters (``module.double()``) run on the NumPy backend in float64, which is what
``torch.autograd.gradcheck`` needs; the wgpu backend is float32 only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        'energetic_wgpu.torch needs PyTorch, an optional extra: pip install "energetic_wgpu[torch]"'
    ) from exc

from .backends import Backend, get_backend
from .errors import InvalidArgumentError, ShapeError
from .graph import Graph
from .router import Router, RouterParams
from .validation import check_int

__all__ = ["EnergeticRouter"]


class EnergeticRouter(nn.Module):
    """The energetic router as a ``torch.nn.Module``.

    Args:
        graph: an :class:`~energetic_wgpu.Graph`, or an ``edge_index`` int [2, E] (numpy or
            torch, row 0 the sources) that :meth:`Graph.from_edge_index
            <energetic_wgpu.Graph.from_edge_index>` converts (with ``num_nodes``).
        dim: d, the feature dimension of ``q`` and ``k``.
        tau: softmax temperature (> 0).
        alpha: energy distribution coefficient.
        top_k: 0 keeps every edge; else each node routes over its top_k most probable edges.
        steps: T >= 1 routing steps per forward.
        retain_sinks: out-degree-0 nodes keep their energy from step to step.
        backend: "auto", "numpy", "wgpu" or a :class:`~energetic_wgpu.Backend` (used for
            float32 parameters; float64 parameters always use the NumPy float64 backend).
        seed: seed of the parameter initialization (:meth:`RouterParams.init
            <energetic_wgpu.RouterParams.init>`).
        num_nodes: N when ``graph`` is an ``edge_index`` (None: the largest index + 1).

    Attributes:
        graph: the :class:`~energetic_wgpu.Graph` (CSR order).
        q, k: ``nn.Parameter`` float32 [N, d].
        bias: ``nn.Parameter`` float32 [E] in the graph's **CSR edge order** (initialized
            from the graph's weights). ``graph.to_input_order(module.bias.detach())`` gives it
            in the order of the caller's edges; :meth:`edge_pi` returns pi in that order.
    """

    def __init__(
        self,
        graph: Any,
        dim: int = 16,
        tau: float = 1.0,
        alpha: float = 1.0,
        top_k: int = 0,
        steps: int = 1,
        retain_sinks: bool = False,
        backend: Backend | str = "auto",
        seed: int = 0,
        num_nodes: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(graph, Graph):
            if num_nodes is not None:
                raise InvalidArgumentError("num_nodes is only for an edge_index graph; a Graph knows its node count")
        else:
            graph = Graph.from_edge_index(graph, num_nodes=num_nodes)
        if not isinstance(retain_sinks, (bool, np.bool_)):
            raise InvalidArgumentError(f"retain_sinks must be a bool, got {retain_sinks!r}")
        self.graph = graph
        self.steps = check_int(steps, "steps", 1)
        self.retain_sinks = bool(retain_sinks)
        p = RouterParams.init(graph, dim=dim, tau=tau, alpha=alpha, top_k=top_k, seed=seed)
        self.tau, self.alpha, self.top_k = p.tau, p.alpha, p.top_k
        self.q = nn.Parameter(torch.from_numpy(p.q))
        self.k = nn.Parameter(torch.from_numpy(p.k))
        self.bias = nn.Parameter(torch.from_numpy(p.bias))
        self._backend_name = "auto" if backend is None else backend
        self.backend = get_backend(self._backend_name)  # float32 backend: fail early on a bad name
        self._routers: dict[torch.dtype, Router] = {}
        self._uploaded: dict[torch.dtype, list[tuple[int, int]]] = {}

    # ------------------------------------------------------------------ routers
    def _router(self, dtype: torch.dtype) -> Router:
        """The library Router for parameters of ``dtype``, its parameters in sync with torch."""
        router = self._routers.get(dtype)
        if router is None:
            if dtype == torch.float32:
                be = self.backend
            elif dtype == torch.float64:
                if self.backend.name != "numpy" and self._backend_name != "auto":
                    raise ShapeError(
                        f"float64 parameters need the NumPy backend; this module's backend is "
                        f"{self.backend.name!r} (float32 only): call .float() or use backend='numpy'"
                    )
                be = get_backend("numpy", dtype="float64")
            else:
                raise ShapeError(f"parameters must be float32 or float64, got {dtype}")
            router = Router(self.graph, self._params_numpy(), be)
            self._routers[dtype] = router
            self._uploaded[dtype] = self._versions()
        params = (self.q, self.k, self.bias)
        if router.backend.name == "numpy" and all(p.device.type == "cpu" for p in params):
            # share memory: the backend reads the parameters where torch keeps them
            router.q, router.k, router.bias = (p.detach().numpy() for p in params)
        else:
            versions = self._versions()
            for dst, p, old, new in zip(router.parameters(), params, self._uploaded[dtype], versions):
                if old != new:
                    router.backend.write(dst, p.detach().cpu().numpy())
            self._uploaded[dtype] = versions
        return router

    def __getstate__(self) -> dict[str, Any]:
        """Pickling (``torch.save(module)``, ``copy.deepcopy``) keeps the parameters and the
        backend's name; the library routers are rebuilt on first use."""
        state = dict(self.__dict__)
        name = self._backend_name
        state["_backend_name"] = name if isinstance(name, str) else self.backend.name
        state["backend"] = None
        state["_routers"], state["_uploaded"] = {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.backend = get_backend(self._backend_name)

    def _versions(self) -> list[tuple[int, int]]:
        return [(p._version, p.data_ptr()) for p in (self.q, self.k, self.bias)]

    def _params_numpy(self) -> RouterParams:
        q, k, b = (p.detach().cpu().numpy() for p in (self.q, self.k, self.bias))
        return RouterParams(q, k, b, tau=self.tau, alpha=self.alpha, top_k=self.top_k)

    # ------------------------------------------------------------------ forward
    def forward(self, energies: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """Route ``energies`` along the graph ``steps`` times.

        Args:
            energies: float [B, N] or [N], the parameters' dtype (float32 unless ``.double()``).
            active: optional bool [N] or [B, N]; inactive nodes send nothing.

        Returns:
            float tensor, the shape of ``energies``: the next energies, differentiable with
            respect to ``energies``, ``q``, ``k`` and ``bias``.
        """
        if not isinstance(energies, torch.Tensor):
            raise InvalidArgumentError(f"energies must be a torch.Tensor, got {type(energies).__name__}")
        if energies.dtype != self.q.dtype:
            raise ShapeError(
                f"energies must have the parameters' dtype {self.q.dtype}, got {energies.dtype} "
                "(convert the tensor, or the module with .double()/.float())"
            )
        if active is not None and not isinstance(active, torch.Tensor):
            raise InvalidArgumentError(f"active must be None or a bool torch.Tensor, got {type(active).__name__}")
        return _RouterFunction.apply(self, energies, active, self.q, self.k, self.bias)

    @torch.no_grad()
    def edge_pi(self) -> torch.Tensor:
        """The routing probabilities pi, float [E] **in the caller's edge order** (the order
        of the edge_index or edge list the graph was built from), detached."""
        router = self._router(self.q.dtype)
        out = router.forward(np.zeros((0, self.graph.num_nodes), dtype=router.backend.dtype))
        pi = self.graph.to_input_order(router.backend.to_numpy(out.edge_pi))
        return torch.from_numpy(pi).to(self.q.device)

    def extra_repr(self) -> str:
        g = self.graph
        return (
            f"num_nodes={g.num_nodes}, num_edges={g.num_edges}, dim={self.q.shape[1]}, tau={self.tau}, "
            f"alpha={self.alpha}, top_k={self.top_k}, steps={self.steps}, retain_sinks={self.retain_sinks}, "
            f"backend={self.backend.describe()!r}"
        )


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy view of ``t`` where possible (CPU tensors), else a host copy."""
    return t.detach().cpu().numpy()


def _tensor(be: Backend, x: Any, like: torch.Tensor) -> torch.Tensor:
    """A backend array as a tensor on ``like``'s device (no copy for NumPy arrays on CPU)."""
    arr = x if isinstance(x, np.ndarray) else be.to_numpy(x)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(like.device)


class _RouterFunction(torch.autograd.Function):
    """forward: Router.forward; backward: Router.backward (gradients of every input)."""

    @staticmethod
    def forward(ctx: Any, module: EnergeticRouter, energies: torch.Tensor, active: Any, q: Any, k: Any, bias: Any):
        router = module._router(q.dtype)
        act = None if active is None else _numpy(active)
        out = router.forward(_numpy(energies), active=act, steps=module.steps, retain_sinks=module.retain_sinks)
        ctx.router, ctx.out = router, out
        ctx.save_for_backward(q, k, bias)  # torch then refuses a backward after an in-place change
        return _tensor(router.backend, out.next_energies, energies)

    @staticmethod
    def backward(ctx: Any, grad_next: torch.Tensor):
        q, k, bias = ctx.saved_tensors
        router, out = ctx.router, ctx.out
        grads = router.backward(out, _numpy(grad_next))
        be = router.backend
        need = ctx.needs_input_grad
        ge = _tensor(be, grads.energies, grad_next) if need[1] else None
        gq = _tensor(be, grads.q, q) if need[3] else None
        gk = _tensor(be, grads.k, k) if need[4] else None
        gb = _tensor(be, grads.bias, bias) if need[5] else None
        return None, ge, None, gq, gk, gb
