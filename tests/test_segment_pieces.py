"""The backward's segment bins past one binding (ops_backward.window_pieces).

``segment_bwd`` reads each node's pointers and the degree-binned node list from one array,
``seg`` (u32 [2N + 1]); past one binding (N > 16.7 M on WebGPU's default limits) the graph is
uploaded in edge windows of at most ``edge_windows.max_window_nodes`` nodes even when its
[E] arrays fit, and each window binds its own *pieces*: its pointers, then the list places of
the workgroups that hold its nodes. Here a forced 16 KiB limit puts N = 3,000 there (seg:
24,004 bytes) while the E = 3,525 edges (14,100 bytes) fit: the gradients, their sum of squares
(the gradient norm's partials) and clipped AdamW steps are bit-identical to the unsplit run
and in parity with NumPy, on the thread / 32-lane / hub bins and on the serial kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity, forced_limits

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.webgpu import edge_windows, ops_backward
from energetic_wgpu.backends.webgpu.graph_data import binned_segments

N, LIMIT = 3000, 16384


def _graph() -> Graph:
    """Out-degrees 0..2 (a third of the nodes are sinks), 10 nodes of out-degree 20 and 10 of
    in-degree 20 (the 32-lane bin), node 11 of out-degree 300 and node 13 of in-degree 300
    (hubs); seeded."""
    rng = np.random.default_rng(5)
    deg = rng.integers(0, 3, N)
    deg[100:110] = 20
    deg[11] = 300
    src = np.repeat(np.arange(N), deg)
    dst = rng.integers(0, N, src.size)
    dst[np.flatnonzero(src != 11)[:300]] = 13
    dst[np.flatnonzero((src != 11) & (dst != 13))[:200]] = np.repeat(np.arange(200, 210), 20)
    return Graph.from_edges(src, dst, num_nodes=N)


def _inputs(dim: int):
    rng = np.random.default_rng(2)
    g = _graph()
    q, k = (rng.standard_normal((N, dim)).astype(np.float32) for _ in range(2))
    return g, q, k, rng.standard_normal(g.num_edges).astype(np.float32)


def test_graph_windowed_by_its_segment_bins(gpu_backend):
    """The [E] arrays fit 16 KiB but seg does not: edge windows of at most 1,365 nodes, no global
    seg on the device; every window's pieces hold its pointers and the places of every unit
    holding one of its nodes, each piece within one binding; the unsplit upload has seg whole."""
    be = gpu_backend
    g = _graph()
    assert 4 * g.num_edges <= LIMIT < 4 * (2 * N + 1)
    with forced_limits(be, LIMIT):
        gd = be.graph_data(g)
        assert gd.windows is not None and gd.rwindows is not None
        assert gd.bins_out.seg is None and gd.bins_in.seg is None
        cap = edge_windows.max_window_nodes(LIMIT)
        assert cap == 1365
        assert len(gd.windows) >= 3 and max(w.n1 - w.n0 for w in gd.windows + gd.rwindows) <= cap
        for bins, ptr, wins in ((gd.bins_out, g.row_ptr, gd.windows), (gd.bins_in, g.rev_ptr, gd.rwindows)):
            pieces = ops_backward.window_pieces(be, gd, bins, ptr, wins)
            assert ops_backward.window_pieces(be, gd, bins, ptr, wins) is pieces  # cached
            seg = binned_segments(ptr, be.thread_degree_max)[0]
            first = ops_backward._unit_starts(bins)
            place = np.empty(N, np.int64)
            place[seg[N + 1:].astype(np.int64)] = np.arange(N)
            unit = np.searchsorted(first, place, side="right") - 1
            for w, wp in zip(wins, pieces):
                covered = set()
                for piece in wp:
                    host = be.to_numpy(piece.seg)
                    assert 4 * host.size <= LIMIT
                    assert (host[:w.n1 - w.n0 + 1] == seg[w.n0:w.n1 + 1]).all()  # the window's pointers
                    for a, count, off in piece.runs:
                        lo, hi = int(first[a]), int(first[a + count])
                        at = (off + np.arange(lo, hi)) & 0xFFFFFFFF  # place m at bins_off + m
                        assert (host[at] == seg[N + 1 + lo:N + 1 + hi]).all()
                        covered.update(range(a, a + count))
                assert set(unit[w.n0:w.n1].tolist()) <= covered
    whole = be.graph_data(_graph())
    assert whole.windows is None and whole.bins_out.seg is not None


@pytest.mark.parametrize("bins", ["gpu", "cpu"])
@pytest.mark.parametrize("dim", [1, 4])
def test_backward_over_pieces_bit_identical(gpu_backend, np_backend, bins, dim):
    """softmax_logits_backward with the segment bins in pieces: grad_q, grad_k, grad_logits and
    their sum of squares bit-identical to one dispatch over the whole bins, and in parity with
    NumPy ("cpu" bins: out-segments and in-ranges in the thread bin up to 256 entries; d = 4:
    q and k past the binding too, in row windows)."""
    be = gpu_backend
    old = be._degree_bins
    be._degree_bins = bins
    try:
        g0, q, k, gpi = _inputs(dim)
        pi = be.to_numpy(be.segment_softmax(g0, np.linspace(-2, 2, g0.num_edges, dtype=np.float32)))

        def run(limit):
            g = _graph()
            with forced_limits(be, limit):
                out = be.softmax_logits_backward(g, pi, gpi, 0.7, q, k)
                return [be.to_numpy(x) for x in out + (be.sum_squares(list(out)),)], be.graph_data(g)

        whole, gd0 = run(None)
        split, gd = run(LIMIT)
        assert gd0.windows is None and gd.windows is not None
        ref = np_backend.softmax_logits_backward(g0, pi, gpi, 0.7, q, k)
        ref = list(ref) + [np_backend.sum_squares(list(ref))]
    finally:
        be._degree_bins = old
    for name, a, b, c in zip(("grad_q", "grad_k", "grad_logits", "sum of squares"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4 if name == "sum of squares" else 1e-5)


def test_pieces_cut_a_window_past_one_binding(gpu_backend, monkeypatch):
    """Under 4 KiB (N = 900: seg past the binding, windows of at most 341 nodes), with every
    window's runs merged into one (MAX_WINDOW_RUNS = 1: from its first workgroup to its last,
    nearly the whole list) a window's pointers and places no longer fit one piece: they go into
    two, the run cut between workgroups; the backward stays bit-identical to one dispatch."""
    be = gpu_backend
    rng = np.random.default_rng(6)
    n = 900
    deg = rng.integers(0, 3, n)
    deg[50:55] = 20
    src = np.repeat(np.arange(n), deg)
    dst = rng.integers(0, n, src.size)
    q, k = (rng.standard_normal((n, 1)).astype(np.float32) for _ in range(2))
    gpi = rng.standard_normal(src.size).astype(np.float32)
    monkeypatch.setattr(be, "_degree_bins", "gpu")  # out-segments of 20 in the 32-lane bin: workgroup units
    g0 = Graph.from_edges(src, dst, num_nodes=n)
    pi = be.to_numpy(be.segment_softmax(g0, np.zeros(g0.num_edges, np.float32)))
    whole = [be.to_numpy(x) for x in be.softmax_logits_backward(g0, pi, gpi, 0.7, q, k)]
    monkeypatch.setattr(ops_backward, "MAX_WINDOW_RUNS", 1)
    with forced_limits(be, 4096):
        g = Graph.from_edges(src, dst, num_nodes=n)
        split = [be.to_numpy(x) for x in be.softmax_logits_backward(g, pi, gpi, 0.7, q, k)]
        gd = be.graph_data(g)
        assert not gd.bins_out.serial and len(gd.windows) == 3
        pieces = ops_backward.window_pieces(be, gd, gd.bins_out, g.row_ptr, gd.windows)
        runs = ops_backward.window_runs(be, gd, gd.bins_out, g.row_ptr, gd.windows)
    assert [len(wr) for wr in runs] == [1, 1, 1]
    assert max(len(p) for p in pieces) == 2
    for wp, wr in zip(pieces, runs):  # the pieces' runs tile the window's run
        parts = [(a, c) for p in wp for a, c, _ in p.runs]
        assert parts[0][0] == wr[0][0] and sum(c for _, c in parts) == wr[0][1]
        assert all(a + c == b for (a, c), (b, _) in zip(parts, parts[1:]))
    for name, a, b in zip(("grad_q", "grad_k", "grad_logits"), split, whole):
        assert a.tobytes() == b.tobytes(), name


def _train(be, limit, n_steps=3):
    g, q, k, _ = _inputs(2)
    rng = np.random.default_rng(1)
    en = rng.random((5, N)).astype(np.float32)
    tgt = (0.1 * rng.random((5, N))).astype(np.float32)
    with forced_limits(be, limit):
        r = Router(g, RouterParams(q, k, np.zeros(g.num_edges, np.float32), tau=0.8, alpha=0.9, top_k=0), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)  # clipped: the norm's bits matter
        out = []
        for _ in range(n_steps):
            res = r.train_step(en, tgt, opt, steps=2, retain_sinks=True)
            out += [res.loss, res.grad_norm]
        p = r.params()
    return [np.array(out, np.float32), p.q, p.k, p.bias]


def test_train_steps_over_pieces_bit_identical(gpu_backend, np_backend):
    """3 clipped AdamW steps of a Router whose segment bins are in pieces: losses, gradient
    norms and parameters bit-identical to the unsplit run and in parity with NumPy (d = 2: q
    and k in row windows too)."""
    split = _train(gpu_backend, LIMIT)
    whole = _train(gpu_backend, None)
    ref = _train(np_backend, None)
    for name, a, b, c in zip(("losses and norms", "q", "k", "bias"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4)
