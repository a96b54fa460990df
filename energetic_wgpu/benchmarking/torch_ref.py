"""The PyTorch reference of the router step (optional: ``torch`` is imported lazily, only
when a function here needs it), used by the benchmark suite and ``benchmarks/bench_cpu.py``.

The train step is forward, MSE, backward, global-norm clipping and AdamW, written the way a
PyTorch user would write it (autograd, ``index_add_``, scatter-based segment softmax), on the
baseline lattice (10 x 1024 nodes, B = 64, d = 16, top_k = 4). :func:`verify` checks that it
computes the same function as the NumPy backend before anything is timed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

import energetic_wgpu as ew
from energetic_wgpu.backends.numpy_backend import NumpyBackend

__all__ = [
    "LAYERS", "NODES_PER_LAYER", "BATCH", "DIM", "TOP_K", "TAU", "ALPHA", "LR", "WEIGHT_DECAY", "MAX_GRAD_NORM",
    "import_torch", "torch_router_class", "torch_train_step", "make_torch", "make_problem", "copy_params", "verify",
]

# the baseline configuration
LAYERS, NODES_PER_LAYER, BATCH, DIM, TOP_K = 10, 1024, 64, 16, 4
TAU, ALPHA = 1.0, 1.0
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-3, 0.01, 1.0


def copy_params(p: ew.RouterParams) -> ew.RouterParams:
    """A deep copy: a Router may keep (and its optimizer update in place) the arrays it is given."""
    return ew.RouterParams(np.array(p.q), np.array(p.k), np.array(p.bias), p.tau, p.alpha, p.top_k)


def make_problem(seed: int = 0) -> tuple[ew.Graph, ew.RouterParams, np.ndarray, np.ndarray]:
    """The baseline lattice, its initial parameters and a random (energies, target) batch."""
    graph = ew.build_lattice(ew.GraphConfig(layers=LAYERS, nodes_per_layer=NODES_PER_LAYER))
    params = ew.RouterParams.init(graph, dim=DIM, tau=TAU, alpha=ALPHA, top_k=TOP_K, seed=seed)
    rng = np.random.default_rng(seed)
    energies = rng.random((BATCH, graph.num_nodes)).astype(np.float32)
    target = rng.random((BATCH, graph.num_nodes)).astype(np.float32)
    return graph, params, energies, target


# ------------------------------------------------------------------ PyTorch reference
def import_torch() -> Any:
    """The ``torch`` module, or None when PyTorch is not installed (or fails to import)."""
    try:
        import torch
    except Exception:  # not installed, or a broken install
        return None
    return torch


@functools.lru_cache(maxsize=None)
def torch_router_class() -> Any:
    """The :class:`TorchRouter` class (defined on first use: it subclasses ``torch.nn.Module``)."""
    torch = import_torch()
    if torch is None:
        raise ImportError("PyTorch is not installed (pip install torch)")

    class TorchRouter(torch.nn.Module):
        """The router step as a PyTorch user writes it: gathers by edge index, a padded
        [N, max_degree] ``topk`` per segment, a scatter-based segment softmax (max by
        ``scatter_reduce``, sum by ``index_add_``) and ``index_add_`` of the flows into the
        next energies. Autograd does the backward."""

        def __init__(self, graph: ew.Graph, params: ew.RouterParams) -> None:
            super().__init__()
            self.q = torch.nn.Parameter(torch.from_numpy(np.array(params.q, dtype=np.float32)))
            self.k = torch.nn.Parameter(torch.from_numpy(np.array(params.k, dtype=np.float32)))
            self.bias = torch.nn.Parameter(torch.from_numpy(np.array(params.bias, dtype=np.float32)))
            self.tau, self.alpha, self.top_k = params.tau, params.alpha, params.top_k
            self.num_nodes = graph.num_nodes
            self.max_degree = graph.max_out_degree
            src = torch.from_numpy(np.array(graph.src, dtype=np.int64))
            slot = torch.from_numpy(np.arange(graph.num_edges) - graph.row_ptr[graph.src])
            self.register_buffer("src", src)
            self.register_buffer("dst", torch.from_numpy(np.array(graph.col_idx, dtype=np.int64)))
            self.register_buffer("slot", slot)  # position of each edge inside its segment

        def edge_pi(self) -> "torch.Tensor":
            n, src = self.num_nodes, self.src
            z = ((self.q[src] * self.k[self.dst]).sum(-1) + self.bias) / self.tau
            if 0 < self.top_k < self.max_degree:
                with torch.no_grad():  # which edges survive top-k (no gradient through a selection)
                    dense = z.new_full((n, self.max_degree), float("-inf"))
                    dense[src, self.slot] = z
                    top = dense.topk(self.top_k, dim=1).indices
                    keep = torch.zeros_like(dense, dtype=torch.bool).scatter_(1, top, True)
                    kept = keep[src, self.slot]
                z = z.masked_fill(~kept, float("-inf"))
            # segment softmax (as torch_geometric.utils.softmax): max of each segment, exp, sum
            zmax = z.new_full((n,), float("-inf")).scatter_reduce(0, src, z.detach(), "amax")
            ex = (z - zmax[src]).exp()
            denom = z.new_zeros(n).index_add_(0, src, ex)
            return ex / denom[src]

        def forward(self, energies: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
            pi = self.edge_pi()
            flow = self.alpha * energies[:, self.src] * pi  # [B, E]
            nxt = energies.new_zeros((energies.shape[0], self.num_nodes)).index_add_(1, self.dst, flow)
            return nxt, pi

    return TorchRouter


def torch_train_step(model: Any, opt: Any, energies: Any, target: Any) -> Any:
    """One PyTorch step: zero_grad, forward, mse_loss, backward, clip_grad_norm_, AdamW.step."""
    import torch

    opt.zero_grad(set_to_none=True)
    nxt, _ = model(energies)
    loss = torch.nn.functional.mse_loss(nxt, target)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    opt.step()
    return loss, norm


def make_torch(params: ew.RouterParams, graph: ew.Graph) -> tuple[Any, Any]:
    """(TorchRouter, torch.optim.AdamW) from the same parameters as the NumPy router."""
    import torch

    model = torch_router_class()(graph, params)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    return model, opt


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max(max|b|, tiny)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-30)
    return float(np.abs(a - b).max()) / scale if b.size else 0.0


def verify(graph: ew.Graph, params: ew.RouterParams, x: np.ndarray, tgt: np.ndarray) -> dict[str, float]:
    """Run one forward and one train step through both implementations from the same start.

    Returns, per compared array, max|torch - numpy| / max|numpy| (forward values and
    gradients) or max|torch - numpy| / lr (parameters after one AdamW step: the first step
    moves each parameter by about lr, and by less where the gradient is near Adam's eps,
    where float32 rounding of the gradient shows most), and the number of edges kept by
    one top-k and not the other."""
    be = NumpyBackend()
    router = ew.Router(graph, copy_params(params), backend=be)
    out = router.forward(x)
    ref_next = be.to_numpy(out.next_energies)
    ref_pi = be.to_numpy(out.edge_pi)
    _, g = be.mse(out.next_energies, tgt)
    grads = router.backward(out, g)
    opt = ew.AdamW(router, lr=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM)
    router.train_step(x, tgt, opt)
    after = router.params()

    import torch

    model, topt = make_torch(params, graph)
    xt, tt = torch.from_numpy(x), torch.from_numpy(tgt)
    with torch.no_grad():
        t_next, t_pi = model(xt)
    torch_train_step(model, topt, xt, tt)  # grads are those of the starting parameters
    errors = {
        "next_energies": _rel_err(t_next.numpy(), ref_next),
        "edge_pi": _rel_err(t_pi.numpy(), ref_pi),
        "kept_mask_mismatches": float(np.count_nonzero((t_pi.numpy() > 0) != (ref_pi > 0))),
        "grad_q": _rel_err(model.q.grad.numpy(), be.to_numpy(grads.q)),
        "grad_k": _rel_err(model.k.grad.numpy(), be.to_numpy(grads.k)),
        "grad_bias": _rel_err(model.bias.grad.numpy(), be.to_numpy(grads.bias)),
        "q_after_step (/ lr)": float(np.abs(model.q.detach().numpy() - after.q).max()) / LR,
        "k_after_step (/ lr)": float(np.abs(model.k.detach().numpy() - after.k).max()) / LR,
        "bias_after_step (/ lr)": float(np.abs(model.bias.detach().numpy() - after.bias).max()) / LR,
    }
    return errors


