"""The reverse index split past one binding (reverse_index.py).

With a 2 KiB binding limit, the (edge, source) pairs of 400 edges (3200 bytes) do not fit one
binding while every [E] array (1600 bytes) does: the graph is uploaded with the sources and
edges by target as two u32 [E] arrays, and the scatter and grad_k kernels read per-edge values
gathered into reverse-index order. The graph has a hub (in-degree 280: the scatter's and the
backward's workgroup-per-node paths), a mid-degree node (40) and sinks. Every result is
bit-identical to the packed layout on the default limits and in parity with NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity

from energetic_wgpu import AdamW, Graph, Router, RouterParams

N, D, B = 40, 4, 5
LIMIT = 2048


def _graph() -> Graph:
    rng = np.random.default_rng(0)
    dst = np.concatenate([np.full(280, 5), np.full(40, 7), rng.integers(0, N, 80)])
    src = rng.integers(0, N - 4, dst.size)  # nodes 36..39 are sinks
    return Graph.from_edges(src, dst, num_nodes=N)


def _inputs(e: int):
    rng = np.random.default_rng(1)
    params = RouterParams(q=rng.standard_normal((N, D)).astype(np.float32),
                          k=rng.standard_normal((N, D)).astype(np.float32),
                          bias=rng.standard_normal(e).astype(np.float32), tau=0.9, alpha=0.9, top_k=0)
    energies = rng.random((B, N), dtype=np.float32)
    target = rng.random((B, N), dtype=np.float32)
    active = rng.random((B, N)) < 0.8
    pi = rng.random(e).astype(np.float32)
    grad_logits = np.linspace(-1.0, 1.0, e, dtype=np.float32)
    return params, energies, target, active, pi, grad_logits


def _run(be, graph):
    """Every result that reads the reverse index, as numpy arrays, and the train steps' norms."""
    params, energies, target, active, pi, gl = _inputs(graph.num_edges)
    router = Router(graph, params, be)
    out = router.forward(energies, steps=3, active=active)
    results = [be.to_numpy(out.energies_at(t)) for t in range(4)]
    results += [be.to_numpy(g) for g in router.loss_and_grads(energies, target, steps=3).grads.as_list()]
    results += [be.to_numpy(x) for x in be.edge_logits_backward(graph, params.q, params.k, gl)]
    results.append(be.to_numpy(be.energy_scatter(graph, energies, pi, 0.7, active, retain_sinks=True)))
    opt = AdamW(router, lr=1e-2, eps=1e-4, max_grad_norm=0.1)
    norms = [router.train_step(energies, target, opt, steps=2).grad_norm for _ in range(2)]
    p = router.params()
    return results + [p.q, p.k, p.bias], norms


def test_split_reverse_index_bit_identical(gpu_backend, np_backend):
    be = gpu_backend
    whole_graph = _graph()
    e = whole_graph.num_edges
    assert 8 * e > LIMIT >= 4 * e
    whole, whole_norms = _run(be, whole_graph)
    assert be.graph_data(whole_graph).rev_pairs.shape == (e, 2)
    with be.binding_limit(LIMIT):
        graph = _graph()  # uploaded under the limit: the split layout
        gd = be.graph_data(graph)
        assert gd.rev_pairs is None and gd.rev_src.shape == gd.rev_edges.shape == (e,)
        np.testing.assert_array_equal(be.to_numpy(gd.rev_edges), graph.rev_perm)
        np.testing.assert_array_equal(be.to_numpy(gd.rev_src), graph.src[graph.rev_perm])
        split, norms = _run(be, graph)
        params, energies, target, _, _, _ = _inputs(e)
        router = Router(graph, params, be)
        opt = AdamW(router, lr=1e-2)
        be.runtime.trace = []
        try:
            router.train_step(energies, target, opt, steps=3)
            kernels = [t["kernel"] for t in be.runtime.trace]
        finally:
            be.runtime.trace = None
    # one gather per scatter step (pi into reverse order) and one for grad_k (grad_logits)
    assert kernels.count("gather") == 4
    assert kernels[kernels.index("scatter_small") - 1] == "gather"
    assert norms == whole_norms
    for i, (a, b) in enumerate(zip(split, whole)):
        assert a.tobytes() == b.tobytes(), i
    ref, ref_norms = _run(np_backend, _graph())
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-5)
    for i, (a, b) in enumerate(zip(split, ref)):
        assert_parity(a, b, f"result {i}")


@pytest.mark.parametrize("edges,split", [(256, False), (257, True)])
def test_split_decided_by_pair_bytes(gpu_backend, edges, split):
    """8·E bytes against the binding limit: 256 edges fit 2 KiB, 257 do not."""
    be = gpu_backend
    src = np.arange(edges) % N
    with be.binding_limit(LIMIT):
        graph = Graph.from_edges(src, (src * 3 + 1) % N, num_nodes=N)
        gd = be.graph_data(graph)
        assert (gd.rev_pairs is None) == split and (gd.rev_src is not None) == split
        x = np.linspace(0.0, 1.0, B * N, dtype=np.float32).reshape(B, N)
        pi = np.full(edges, 0.5, np.float32)
        got = be.to_numpy(be.energy_scatter(graph, x, pi))
    ref = np.zeros((B, N), np.float32)
    np.add.at(ref.T, (src * 3 + 1) % N, (x[:, src] * 0.5).T)
    assert_parity(got, ref)
