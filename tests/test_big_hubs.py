"""Big hubs of a row plan (node_rows.py): a hub with more entries than one row window's
gathered rows hold, run in pieces.

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
from parity import assert_parity, forced_limits
from test_node_rows import _inputs, _ops

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.webgpu import node_rows

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
    big = [(w.n0, w.e1 - w.e0) for w in plan.windows if w.big]
    rbig = [(w.n0, w.e1 - w.e0) for w in plan.rwindows if w.big]
    assert big == [(5, 1000)] and rbig == [(N - 3, _graph().in_degree[N - 3])]
    assert len(node_rows.row_pieces(plan, [w for w in plan.windows if w.big][0])) == -(-1000 // piece)
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
