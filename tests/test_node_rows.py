"""q and k past one storage binding (node_rows.py): row windows, gathered rows, node blocks.

Under a forced 16 KiB binding limit q and k of 1,500 nodes × d = 8 (48 KB) or d = 5 (30 KB)
cannot be bound whole. The graph (8,837 edges: thread-bin, 32-lane and hub segments of 257 and
300 edges, an in-hub of 250+, a few nodes of out-degree 0) is also past one binding, so its
edge windows (3) are cut finer into row windows whose gathered k (q) rows fit a binding; under
a 64 KiB limit with d = 16 only q and k are past it (the graph's [E] arrays fit: row windows
over an unwindowed graph). With a 16 KiB buffer limit too, q, k, their gradients and the
moments are split over buffers at node blocks, and q and k given as host arrays are copied
into that layout. Every output (logits, pi, top-k pi, grad_q, grad_k, grad_logits, the
gradient norm's sum of squares, edge_logits_backward, sum_squares of q, k and bias) and clipped Router training with an
AdamW state round trip and a checkpoint round trip (d = 16 under 32 KiB) are bit-identical to the same problem on the device's limits and
within the parity rule of NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity, forced_limits

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.webgpu.arrays import parts_of
from energetic_wgpu.checkpoint import load_checkpoint, save_checkpoint
from energetic_wgpu.errors import DeviceLimitError

N = 1500


def _graph(seed: int = 3) -> Graph:
    rng = np.random.default_rng(seed)
    deg = rng.integers(0, 12, N)
    deg[5], deg[40], deg[700] = 300, 257, 33  # hubs and a 32-lane segment
    deg[41:60] = 20
    deg[900:905] = 0
    ptr = np.zeros(N + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    cols = rng.integers(0, N, int(ptr[-1]))
    cols[ptr[5]:ptr[5] + 250] = N - 3  # an in-hub
    return Graph.from_csr(ptr, cols, num_nodes=N)


def _inputs(dim: int, graph=_graph):
    rng = np.random.default_rng(dim)
    g = graph()
    q, k = (rng.standard_normal((N, dim)).astype(np.float32) for _ in range(2))
    bias = rng.standard_normal(g.num_edges).astype(np.float32)
    gpi = rng.standard_normal(g.num_edges).astype(np.float32)
    return g, q, k, bias, gpi


def _ops(be, limits, dim, graph=_graph):
    """Every op that reads q and k, on ``graph()`` under ``limits``: (outputs by name, the graph
    data or None, whether grad_q came back split over buffers)."""
    g, q, k, bias, gpi = _inputs(dim, graph)
    with forced_limits(be, *limits):
        out = {"logits": be.edge_logits(g, q, k, bias)}
        pi = be.edge_probs(g, q, k, bias, 0.7, 0)
        out["pi"], out["pi top-3"] = pi, be.edge_probs(g, q, k, bias, 1.0, 3)
        out["grad_q"], out["grad_k"], out["grad_logits"] = gq, gk, gl = be.softmax_logits_backward(
            g, pi, gpi, 0.7, q, k)
        out["sum of squares"] = be.sum_squares([gq, gk, gl])
        out["logits_bwd grad_q"], out["logits_bwd grad_k"], _ = be.edge_logits_backward(g, q, k, gl)
        out["sum of squares of q, k, bias"] = be.sum_squares([q, k, bias])  # in ranges of whole workgroups
        gd = be.graph_data(g) if hasattr(be, "graph_data") else None
        split = gd is not None and parts_of(out["grad_q"]) is not None
        return {name: be.to_numpy(x) for name, x in out.items()}, gd, split


@pytest.mark.parametrize("dim,limits,edge_windows,split", [
    (8, (16384, None), 3, False),
    (8, (16384, 16384), 3, True),
    (5, (16384, 16384), 3, True),
    (16, (65536, None), None, False),
])
def test_ops_over_row_windows_bit_identical(gpu_backend, np_backend, dim, limits, edge_windows, split):
    whole, gd_whole, _ = _ops(gpu_backend, (None, None), dim)
    got, gd, was_split = _ops(gpu_backend, limits, dim)
    assert not gd_whole.row_plans
    plan = gd.row_plans[dim]
    assert (None if gd.windows is None else len(gd.windows)) == edge_windows
    assert was_split == split
    # row windows: each inside a node block, its gathered rows within one binding
    assert len(plan.windows) > 3 and len(plan.rwindows) > 3
    for w in plan.windows + plan.rwindows:
        assert w.n0 // plan.block == (w.n1 - 1) // plan.block
        assert 4 * dim * plan.rows <= limits[0]
    assert [w.n0 for w in plan.windows][0] == 0 and plan.windows[-1].n1 == N
    ref, _, _ = _ops(np_backend, (None, None), dim)
    for name in whole:
        assert got[name].tobytes() == whole[name].tobytes(), name
        assert_parity(got[name], ref[name], name, rtol=1e-4)


def _train(be, limits, tmp_path, n_steps=3):
    dim = 16  # 96 KB q and k; the scatter's node-major state needs 4 rows of N (24 KB) in a binding
    g, q, k, bias, _ = _inputs(dim)
    rng = np.random.default_rng(1)
    en = rng.random((4, N)).astype(np.float32)
    tgt = (0.1 * rng.random((4, N))).astype(np.float32)
    with forced_limits(be, *limits):
        r = Router(g, RouterParams(0.3 * q, 0.3 * k, bias, tau=0.8, alpha=0.9, top_k=3), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        out = []
        for _ in range(n_steps):
            res = r.train_step(en, tgt, opt, steps=2, retain_sinks=True)
            out += [res.loss, res.grad_norm]
        state = opt.state()
        p = r.params()
        opt.load_state(state)  # the moments uploaded again (into node blocks when split)
        out.append(r.train_step(en, tgt, opt, steps=2, retain_sinks=True).loss)
        after = r.params()
        if limits[0] and hasattr(be, "graph_data"):  # the row windows ran, q in node blocks
            assert list(be.graph_data(g).row_plans) == [dim]
            assert (parts_of(r.q) is not None) == (limits[1] is not None)
        # a checkpoint round trip: the parameters and moments uploaded into node blocks again
        path = save_checkpoint(tmp_path / f"{type(be).__name__}{limits}.ckpt", step=4, params=after,
                               optimizer_state=opt.state(), graph=g)
        ck = load_checkpoint(path, g)
        resumed = Router(g, ck.params, be)
        resumed_opt = AdamW(resumed, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        resumed_opt.load_state(ck.optimizer)
        out.append(resumed.train_step(en, tgt, resumed_opt, steps=2, retain_sinks=True).loss)
        last = resumed.params()
    return np.array(out, np.float32), [p.q, p.k, p.bias, state["m"]["q"], state["v"]["k"], after.q, after.k,
                                       last.q, last.k]


@pytest.mark.parametrize("limits", [(32768, None), (32768, 32768)])
def test_router_trains_over_row_windows_bit_identical(gpu_backend, np_backend, limits, tmp_path):
    """Router + clipped AdamW with q and k past one binding: the parameters and moments in
    node blocks (one buffer bound in ranges, or split over buffers), the forward and backward
    over row windows, the update in ranges, an AdamW state round trip and a checkpoint round
    trip; every loss, gradient norm, parameter and moment bit-identical to the unsplit run and
    within parity of NumPy."""
    whole, whole_p = _train(gpu_backend, (None, None), tmp_path)
    split, split_p = _train(gpu_backend, limits, tmp_path)
    ref, ref_p = _train(np_backend, (None, None), tmp_path)
    assert split.tobytes() == whole.tobytes()
    assert_parity(split, ref, "losses and gradient norms", rtol=1e-4)
    for name, a, b, c in zip(("q", "k", "bias", "m of q", "v of k", "q after load_state", "k after load_state",
                              "q after the checkpoint", "k after the checkpoint"), split_p, whole_p, ref_p):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4)


def test_row_window_refusals(gpu_backend):
    """A segment with more out-edges than a row window's gathered rows hold, where they are too
    few for a big hub's pieces (fewer than 256), is refused before any work (by the ops, and by Router before its parameters are packed), naming the node,
    and the backend stays usable; so is a d whose one row is past the binding, and a Router
    whose scatter state (4 rows of N) is past one binding, before anything is allocated."""
    rng = np.random.default_rng(0)
    n, dim = 600, 16
    deg = np.full(n, 2)
    deg[7] = 500  # > 16384 / 64 - 64 = 192 gathered rows, fewer than a big hub's piece of 256 needs
    g = Graph.from_csr(np.concatenate([[0], np.cumsum(deg)]), rng.integers(0, n, int(deg.sum())), num_nodes=n)
    q, k = (rng.standard_normal((n, dim)).astype(np.float32) for _ in range(2))
    bias = np.zeros(g.num_edges, np.float32)
    with forced_limits(gpu_backend, 16384):
        with pytest.raises(DeviceLimitError, match="node 7 has 500 out-edges.*16 floats per gathered row"):
            gpu_backend.edge_probs(g, q, k, bias)
        with pytest.raises(DeviceLimitError, match="node 7 has 500 out-edges"):  # before packing the parameters
            Router(g, RouterParams(q, k, bias), gpu_backend)
    # the graph keeps the layout of its upload under 16 KiB (no pointer blocks), so under 2 KiB its
    # Router needs one batch row of N in one binding, and is refused
    with forced_limits(gpu_backend, 2048):
        before = gpu_backend.counters()["buffers_created"]
        with pytest.raises(DeviceLimitError, match=r"one batch row of N = 600 nodes \(2400 bytes, plus 256 bytes of "
                                                   r"alignment\) does not fit the binding limit of 2048 bytes"):
            Router(g, RouterParams(q, k, bias), gpu_backend)
        assert gpu_backend.counters()["buffers_created"] == before
    with forced_limits(gpu_backend, 8192):
        wide = np.zeros((40, 4200), np.float32)
        g2 = Graph.from_csr(np.arange(41), np.arange(40) % 40, num_nodes=40)
        with pytest.raises(DeviceLimitError, match="d = 4200"):
            gpu_backend.edge_logits(g2, wide, wide, np.zeros(40, np.float32))
    pi = gpu_backend.to_numpy(gpu_backend.edge_probs(g, q, k, bias))
    assert np.allclose(np.add.reduceat(pi, np.concatenate([[0], np.cumsum(deg)[:-1]])), 1.0, atol=1e-5)
