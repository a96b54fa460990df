"""Big hubs: a hub with more entries than one window holds, run in pieces.

Row plans (node_rows.py) first, then a target of more in-edges than an edge window holds
(edge_windows.py: its range cut into target windows of its own, scatter_large_piece).

With q and k past one binding, every row window gathers the other end's rows of its entries
into one binding (448 rows at d = 8 under 16 KiB, 960 at d = 16 under 64 KiB). A hub of more
entries gets a window of its own and runs in pieces of 256 (768) entries: its logits per
piece, then its softmax and top-k from the stored logits; in the backward its dot and dl over
the whole segment, then every column's lanes carried across the pieces (hub_pieces.wgsl,
64 lanes for segment_bwd, 256 for edge_logits_backward) and its sum of squares finished in
column order. Here node 5 has 1,000 out-edges and node N - 3 has 1,100 in-edges; every output
and clipped Router training are bit-identical to the unsplit run and in parity with NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity, assert_steady_step, forced_limits
from test_node_rows import _inputs, _ops

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.errors import DeviceLimitError
from energetic_wgpu.backends.webgpu import edge_windows

N = 1500


def _graph() -> Graph:
    rng = np.random.default_rng(9)
    deg = rng.integers(0, 8, N)
    deg[5], deg[40], deg[41:60] = 1000, 300, 20  # a big hub, a hub that fits a window, 32-lane segments
    deg[900:905] = 0
    ptr = np.zeros(N + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    cols = rng.integers(0, N, int(ptr[-1]))
    cols[rng.permutation(cols.size)[:1100]] = N - 3  # a big in-hub
    return Graph.from_csr(ptr, cols, num_nodes=N)


@pytest.mark.parametrize("dim,limits,piece", [
    (8, (16384, None), 256),     # edge windows too (E = 7,5xx edges)
    (8, (16384, 16384), 256),    # q, k and the [E] arrays split over buffers
    (16, (65536, None), 768),    # an unwindowed graph
    (16, (24576, None), 256),    # 256 lanes' carry of 16 columns past the binding: 2 groups of columns
])
def test_big_hubs_bit_identical(gpu_backend, np_backend, dim, limits, piece):
    whole, _, _ = _ops(gpu_backend, (None, None), dim, _graph)
    got, gd, _ = _ops(gpu_backend, limits, dim, _graph)
    plan = gd.row_plans[dim]
    assert plan.piece == piece
    big = [g for g in edge_windows.hub_groups(plan.windows) if isinstance(g, list)]
    rbig = [g for g in edge_windows.hub_groups(plan.rwindows) if isinstance(g, list)]
    assert [(g[0].n0, g[-1].e1 - g[0].e0, len(g)) for g in big] == [(5, 1000, -(-1000 // piece))]
    assert [(g[0].n0, g[-1].e1 - g[0].e0) for g in rbig] == [(N - 3, _graph().in_degree[N - 3])]
    assert all(w.e1 - w.e0 <= piece and (w.e0 - g[0].e0) % 256 == 0 for g in big + rbig for w in g)
    ref, _, _ = _ops(np_backend, (None, None), dim, _graph)
    for name in whole:
        assert got[name].tobytes() == whole[name].tobytes(), name
        assert_parity(got[name], ref[name], name, rtol=1e-4)


def _train(be, limits, n_steps=3):
    dim = 16  # under 32 KiB: 448 gathered rows per window, pieces of 256
    g, q, k, bias, _ = _inputs(dim, _graph)
    rng = np.random.default_rng(1)
    en = rng.random((4, N)).astype(np.float32)
    tgt = (0.1 * rng.random((4, N))).astype(np.float32)
    with forced_limits(be, *limits):
        r = Router(g, RouterParams(0.3 * q, 0.3 * k, bias, tau=0.8, alpha=0.9, top_k=3), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)  # clipped: the norm's bits matter
        out = []
        for _ in range(n_steps):
            res = r.train_step(en, tgt, opt, steps=2, retain_sinks=True)
            out += [res.loss, res.grad_norm]
        if limits[0] and hasattr(be, "graph_data"):
            assert any(w.big for w in be.graph_data(g).row_plans[dim].windows)
        p = r.params()
    return np.array(out, np.float32), [p.q, p.k, p.bias]


def test_router_trains_with_big_hubs_bit_identical(gpu_backend, np_backend):
    """3 clipped AdamW steps with a big out-hub and in-hub in pieces: losses, gradient norms and
    parameters bit-identical to the unsplit run and in parity with NumPy."""
    whole, whole_p = _train(gpu_backend, (None, None))
    split, split_p = _train(gpu_backend, (32768, None))
    ref, ref_p = _train(np_backend, (None, None))
    assert split.tobytes() == whole.tobytes()
    assert_parity(split, ref, "losses and gradient norms", rtol=1e-4)
    for name, a, b, c in zip(("q", "k", "bias"), split_p, whole_p, ref_p):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4)


M = 900  # nodes of the edge-window cases (one batch row, 3,856 bytes with the alignment, fits 4 KiB)


def _in_hub_graph(hub: int = 2000, top: int = 7) -> Graph:
    """Out-degrees 0 .. top - 1 (and two hubs of 300 out-edges that fit a window), and node 7
    the target of ``hub`` edges: more in-edges than a window holds (960 under 4 KiB, 4,032
    under 16 KiB)."""
    rng = np.random.default_rng(12)
    deg = rng.integers(0, top, M)
    deg[[3, 500]] = 300
    ptr = np.zeros(M + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    cols = rng.integers(0, M, int(ptr[-1]))
    cols[rng.permutation(cols.size)[:hub]] = 7
    return Graph.from_csr(ptr, cols, num_nodes=M)


def _backward_outputs(be, g, pi, gpi, q, k, out, bins):
    """``out`` plus softmax_logits_backward (after NaN in the pool's buffers that the lanes'
    scratch of ``bins`` may reuse), its sum of squares and edge_logits_backward, as numpy;
    and the graph data (None on NumPy)."""
    if hasattr(be, "graph_data"):
        poison = [be.asarray(np.full(getattr(be.graph_data(g), bins).workgroups * 128, np.nan, np.float32))
                  for _ in range(3)]
        del poison
    out["grad_q"], out["grad_k"], out["grad_logits"] = gq, gk, gl = be.softmax_logits_backward(g, pi, gpi, 0.7, q, k)
    out["sum of squares"] = be.sum_squares([gq, gk, gl])
    out["logits_bwd grad_q"], out["logits_bwd grad_k"], _ = be.edge_logits_backward(g, q, k, gl)
    gd = be.graph_data(g) if hasattr(be, "graph_data") else None
    return {name: be.to_numpy(x) for name, x in out.items()}, gd


def _in_hub_ops(be, limit, dim):
    rng = np.random.default_rng(dim + 40)
    g = _in_hub_graph()
    q, k = (rng.standard_normal((M, dim)).astype(np.float32) for _ in range(2))
    bias = rng.standard_normal(g.num_edges).astype(np.float32)
    gpi = rng.standard_normal(g.num_edges).astype(np.float32)
    out = {}
    with forced_limits(be, limit):
        pi = be.edge_probs(g, q, k, bias, 0.7, 0)
        for batch in (1, 5, 33):
            en = (rng.random((batch, M)) * (rng.random((batch, M)) < 0.7)).astype(np.float32)
            act = rng.random((batch, M)) < 0.8
            out[f"next B={batch}"] = be.energy_scatter(g, en, pi, 0.9, act if batch > 1 else None,
                                                       retain_sinks=batch == 5)
        return _backward_outputs(be, g, pi, gpi, q, k, out, "bins_in")


@pytest.mark.parametrize("dim", [1, 2])
def test_in_hub_past_a_window_bit_identical(gpu_backend, np_backend, dim):
    """A target of 2,000 in-edges under 4 KiB (windows of 960): its range in pieces of 768 (3
    target windows of node 7); energy_scatter (B = 1, 5 with retained sinks, 33 in batch
    chunks, masks) carries scatter_large's lanes across them (one carry group per batch row),
    softmax_logits_backward and edge_logits_backward carry the columns' lanes; d = 2 puts q and
    k in row windows too (the hub's pieces of 256 cut again at the target windows' pieces).
    Bit-identical to the unsplit run and in parity with NumPy."""
    whole, _ = _in_hub_ops(gpu_backend, None, dim)
    got, gd = _in_hub_ops(gpu_backend, 4096, dim)
    groups = [g for g in edge_windows.hub_groups(gd.rwindows) if isinstance(g, list)]
    assert [(g[0].n0, [w.e1 - w.e0 for w in g]) for g in groups] == [(7, [768, 768, _in_hub_graph().in_degree[7]
                                                                           - 1536])]
    assert bool(gd.row_plans) == (dim == 2)
    ref, _ = _in_hub_ops(np_backend, None, dim)
    for name in whole:
        assert got[name].tobytes() == whole[name].tobytes(), name
        assert_parity(got[name], ref[name], name, rtol=1e-4)


def _window_hub_train(be, limit, g, seed, top_k, reverse, hub, n_steps=3):
    """3 clipped AdamW steps (B = 5, d = 2) on ``g`` under ``limit``: [losses and gradient
    norms, q, k, bias]; split, node ``hub`` is the one big hub, in 2 target windows
    (``reverse``) or source windows."""
    rng = np.random.default_rng(seed)
    q, k = (0.3 * rng.standard_normal((M, 2))).astype(np.float32), (0.3 * rng.standard_normal((M, 2))).astype(
        np.float32)
    en = rng.random((5, M)).astype(np.float32)
    tgt = (0.1 * rng.random((5, M))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(g.num_edges)).astype(np.float32) if top_k else np.zeros(g.num_edges, np.float32)
    with forced_limits(be, limit):
        r = Router(g, RouterParams(q, k, bias, tau=0.8, alpha=0.9, top_k=top_k), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        out = []
        for _ in range(n_steps):
            res = r.train_step(en, tgt, opt, steps=2, retain_sinks=True)
            out += [res.loss, res.grad_norm]
        if limit and hasattr(be, "graph_data"):
            gd = be.graph_data(g)
            groups = [x for x in edge_windows.hub_groups(gd.rwindows if reverse else gd.windows) if isinstance(x, list)]
            assert [(x[0].n0, len(x)) for x in groups] == [(hub, 2)]
        p = r.params()
    return [np.array(out, np.float32), p.q, p.k, p.bias]


def _in_hub_train(be, limit):
    return _window_hub_train(be, limit, _in_hub_graph(5000, 14), 5, 0, True, 7)


def _assert_trains_as_unsplit(train, gpu_backend, np_backend):
    """``train(be, limit)`` -> [losses and norms, q, k, bias]: under 16 KiB bit-identical to the
    unsplit run and in parity with NumPy."""
    split, whole, ref = train(gpu_backend, 16384), train(gpu_backend, None), train(np_backend, None)
    for name, a, b, c in zip(("losses and norms", "q", "k", "bias"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4)


def test_router_trains_with_an_in_hub_past_a_window(gpu_backend, np_backend):
    """3 clipped AdamW steps (B = 5, q and k in row windows) under 16 KiB with node 7's 5,000
    in-edges in 2 target windows (pieces of 3,840): losses, gradient norms and parameters
    bit-identical to the unsplit run and in parity with NumPy."""
    _assert_trains_as_unsplit(_in_hub_train, gpu_backend, np_backend)


def _source_hub_graph(hub: int) -> Graph:
    """Out-degrees 0 .. 6, two hubs of 300 out-edges that fit a window, and node 3 with ``hub``
    out-edges: more than a window holds (960 edges under 4 KiB, 4,032 under 16 KiB)."""
    rng = np.random.default_rng(12)
    deg = rng.integers(0, 7, M)
    deg[[300, 500]] = 300
    deg[3] = hub
    ptr = np.zeros(M + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    return Graph.from_csr(ptr, rng.integers(0, M, int(ptr[-1])), num_nodes=M)


def _source_hub_ops(be, limit, dim, hub):
    rng = np.random.default_rng(dim + 40)
    g = _source_hub_graph(hub)
    q, k = (rng.standard_normal((M, dim)).astype(np.float32) for _ in range(2))
    bias = rng.standard_normal(g.num_edges).astype(np.float32)
    # magnitudes over 6 decades: the carried compensations change the sums' bits
    gpi = (rng.standard_normal(g.num_edges) * 10.0 ** rng.uniform(-3, 3, g.num_edges)).astype(np.float32)
    ties = np.round(2 * bias).astype(np.float32)  # 13 values: the k-th of the hub ties
    out = {}
    with forced_limits(be, limit):
        out["logits"] = be.edge_logits(g, q, k, bias)
        out["pi"] = pi = be.edge_probs(g, q, k, bias, 0.7, 0)
        out["pi top-3"] = be.edge_probs(g, q, k, bias, 0.7, 3)
        out["pi top-1000"] = be.edge_probs(g, q, k, bias, 0.7, 1000)  # the select across the pieces
        out["softmax of ties, top-900"] = be.segment_softmax(g, ties, 1.0, 900)
        out["top-5 of ties"] = be.segment_topk(g, ties, 5)
        out["top-1200 of ties"] = be.segment_topk(g, ties, 1200)
        for batch in (1, 5):
            en = (rng.random((batch, M)) * (rng.random((batch, M)) < 0.7)).astype(np.float32)
            act = rng.random((batch, M)) < 0.8
            gn = (rng.standard_normal((batch, M)) * 10.0 ** rng.uniform(-3, 3, (batch, M))).astype(np.float32)
            out[f"next B={batch}"] = nxt = be.energy_scatter(g, en, pi, 0.9, act, retain_sinks=batch == 5)
            out[f"flow B={batch}"] = be.edge_flow(g, en, pi, 0.9, act)
            if limit is None or limit >= 16384:  # step_metrics reduces blocks of 16 KiB
                out[f"metrics B={batch}"] = be.step_metrics(g, en, nxt, pi, 0.9, act)
            out[f"grad_energies B={batch}"], out[f"grad_pi B={batch}"] = be.energy_scatter_backward(
                g, en, pi, gn, 0.9, act, retain_sinks=batch == 5)
        out["segment_softmax_backward"] = be.segment_softmax_backward(g, pi, gpi, 0.7)
        return _backward_outputs(be, g, pi, gpi, q, k, out, "bins_out")


@pytest.mark.parametrize("limit,hub,dim,pieces", [
    (4096, 2000, 1, [768, 768, 464]),
    (4096, 2000, 2, [768, 768, 464]),     # q and k in row windows too
    (16384, 9000, 8, [3840, 3840, 1320]),  # row windows, and the step metrics
])
def test_source_hub_past_a_window_bit_identical(gpu_backend, np_backend, limit, hub, dim, pieces):
    """A source of more out-edges than an edge window holds: its out-edges in source windows of
    their own (pieces starting at multiples of 256 edges), the softmax and top-k
    (edge_probs_piece: the radix select's histograms, ties included, the max and the sum carried
    across pieces), the input-energy gradient (scatter_bwd_large_piece) and the softmax
    backward's dot and dl (hub_dot, hub_dl) in pieces; every other op over them as over any
    window. Bit-identical to the unsplit run and in parity with NumPy."""
    whole, _ = _source_hub_ops(gpu_backend, None, dim, hub)
    got, gd = _source_hub_ops(gpu_backend, limit, dim, hub)
    groups = [g for g in edge_windows.hub_groups(gd.windows) if isinstance(g, list)]
    assert [(g[0].n0, [w.e1 - w.e0 for w in g]) for g in groups] == [(3, pieces)]
    assert bool(gd.row_plans) == (dim > 1)
    ref, _ = _source_hub_ops(np_backend, None, dim, hub)
    assert set(got) <= set(whole) and len(got) >= 20
    for name in got:
        assert got[name].tobytes() == whole[name].tobytes(), name
        assert_parity(got[name], ref[name], name, rtol=1e-4)


def test_source_hub_refused_below_4_kib(gpu_backend):
    """Under a binding below 4 KiB (edge_probs_piece's carry), a source of more out-edges than a
    window holds is refused when the graph is uploaded, with its node and degree."""
    g = _source_hub_graph(2000)
    with forced_limits(gpu_backend, 2048), pytest.raises(DeviceLimitError, match="node 3 has 2000 out-edges"):
        gpu_backend.edge_probs(g, np.zeros((M, 1), np.float32), np.zeros((M, 1), np.float32),
                               np.zeros(g.num_edges, np.float32))
    assert gpu_backend.to_numpy(gpu_backend.add(np.ones(3, np.float32), np.ones(3, np.float32))).tolist() == [2, 2, 2]


def _source_hub_train(be, limit):
    return _window_hub_train(be, limit, _source_hub_graph(5000), 6, 40, False, 3)


def test_router_trains_with_a_source_hub_past_a_window(gpu_backend, np_backend):
    """3 clipped AdamW steps (B = 5, top-40, q and k in row windows) under 16 KiB with node 3's
    5,000 out-edges in 2 source windows: losses, gradient norms and parameters bit-identical
    to the unsplit run and in parity with NumPy."""
    _assert_trains_as_unsplit(_source_hub_train, gpu_backend, np_backend)



def _edge_case_ops(be, limit, dim):
    """Big source hubs at nodes 0, 1 (adjacent; the last piece of one edge) and N - 1 under
    4 KiB; top-k at, above and below the degrees, B = 0, 1, 3."""
    rng = np.random.default_rng(2)
    deg = rng.integers(0, 5, 700)
    deg[[0, 1, 698, 699]] = 1921, 1537, 0, 1536
    ptr = np.zeros(701, np.int64)
    np.cumsum(deg, out=ptr[1:])
    g = Graph.from_csr(ptr, rng.integers(0, 700, int(ptr[-1])), num_nodes=700)
    q, k = (rng.standard_normal((700, dim)).astype(np.float32) for _ in range(2))
    bias = rng.standard_normal(g.num_edges).astype(np.float32)
    ties = np.round(2 * bias).astype(np.float32)
    out = {}
    with forced_limits(be, limit):
        out["pi"] = pi = be.edge_probs(g, q, k, bias, 0.7, 0)
        out["pi top-5000"] = be.edge_probs(g, q, k, bias, 0.7, 5000)
        for top in (1, 1536, 2500):
            out[f"top-{top}"] = be.segment_topk(g, ties, top)
        out["softmax top-1537"] = be.segment_softmax(g, ties, 0.5, 1537)
        for batch in (0, 1, 3):
            en, gn = rng.random((batch, 700)).astype(np.float32), rng.standard_normal((batch, 700)).astype(np.float32)
            out[f"next B={batch}"] = be.energy_scatter(g, en, pi, 0.9)
            out[f"grad_energies B={batch}"], out[f"grad_pi B={batch}"] = be.energy_scatter_backward(g, en, pi, gn, 0.9)
        out["grad_q"], out["grad_k"], out["grad_logits"] = gq, gk, gl = be.softmax_logits_backward(
            g, pi, ties, 0.7, q, k)
        out["sum of squares"] = be.sum_squares([gq, gk, gl])
        gd = be.graph_data(g) if hasattr(be, "graph_data") else None
        return {name: be.to_numpy(x) for name, x in out.items()}, gd


@pytest.mark.parametrize("dim", [1, 3])
def test_source_hubs_adjacent_and_at_the_ends(gpu_backend, np_backend, dim):
    """Three big source hubs (nodes 0 and 1 adjacent, node 1's last piece a single edge, node
    N - 1 an exact multiple of the piece), top-k of 1, of a hub's degree, above every degree;
    B = 0: bit-identical to the unsplit run and in parity with NumPy (d = 3 in row windows)."""
    whole, _ = _edge_case_ops(gpu_backend, None, dim)
    got, gd = _edge_case_ops(gpu_backend, 4096, dim)
    groups = [g for g in edge_windows.hub_groups(gd.windows) if isinstance(g, list)]
    assert [(g[0].n0, [w.e1 - w.e0 for w in g]) for g in groups] == [
        (0, [768, 768, 385]), (1, [768, 768, 1]), (699, [768, 768])]
    ref, _ = _edge_case_ops(np_backend, None, dim)
    for name in got:
        assert got[name].tobytes() == whole[name].tobytes(), name
        assert_parity(got[name], ref[name], name, rtol=1e-4)


def test_source_hub_train_step_is_one_submit_without_allocations(gpu_backend):
    """With a big source hub in pieces (5,000 out-edges in 2 source windows under 16 KiB), a
    steady-state train step is still one submit creating no buffer, bind group or pipeline
    (the pieces' carries come from the pool); its dispatches are the same every step."""
    be = gpu_backend
    g = _source_hub_graph(5000)
    rng = np.random.default_rng(6)
    q, k = (0.3 * rng.standard_normal((M, 2))).astype(np.float32), (0.3 * rng.standard_normal((M, 2))).astype(
        np.float32)
    en, tgt = rng.random((5, M)).astype(np.float32), (0.1 * rng.random((5, M))).astype(np.float32)
    with forced_limits(be, 16384):
        r = Router(g, RouterParams(q, k, np.zeros(g.num_edges, np.float32), tau=0.8, alpha=0.9, top_k=40), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        assert_steady_step(be, lambda: r.train_step(en, tgt, opt, steps=2, retain_sinks=True), 7)
