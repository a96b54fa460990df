"""Edge windows (edge_windows.py): a graph whose [E] arrays are past one storage binding.

Under a forced 4 KiB binding limit a window holds at most 960 edges, so a graph of 3,064 edges
over 54 nodes (out-degrees 0, 1, 16, 17, 32, 33, 256, 257, 600, then 45 and a few small ones)
is cut into 4 windows that each keep whole segments: thread-bin, 32-lane and hub segments all
land in windows of their own bins; its reverse index into 4 windows of targets (an in-hub of
520 edges). Every graph op is bit-identical to the same graph on the device's limits (one
dispatch over the whole graph) and within the parity rule of NumPy: the forward ops, the
scatter and its edge flow, every backward op (the gradient norm's sum-of-squares partials
too), the step metrics (16 and 32 KiB limits), and clipped Router training with an AdamW
state round trip and entropy regularization; with a 4 KiB buffer limit too, every [E] array
is split over buffers and an input cut elsewhere is copied into the windows' layout first.
What is still refused (a segment or an in-range larger than a window, the 4096-edge
reductions under 16 KiB, a split array bound whole) is refused before any work.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity, forced_limits

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.webgpu.arrays import parts_of
from energetic_wgpu.errors import DeviceLimitError

DEGREES = [0, 1, 16, 17, 32, 33, 256, 257, 600, 0, 3] + [45] * 40 + [2, 40, 7]
LIMIT = 4096


def _graph() -> Graph:
    rng = np.random.default_rng(8)
    n = len(DEGREES)
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(DEGREES, out=ptr[1:])
    cols = rng.integers(0, n - 1, int(ptr[-1]))
    cols[ptr[8]:ptr[8] + 500] = n - 1  # an in-hub of 500 edges (scatter_large), most from the 600-edge segment
    cols[ptr[20]:ptr[20] + 20] = n - 1
    return Graph.from_csr(ptr, cols, num_nodes=n)


def _inputs(dim: int, seed: int = 0):
    g = _graph()
    rng = np.random.default_rng(seed)
    n, e = g.num_nodes, g.num_edges
    return g, rng.standard_normal((n, dim)).astype(np.float32), rng.standard_normal((n, dim)).astype(np.float32), \
        (0.5 * rng.standard_normal(e)).astype(np.float32)


def _limits(be, mode):
    return forced_limits(be, LIMIT if mode else None, LIMIT if mode == "buffers" else None)


def _run(be, mode, dim, top_k):
    g, q, k, bias = _inputs(dim)
    with _limits(be, mode):
        gd = be.graph_data(g)
        logits = be.edge_logits(g, q, k, bias)
        out = {
            "logits": logits,
            "pi": be.edge_probs(g, q, k, bias, tau=0.7, top_k=top_k),
            "softmax": be.segment_softmax(g, logits, tau=1.3, top_k=top_k),
            "kept": be.segment_topk(g, logits, 3),
        }
        host = {name: be.to_numpy(x) for name, x in out.items()}
    return host, gd


@pytest.mark.parametrize("mode", ["ranges", "buffers"])
@pytest.mark.parametrize("dim,top_k", [(5, 0), (16, 3), (16, 17)])
def test_windowed_ops_bit_identical(gpu_backend, np_backend, mode, dim, top_k):
    whole, gd_whole = _run(gpu_backend, None, dim, top_k)
    split, gd = _run(gpu_backend, mode, dim, top_k)
    assert gd_whole.windows is None
    spans = [(w.n0, w.n1, w.e0, w.e1) for w in gd.windows]
    assert spans == [(0, 8, 0, 612), (8, 18, 612, 1530), (18, 39, 1530, 2475), (39, 54, 2475, 3064)]
    # every bin in some window: thread, 32-lane and hub segments (257 and 600 edges)
    assert [(w.bins.n_small, w.bins.n_mid, w.bins.n_hub) for w in gd.windows] == [(4, 2, 1), (1, 7, 1), (0, 21, 0),
                                                                                   (2, 13, 0)]
    if mode == "buffers":
        assert gd.col_idx.is_split
    for name, ref in whole.items():
        assert split[name].tobytes() == ref.tobytes(), name
    g, q, k, bias = _inputs(dim)
    assert_parity(split["pi"], np_backend.to_numpy(np_backend.edge_probs(g, q, k, bias, tau=0.7, top_k=top_k)), "pi")


def test_input_cut_elsewhere_is_copied_into_the_windows(gpu_backend):
    be = gpu_backend
    g, q, k, bias = _inputs(4)
    whole = be.to_numpy(be.edge_logits(_graph(), q, k, bias))
    with _limits(be, "buffers"):
        b = be.asarray(bias)  # its own layout: 4 KiB buffers of 1,024 elements, not the windows' cuts
        gd = be.graph_data(g)
        starts = [s for s, *_ in parts_of(b)]
        assert starts == [0, 1024, 2048] and starts != [w.e0 for w in gd.windows]
        assert be.to_numpy(be.edge_logits(g, q, k, b)).tobytes() == whole.tobytes()


def test_what_a_windowed_graph_still_refuses(gpu_backend):
    """Under a 4 KiB limit the metrics and sum_squares (blocks of 4096 edges, 16 KiB) are refused
    before any dispatch (add of the split [E] arrays runs in ranges); the backend stays usable."""
    be = gpu_backend
    g, q, k, bias = _inputs(4)
    with _limits(be, "buffers"):
        pi = be.edge_probs(g, q, k, bias)
        en = np.ones((2, g.num_nodes), np.float32)
        before = be.counters()["dispatches"]
        with pytest.raises(DeviceLimitError, match=r"step_metrics: a graph cut into edge windows reduces its \[E\] "
                                                   r"arrays in blocks of 4096 edges \(16384 bytes\), over the binding "
                                                   r"limit of 4096 bytes"):
            be.step_metrics(g, en, en, pi)
        with pytest.raises(DeviceLimitError, match=r"an array of 3064 elements \(12256 bytes\) is over the binding "
                                                   r"limit of 4096 bytes, and one reduction workgroup's range"):
            be.sum_squares([pi])
        assert be.counters()["dispatches"] == before
        total = be.add(pi, pi)  # elementwise over ranges of one binding, in every part
        np.testing.assert_array_equal(be.to_numpy(total), 2 * be.to_numpy(pi))
    # the backend stays usable
    assert be.to_numpy(be.edge_probs(_graph(), q, k, bias)).shape == (3064,)


def _public_bwd(be, mode, dim):
    g, q, k, bias = _inputs(dim, seed=dim + 7)
    rng = np.random.default_rng(dim)
    gpi = rng.standard_normal(g.num_edges).astype(np.float32)
    pi = np.asarray(be.to_numpy(be.edge_probs(_graph(), q, k, bias, top_k=3)))
    with _limits(be, mode):
        gl = be.segment_softmax_backward(g, pi, gpi, tau=0.7)
        gq, gk, gb = be.edge_logits_backward(g, q, k, gl)
        return [be.to_numpy(x) for x in (gl, gq, gk, gb)]


@pytest.mark.parametrize("mode", ["ranges", "buffers"])
@pytest.mark.parametrize("dim", [3, 16])
def test_softmax_and_logits_backward_over_windows_bit_identical(gpu_backend, np_backend, mode, dim):
    """segment_softmax_backward per window of sources, edge_logits_backward's grad_q per window
    of sources and grad_k per window of targets (grad_logits in reverse-index order)."""
    whole = _public_bwd(gpu_backend, None, dim)
    split = _public_bwd(gpu_backend, mode, dim)
    ref = _public_bwd(np_backend, None, dim)
    for name, a, b, c in zip(("grad_logits", "grad_q", "grad_k", "grad_bias"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name)


def test_segment_larger_than_a_window_refused(gpu_backend):
    be = gpu_backend
    g, q, k, bias = _inputs(4)
    with be.binding_limit(2048):  # 448 edges per window: the 600-edge segment does not fit
        with pytest.raises(DeviceLimitError, match=r"node 8 has 600 out-edges, more than one storage binding holds "
                                                   r"\(448 edges of 4 bytes, max_binding_bytes = 2048 bytes"):
            be.edge_probs(g, q, k, bias)


def _scatter(be, mode, batch, masked, sinks):
    g, q, k, bias = _inputs(4, seed=batch)
    rng = np.random.default_rng(batch)
    en = rng.random((batch, g.num_nodes)).astype(np.float32)
    act = rng.random((batch, g.num_nodes)) < 0.7
    pi = np.asarray(be.to_numpy(be.edge_probs(_graph(), q, k, bias, top_k=3)))
    with _limits(be, mode):
        gd = be.graph_data(g) if hasattr(be, "graph_data") else None
        out, flow = be.energy_scatter(g, en, pi, alpha=0.9, active=act if masked else None, retain_sinks=sinks,
                                      return_flow=True)
        return be.to_numpy(out), be.to_numpy(flow), gd


@pytest.mark.parametrize("mode", ["ranges", "buffers"])
@pytest.mark.parametrize("batch,masked,sinks", [(1, False, False), (5, True, True), (33, True, False)])
def test_energy_scatter_over_windows_bit_identical(gpu_backend, np_backend, mode, batch, masked, sinks):
    whole, whole_flow, _ = _scatter(gpu_backend, None, batch, masked, sinks)
    split, flow, gd = _scatter(gpu_backend, mode, batch, masked, sinks)
    assert len(gd.rwindows) == 4 and sum(r.n_large for r in gd.rwindows) == 1  # the in-hub
    assert split.tobytes() == whole.tobytes()
    assert flow.shape == (batch, 3064) and flow.tobytes() == whole_flow.tobytes()
    ref, ref_flow, _ = _scatter(np_backend, None, batch, masked, sinks)
    assert_parity(split, ref, "next energies")
    assert_parity(flow, ref_flow, "edge flow")


def test_in_degree_larger_than_a_window_refused(gpu_backend):
    """A target of more in-edges than a window holds runs in pieces of 256 (tests/test_big_hubs.py);
    under a 1 KiB limit a window holds 192, too few for a piece: energy_scatter refuses it,
    naming the node, before any dispatch."""
    be = gpu_backend
    rng = np.random.default_rng(2)
    n = 40
    g = Graph.from_edges(np.repeat(np.arange(n), 15), np.where(rng.random(600) < 0.8, 0, rng.integers(0, n, 600)),
                         num_nodes=n)
    with be.binding_limit(1024):  # 192 edges per window; node 0 has about 480 in-edges
        pi = be.segment_softmax(g, np.zeros(600, np.float32))  # the forward windows work
        before = be.counters()["dispatches"]
        with pytest.raises(DeviceLimitError, match=r"energy_scatter: node 0 has \d+ in-edges, more than one storage "
                                                   r"binding holds \(192 edges of 4 bytes"):
            be.energy_scatter(g, np.ones((2, n), np.float32), pi)
        assert be.counters()["dispatches"] == before


def _scatter_bwd(be, mode, batch, masked, with_acc):
    g, q, k, bias = _inputs(4, seed=batch + 1)
    rng = np.random.default_rng(batch + 1)
    en = rng.random((batch, g.num_nodes)).astype(np.float32)
    act = rng.random((batch, g.num_nodes)) < 0.7
    gn = rng.standard_normal((batch, g.num_nodes)).astype(np.float32)
    acc = rng.standard_normal(g.num_edges).astype(np.float32) if with_acc else None
    pi = np.asarray(be.to_numpy(be.edge_probs(_graph(), q, k, bias, top_k=3)))
    with _limits(be, mode):
        ge, gpi = be.energy_scatter_backward(g, en, pi, gn, alpha=0.9, active=act if masked else None,
                                             retain_sinks=True, grad_pi_acc=acc)
        return be.to_numpy(ge), be.to_numpy(gpi)


@pytest.mark.parametrize("mode", ["ranges", "buffers"])
@pytest.mark.parametrize("batch,masked,with_acc", [(1, False, True), (6, True, False), (33, True, True)])
def test_energy_scatter_backward_over_windows_bit_identical(gpu_backend, np_backend, mode, batch, masked, with_acc):
    """Both gradients per window of sources (the 257- and 600-edge segments through
    scatter_bwd_large); B = 33 runs in batch chunks, handing grad_pi's running sums on in the
    windows' layout."""
    whole = _scatter_bwd(gpu_backend, None, batch, masked, with_acc)
    split = _scatter_bwd(gpu_backend, mode, batch, masked, with_acc)
    ref = _scatter_bwd(np_backend, None, batch, masked, with_acc)
    for name, a, b, c in zip(("grad_energies", "grad_pi"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name)


def _softmax_logits_bwd(be, mode, dim):
    g, q, k, bias = _inputs(dim, seed=dim)
    rng = np.random.default_rng(dim)
    gpi = rng.standard_normal(g.num_edges).astype(np.float32)
    pi = np.asarray(be.to_numpy(be.edge_probs(_graph(), q, k, bias, top_k=3)))
    with _limits(be, mode):
        gq, gk, gl = be.softmax_logits_backward(g, pi, gpi, 0.8, q, k)
        norm = be.sum_squares([gq, gk, gl])
        return [be.to_numpy(x) for x in (gq, gk, gl, norm)]


@pytest.mark.parametrize("mode", ["ranges", "buffers"])
@pytest.mark.parametrize("dim", [3, 16])
def test_softmax_logits_backward_over_windows_bit_identical(gpu_backend, np_backend, mode, dim):
    """The fused softmax + logits backward per window (source windows for grad_q and
    grad_logits, target windows for grad_k over grad_logits in reverse-index order), each lane's
    sum of squares stored and reduced as one dispatch does: the gradients and their sum of
    squares (the gradient norm's partials) are bit-identical."""
    whole = _softmax_logits_bwd(gpu_backend, None, dim)
    split = _softmax_logits_bwd(gpu_backend, mode, dim)
    ref = _softmax_logits_bwd(np_backend, None, dim)
    for name, a, b, c in zip(("grad_q", "grad_k", "grad_logits", "sum of squares"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4 if name == "sum of squares" else 1e-5)


def test_softmax_logits_backward_serial_bins_over_windows(gpu_backend):
    """A graph of small degrees only (out- and in-degrees <= 16): segment_bwd_serial per window,
    each node's sum of squares stored and summed per thread as one dispatch does."""
    be = gpu_backend
    rng = np.random.default_rng(4)
    n, deg, d = 300, 10, 3
    q, k = (rng.standard_normal((n, d)).astype(np.float32) for _ in range(2))
    gpi = rng.standard_normal(n * deg).astype(np.float32)
    cols = (np.arange(n * deg) * 7 + rng.integers(0, 3, n * deg)) % n  # in-degrees about 10

    def run(limit):
        g = Graph.from_edges(np.repeat(np.arange(n), deg), cols, num_nodes=n)
        pi = np.full(n * deg, 0.1, np.float32)
        with forced_limits(be, limit):
            gd = be.graph_data(g)
            out = be.softmax_logits_backward(g, pi, gpi, 0.8, q, k)
            got = [be.to_numpy(x) for x in out + (be.sum_squares(list(out)),)]
        return got, gd

    whole, _ = run(None)
    split, gd = run(4096)
    assert gd.bins_out.serial and gd.bins_in.serial and len(gd.windows) == 4
    for name, a, b in zip(("grad_q", "grad_k", "grad_logits", "sum of squares"), split, whole):
        assert a.tobytes() == b.tobytes(), name


def _train(be, mode, n_steps=3):
    g, q, k, bias = _inputs(4, seed=3)
    rng = np.random.default_rng(1)
    en = rng.random((5, g.num_nodes)).astype(np.float32)
    tgt = (0.1 * rng.random((5, g.num_nodes))).astype(np.float32)
    with _limits(be, mode):
        r = Router(g, RouterParams(q, k, bias, tau=0.8, alpha=0.9, top_k=3), be)
        # clipped: the gradient norm's bits matter; eps well above the float32 noise of (near-)zero
        # gradients, which Adam would blow up to +-lr
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        losses, norms = [], []
        for _ in range(n_steps):
            res = r.train_step(en, tgt, opt, steps=2, retain_sinks=True)
            losses.append(res.loss)
            norms.append(res.grad_norm)
        state = opt.state()
        p = r.params()
        # the optimizer state round trip (moments uploaded again into the windows' layout)
        opt.load_state(state)
        res = r.train_step(en, tgt, opt, steps=2, retain_sinks=True)
        losses.append(res.loss)
        after = r.params()
    return np.array(losses + norms, np.float32), [p.q, p.k, p.bias, state["m"]["bias"], after.bias]


@pytest.mark.parametrize("mode", ["ranges", "buffers"])
def test_router_trains_over_windows_bit_identical(gpu_backend, np_backend, mode):
    """Router + clipped AdamW on the windowed graph: the bias, its moments and gradient in the
    windows' layout (one buffer bound in ranges, or split over buffers), the forward, the
    backward (its sum-of-squares partials rebuilt per window) and the update in ranges; every
    loss, gradient norm and parameter bit-identical to the unsplit run, within parity of NumPy."""
    whole, whole_p = _train(gpu_backend, None)
    split, split_p = _train(gpu_backend, mode)
    ref, ref_p = _train(np_backend, None)
    assert split.tobytes() == whole.tobytes()
    assert_parity(split, ref, "losses and gradient norms", rtol=1e-4)
    for name, a, b, c in zip(("q", "k", "bias", "m of bias", "bias after load_state"), split_p, whole_p, ref_p):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4)


def _metrics(be, limit, batch, masked, n=600):
    rng = np.random.default_rng(11)
    deg = rng.integers(1, 40, n)
    deg[5] = 300  # a hub
    g = Graph.from_csr(np.concatenate([[0], np.cumsum(deg)]), rng.integers(0, n, int(deg.sum())), num_nodes=n)
    q, k = ((0.5 * rng.standard_normal((n, 4))).astype(np.float32) for _ in range(2))
    bias = (0.3 * rng.standard_normal(g.num_edges)).astype(np.float32)
    en = (rng.random((batch, n)) * (rng.random((batch, n)) < 0.7)).astype(np.float32)
    act = rng.random((batch, n)) < 0.8
    with forced_limits(be, limit):
        r = Router(g, RouterParams(q, k, bias, tau=0.9, alpha=0.8, top_k=5), be)
        out = r.forward(en, active=act if masked else None, steps=2)
        gd = be.graph_data(g) if hasattr(be, "graph_data") else None
        return be.to_numpy(out.metrics_array), gd


@pytest.mark.parametrize("limit,n", [(16384, 600), (32768, 1200)])
@pytest.mark.parametrize("batch,masked", [(3, False), (9, True)])
def test_step_metrics_over_windows_bit_identical(gpu_backend, np_backend, batch, masked, limit, n):
    """The step metrics of a Router forward on a graph of ~12,000 (24,000) edges cut into
    windows of at most 4,032 (8,128) edges under a 16 KiB (32 KiB) limit: the entropy over
    ranges of whole 4096-edge blocks and the [B, E] grid per row and window, each block across
    two windows on copies (under 16 KiB every block: no window holds a whole one); B = 9 also
    splits the [B, N] arrays into batch chunks."""
    whole, _ = _metrics(gpu_backend, None, batch, masked, n)
    split, gd = _metrics(gpu_backend, limit, batch, masked, n)
    assert len(gd.windows) >= 3
    assert split.tobytes() == whole.tobytes()
    ref, _ = _metrics(np_backend, None, batch, masked, n)
    assert_parity(split, ref, "metrics", rtol=1e-4)


def _train_entropy(be, limit):
    rng = np.random.default_rng(13)
    n = 600
    deg = rng.integers(1, 40, n)
    g = Graph.from_csr(np.concatenate([[0], np.cumsum(deg)]), rng.integers(0, n, int(deg.sum())), num_nodes=n)
    q, k = ((0.5 * rng.standard_normal((n, 4))).astype(np.float32) for _ in range(2))
    bias = (0.3 * rng.standard_normal(g.num_edges)).astype(np.float32)
    en = rng.random((3, n)).astype(np.float32)
    tgt = (0.1 * rng.random((3, n))).astype(np.float32)
    with forced_limits(be, limit):
        r = Router(g, RouterParams(q, k, bias, tau=0.9, alpha=0.8, top_k=0), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        losses = [r.train_step(en, tgt, opt, entropy_lambda=0.05).loss for _ in range(2)]
        return np.array(losses, np.float32), r.params().bias


def test_router_entropy_regularization_over_windows_bit_identical(gpu_backend, np_backend):
    """train_step with entropy regularization on a graph cut into windows (16 KiB limit): the
    entropy over ranges of whole 4096-edge blocks, the block across two windows on copies and
    its gradient copied back into the windows' layout."""
    whole = _train_entropy(gpu_backend, None)
    split = _train_entropy(gpu_backend, 16384)
    ref = _train_entropy(np_backend, None)
    for name, a, b, c in zip(("losses", "bias"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4)


def _many_degrees(n: int = 2000) -> Graph:
    """Out-degrees 0 .. 20 (21 classes, each in every window; 17 .. 20 in the 32-lane bin of
    "gpu" bins), in-degrees about Poisson(10) plus a target of in-degree about 300 (a hub);
    seeded."""
    rng = np.random.default_rng(17)
    deg = rng.integers(0, 21, n)
    src = np.repeat(np.arange(n), deg)
    dst = rng.integers(0, n, src.size)
    dst[rng.random(src.size) < 300 / src.size] = 7
    return Graph.from_edges(src, dst, num_nodes=n)


@pytest.mark.parametrize("bins", ["cpu", "gpu"])
def test_window_runs_cover_each_windows_nodes(gpu_backend, np_backend, bins):
    """ops_backward.window_runs: a window's segment_bwd dispatches cover every unit (list place
    or workgroup of the global bins) holding one of its nodes, in at most 16 sorted, disjoint
    runs (the closest merged); the windowed softmax_logits_backward stays bit-identical to one
    dispatch (thread, 32-lane and hub bins; the serial kernel for the out-segments on "cpu"
    bins, where every out-degree fits a thread and each window's 21 runs are merged to 16)."""
    from energetic_wgpu.backends.webgpu import ops_backward
    from energetic_wgpu.backends.webgpu.graph_data import binned_segments

    be = gpu_backend
    old = be._degree_bins
    be._degree_bins = bins
    try:
        rng = np.random.default_rng(3)
        g0 = _many_degrees()
        q, k = (rng.standard_normal((g0.num_nodes, 3)).astype(np.float32) for _ in range(2))
        gpi = rng.standard_normal(g0.num_edges).astype(np.float32)
        pi = be.to_numpy(be.segment_softmax(g0, rng.standard_normal(g0.num_edges).astype(np.float32)))
        whole = [be.to_numpy(x) for x in be.softmax_logits_backward(g0, pi, gpi, 0.7, q, k)]
        with forced_limits(be, 16384):
            g = _many_degrees()
            gd = be.graph_data(g)
            assert len(gd.windows) >= 5 and len(gd.rwindows) >= 5
            split = [be.to_numpy(x) for x in be.softmax_logits_backward(g, pi, gpi, 0.7, q, k)]
            for bins_, ptr, wins in ((gd.bins_out, g.row_ptr, gd.windows), (gd.bins_in, g.rev_ptr, gd.rwindows)):
                runs = ops_backward.window_runs(be, gd, bins_, ptr, wins)
                assert ops_backward.window_runs(be, gd, bins_, ptr, wins) is runs  # cached
                seg = binned_segments(ptr, be.thread_degree_max)[0]
                place = np.empty(g.num_nodes, np.int64)
                place[seg[g.num_nodes + 1:]] = np.arange(g.num_nodes)
                ns, nm = bins_.n_small, bins_.n_mid
                unit = place if bins_.serial else np.where(
                    place < ns, place // 64, np.where(place < ns + nm, -(-ns // 64) + (place - ns) // 2,
                                                      -(-ns // 64) + -(-nm // 2) + place - ns - nm))
                merged = 0
                for w, wr in zip(wins, runs):
                    assert 1 <= len(wr) <= 16
                    starts = [a for a, _ in wr]
                    assert starts == sorted(starts) and all(a + c <= b for (a, c), (b, _) in zip(wr, wr[1:]))
                    covered = np.zeros(unit.max() + 1, bool)
                    for a, c in wr:
                        covered[a:a + c] = True
                    assert covered[unit[w.n0:w.n1]].all()
                    units = np.unique(unit[w.n0:w.n1])
                    merged += int(np.count_nonzero(np.diff(units) > 1)) + 1 > 16
                if bins == "cpu" and bins_ is gd.bins_out:  # a run per degree class: 21 > 16, merged
                    assert bins_.serial and merged == len(wins)
    finally:
        be._degree_bins = old
    for name, a, b in zip(("grad_q", "grad_k", "grad_logits"), split, whole):
        assert a.tobytes() == b.tobytes(), name
    ref = np_backend.softmax_logits_backward(g0, pi, gpi, 0.7, q, k)
    for name, a, b in zip(("grad_q", "grad_k", "grad_logits"), split, ref):
        assert_parity(a, b, name)
