"""Scale: the wgpu backend at the sizes the issue names — B = 1,024 rows, and N and E in
the millions — against the NumPy reference, through the Router (forward and backward).

These use the same kernels as the small tests; what they add is the 2-D dispatch folding
(>65,535 workgroups), large buffers, and batch-major indexing at B = 1,024.
"""

from __future__ import annotations

import numpy as np
from parity import assert_parity

from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.graph import Graph
from energetic_wgpu.router import Router, RouterParams

NP = NumpyBackend()


def _random_graph(n: int, mean_degree: int, seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    deg = rng.integers(0, 2 * mean_degree + 1, size=n)  # includes empty segments
    src = np.repeat(np.arange(n), deg)
    dst = rng.integers(0, n, size=src.size)
    return Graph.from_edges(src, dst, num_nodes=n)


def _params(graph: Graph, dim: int, top_k: int, seed: int) -> RouterParams:
    rng = np.random.default_rng(seed)
    n, e = graph.num_nodes, graph.num_edges
    return RouterParams(
        q=rng.standard_normal((n, dim)).astype(np.float32),
        k=rng.standard_normal((n, dim)).astype(np.float32),
        bias=rng.standard_normal(e).astype(np.float32),
        tau=0.8,
        alpha=0.9,
        top_k=top_k,
    )


def _forward_backward(backend, graph, params, energies, grad_next, active, steps):
    r = Router(graph, params, backend)
    out = r.forward(energies, active=active, steps=steps)
    g = r.backward(out, grad_next)
    to = backend.to_numpy
    return {
        "next": to(out.next_energies),
        "pi": to(out.edge_pi),
        "q": to(g.q),
        "k": to(g.k),
        "bias": to(g.bias),
        "energies": to(g.energies),
    }


def test_batch_1024_forward_backward_parity(gpu_backend):
    graph = _random_graph(300, 6, seed=1)
    params = _params(graph, dim=4, top_k=3, seed=2)
    rng = np.random.default_rng(3)
    b, n = 1024, graph.num_nodes
    energies = rng.random((b, n), dtype=np.float32)
    grad_next = rng.standard_normal((b, n)).astype(np.float32)
    active = rng.random((b, n)) > 0.2
    ref = _forward_backward(NP, graph, params, energies, grad_next, active, steps=2)
    got = _forward_backward(gpu_backend, graph, params, energies, grad_next, active, steps=2)
    for name in ref:
        assert_parity(got[name], ref[name], name)


def test_million_nodes_forward_backward_parity(gpu_backend):
    """N = 1,000,000 nodes, E ~ 5,000,000 edges (out-degree 0..10), B = 2, top-k 2: the
    thread-per-edge kernels need more than 65,535 workgroups of 64 and fold into 2-D."""
    graph = _random_graph(1_000_000, 5, seed=4)
    assert graph.num_edges > 65_535 * 64
    params = _params(graph, dim=2, top_k=2, seed=5)
    rng = np.random.default_rng(6)
    energies = rng.random((2, graph.num_nodes), dtype=np.float32)
    grad_next = rng.standard_normal((2, graph.num_nodes)).astype(np.float32)
    ref = _forward_backward(NP, graph, params, energies, grad_next, None, steps=1)
    got = _forward_backward(gpu_backend, graph, params, energies, grad_next, None, steps=1)
    for name in ref:
        assert_parity(got[name], ref[name], name)
