"""Every NumPy-backend op against an independent float64 formula written with plain loops
(docs/definitions.md §2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from graphs import degree_graph
from hypothesis import strategies as st
from parity import assert_parity

from energetic_wgpu import Graph, get_backend
from energetic_wgpu.backends import METRIC_NAMES
from energetic_wgpu.backends.numpy_backend import NumpyBackend

TOPK = 4
# one graph with segments of every degree of the test matrix (and a sink in the middle)
DEGREES = [0, 1, TOPK, TOPK + 1, 63, 64, 65, 1000, 0, 2, 3, 1, 7, 0, 5, 1]
BATCHES = [0, 1, 2, 31, 32, 33, 64, 65]


def mixed_graph(seed: int = 0) -> Graph:
    return degree_graph(DEGREES, seed, duplicates=3)


G = mixed_graph()


# ------------------------------------------------------------------ reference formulas


def segments(g):
    return [list(range(int(g.row_ptr[j]), int(g.row_ptr[j + 1]))) for j in range(g.num_nodes)]


def ref_logits(g, q, k, bias):
    out = np.zeros(g.num_edges)
    for j, seg in enumerate(segments(g)):
        for e in seg:
            t = int(g.col_idx[e])
            out[e] = sum(float(q[j, c]) * float(k[t, c]) for c in range(q.shape[1])) + float(bias[e])
    return out


def ref_topk(g, values, k):
    kept = np.zeros(g.num_edges, dtype=bool)
    for seg in segments(g):
        if k == 0 or len(seg) <= k:
            kept[seg] = True
        else:
            best = sorted(seg, key=lambda e: (-float(values[e]), e))[:k]
            kept[best] = True
    return kept


def ref_softmax(g, logits, tau=1.0, k=0):
    z = np.asarray(logits, dtype=np.float64) / tau
    kept = ref_topk(g, z, k)
    pi = np.zeros(g.num_edges)
    for seg in segments(g):
        ks = [e for e in seg if kept[e]]
        if not ks:
            continue
        m = max(z[e] for e in ks)
        s = sum(math.exp(z[e] - m) for e in ks)
        for e in ks:
            pi[e] = math.exp(z[e] - m) / s
    return pi


def ref_flow(g, energies, pi, alpha=1.0, active=None):
    energies = np.asarray(energies, dtype=np.float64)
    act = np.ones(energies.shape, bool) if active is None else active
    flow = np.zeros((energies.shape[0], g.num_edges))
    for j, seg in enumerate(segments(g)):
        for e in seg:
            flow[:, e] = alpha * act[:, j] * energies[:, j] * float(pi[e])
    return flow


def ref_scatter(g, energies, pi, alpha=1.0, active=None, retain_sinks=False):
    energies = np.asarray(energies, dtype=np.float64)
    flow = ref_flow(g, energies, pi, alpha, active)
    nxt = np.zeros(energies.shape)
    for e in range(g.num_edges):
        nxt[:, int(g.col_idx[e])] += flow[:, e]
    if retain_sinks:
        for j in range(g.num_nodes):
            if g.row_ptr[j] == g.row_ptr[j + 1]:
                nxt[:, j] += energies[:, j]
    return nxt


def ref_metrics(g, energies, nxt, pi, alpha=1.0, active=None):
    b, n = energies.shape
    act = np.ones((b, n), bool) if active is None else active
    out = np.zeros(5)
    if b:
        out[0] = sum(float(np.sum(nxt[i], dtype=np.float64)) for i in range(b)) / b
        out[1] = sum(1 for i in range(b) for j in range(n) if act[i, j] and energies[i, j] != 0) / b
        src = g.src
        out[2] = sum(1 for i in range(b) for e in range(g.num_edges) if pi[e] > 0 and act[i, src[e]]) / b
        flow = ref_flow(g, energies, pi, alpha, active)
        out[3] = flow.max() if flow.size else 0.0
    ents = []
    for seg in segments(g):
        if seg:
            ents.append(-sum(float(pi[e]) * math.log(float(pi[e])) for e in seg if pi[e] > 0))
    out[4] = sum(ents) / len(ents) if ents else 0.0
    return out


def close(got, ref, tol, name="array"):
    assert_parity(got, ref, name, rtol=tol)


def rand_params(g, d=5, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((g.num_nodes, d)).astype(dtype)
    k = rng.standard_normal((g.num_nodes, d)).astype(dtype)
    bias = rng.standard_normal(g.num_edges).astype(dtype)
    return q, k, bias


# ------------------------------------------------------------------------ edge_logits


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-13)])
def test_edge_logits(dtype, tol):
    be = NumpyBackend(dtype)
    q, k, bias = rand_params(G, d=7, dtype=be.dtype)
    got = be.edge_logits(G, q, k, bias)
    assert got.dtype == be.dtype and got.shape == (G.num_edges,)
    close(got, ref_logits(G, q, k, bias), tol, "logits")


def test_edge_logits_empty_graph(np_backend):
    g = Graph.from_edges([], [], num_nodes=3)
    q = np.ones((3, 2), np.float32)
    assert np_backend.edge_logits(g, q, q, np.zeros(0, np.float32)).shape == (0,)


# ----------------------------------------------------------------------- segment_topk


@pytest.mark.parametrize("k", [0, 1, TOPK, TOPK + 1, 64, 2000])
def test_segment_topk_against_reference(np_backend, k):
    rng = np.random.default_rng(k)
    vals = rng.integers(-3, 4, size=G.num_edges).astype(np.float32)  # many ties
    kept = np_backend.segment_topk(G, vals, k)
    assert kept.dtype == np.bool_
    assert np.array_equal(kept, ref_topk(G, vals, k))
    for j, seg in enumerate(segments(G)):
        deg = len(seg)
        assert int(kept[seg].sum()) == (deg if k == 0 else min(k, deg)), (j, deg)


def test_segment_topk_ties_go_to_lower_edge_index(np_backend):
    g = Graph.from_edges([0] * 6 + [1] * 3, [0] * 9, num_nodes=3)
    vals = np.array([1, 2, 2, 2, 0, 2, 5, 5, 5], np.float32)
    assert np_backend.segment_topk(g, vals, 2).tolist() == [False, True, True, False, False, False, True, True, False]
    assert np_backend.segment_topk(g, vals, 3).tolist() == [False, True, True, True, False, False, True, True, True]
    all_tied = np_backend.segment_topk(g, np.zeros(9, np.float32), 1)
    assert all_tied.tolist() == [True] + [False] * 5 + [True, False, False]


# -------------------------------------------------------------------- segment_softmax


@pytest.mark.parametrize("top_k", [0, 1, TOPK, 64])
@pytest.mark.parametrize("tau", [1.0, 0.37, 3.0])
def test_segment_softmax_against_reference(np_backend, top_k, tau):
    rng = np.random.default_rng(7)
    logits = (3 * rng.standard_normal(G.num_edges)).astype(np.float32)
    pi = np_backend.segment_softmax(G, logits, tau=tau, top_k=top_k)
    assert pi.dtype == np.float32
    close(pi, ref_softmax(G, logits, tau, top_k), 1e-6, "pi")
    for seg in segments(G):
        if seg:
            s = float(np.sum(pi[seg], dtype=np.float64))
            assert abs(s - 1.0) < 1e-6, (len(seg), s)
            assert int((pi[seg] > 0).sum()) <= (len(seg) if top_k == 0 else min(top_k, len(seg)))
    assert (pi >= 0).all()


def test_segment_softmax_sums_to_one_on_1000_edge_segments(np_backend):
    g = Graph.from_edges(np.repeat([0, 1, 2], [1000, 999, 1001]), np.arange(3000) % 5, num_nodes=5)
    rng = np.random.default_rng(1)
    for scale in (0.01, 1.0, 10.0):
        logits = (scale * rng.standard_normal(g.num_edges)).astype(np.float32)
        pi = np_backend.segment_softmax(g, logits)
        for seg in segments(g)[:3]:
            assert abs(float(np.sum(pi[seg], dtype=np.float64)) - 1.0) < 1e-6


def test_segment_softmax_extreme_logits_no_nan(np_backend):
    rng = np.random.default_rng(3)
    logits = rng.choice(np.array([1e30, -1e30, 0.0, 1e29], np.float32), size=G.num_edges)
    for top_k in (0, TOPK):
        pi = np_backend.segment_softmax(G, logits, top_k=top_k)
        assert np.isfinite(pi).all()
        close(pi, ref_softmax(G, logits, 1.0, top_k), 1e-6, "pi")
    big = np.full(G.num_edges, np.finfo(np.float32).max, np.float32)
    big[::2] = -np.finfo(np.float32).max
    pi = np_backend.segment_softmax(G, big)
    assert np.isfinite(pi).all()
    for seg in segments(G):
        if seg:
            assert abs(float(pi[seg].sum()) - 1.0) < 1e-6


@pytest.mark.parametrize("tau", [1e-30, 1e-40, 1e-50, 1e-300])
def test_segment_softmax_tiny_tau(np_backend, tau):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal(G.num_edges).astype(np.float32)
    logits[5] = 0.0
    pi = np_backend.segment_softmax(G, logits, tau=tau)
    assert np.isfinite(pi).all()
    for seg in segments(G):
        if seg:
            assert abs(float(pi[seg].sum()) - 1.0) < 1e-6
            assert pi[seg[int(np.argmax(logits[seg]))]] > 0
    if tau >= 1e-30:  # z still finite in float32: the argmax takes everything
        close(pi, ref_softmax(G, logits, tau), 1e-6)


def test_segment_softmax_tau_scaling(np64):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal(G.num_edges)
    a = np64.segment_softmax(G, logits, tau=0.25, top_k=TOPK)
    b = np64.segment_softmax(G, logits * 4.0, tau=1.0, top_k=TOPK)
    close(a, b, 1e-14)
    # a higher temperature flattens every segment: entropy grows
    hot = np64.segment_softmax(G, logits, tau=10.0)
    cold = np64.segment_softmax(G, logits, tau=0.1)
    for seg in segments(G):
        if len(seg) > 1:
            h = -np.sum(hot[seg] * np.log(hot[seg]))
            c = -np.sum(np.where(cold[seg] > 0, cold[seg] * np.log(np.maximum(cold[seg], 1e-300)), 0))
            assert h > c


def test_segment_softmax_empty(np_backend):
    g = Graph.from_edges([], [], num_nodes=4)
    assert np_backend.segment_softmax(g, np.zeros(0, np.float32), top_k=2).shape == (0,)
    g0 = Graph.from_csr([0], np.zeros(0, np.int64))
    assert np_backend.segment_softmax(g0, np.zeros(0, np.float32)).shape == (0,)


# ---------------------------------------------------------------- energy_scatter, flow


def _energies(b, n, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    e = rng.random((b, n)).astype(dtype)
    if b and n > 2:
        e[:, 2] = 0.0
    return e


@pytest.mark.parametrize("b", BATCHES)
@pytest.mark.parametrize("retain_sinks", [False, True])
def test_energy_scatter_and_flow(np_backend, b, retain_sinks):
    rng = np.random.default_rng(b)
    pi = np_backend.segment_softmax(G, rng.standard_normal(G.num_edges).astype(np.float32), top_k=TOPK)
    en = _energies(b, G.num_nodes, b)
    active = rng.random((b, G.num_nodes)) < 0.7
    alpha = 0.85
    for act in (None, active):
        nxt = np_backend.energy_scatter(G, en, pi, alpha, act, retain_sinks)
        assert nxt.shape == (b, G.num_nodes) and nxt.dtype == np.float32
        close(nxt, ref_scatter(G, en, pi, alpha, act, retain_sinks), 1e-6, "next")
        flow = np_backend.edge_flow(G, en, pi, alpha, act)
        assert flow.shape == (b, G.num_edges) and flow.dtype == np.float32
        close(flow, ref_flow(G, en, pi, alpha, act), 1e-6, "flow")
        # conservation: sum(next[b]) = alpha * sum over active non-sink j of energies[b, j] (+ sinks kept)
        a = np.ones_like(active) if act is None else act
        nonsink = ~G.sink_mask
        for i in range(b):
            expected = alpha * float(np.sum(en[i] * a[i] * nonsink, dtype=np.float64))
            if retain_sinks:
                expected += float(np.sum(en[i] * G.sink_mask, dtype=np.float64))
            assert abs(float(np.sum(nxt[i], dtype=np.float64)) - expected) <= 1e-5 * max(1.0, expected)
    assert not np.shares_memory(nxt, en)


def test_energy_scatter_does_not_modify_inputs(np_backend):
    en = _energies(3, G.num_nodes, 0)
    pi = np_backend.segment_softmax(G, np.zeros(G.num_edges, np.float32))
    en0, pi0 = en.copy(), pi.copy()
    np_backend.energy_scatter(G, en, pi, 0.5, None, True)
    np_backend.energy_scatter_backward(G, en, pi, en, 0.5, None, True)
    assert np.array_equal(en, en0) and np.array_equal(pi, pi0)


def test_inactive_nodes_send_nothing(np_backend):
    pi = np_backend.segment_softmax(G, np.zeros(G.num_edges, np.float32))
    en = np.ones((2, G.num_nodes), np.float32)
    active = np.ones((2, G.num_nodes), bool)
    active[1] = False
    nxt = np_backend.energy_scatter(G, en, pi, 1.0, active)
    assert (nxt[1] == 0).all() and nxt[0].sum() > 0
    flow = np_backend.edge_flow(G, en, pi, 1.0, active)
    assert (flow[1] == 0).all()


# ------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("b", BATCHES)
def test_step_metrics_against_definitions(np_backend, b):
    rng = np.random.default_rng(100 + b)
    pi = np_backend.segment_softmax(G, rng.standard_normal(G.num_edges).astype(np.float32), top_k=TOPK)
    en = _energies(b, G.num_nodes, b)
    active = rng.random((b, G.num_nodes)) < 0.6
    for act in (None, active):
        nxt = np_backend.energy_scatter(G, en, pi, 0.9, act)
        m = np_backend.step_metrics(G, en, nxt, pi, 0.9, act)
        assert m.shape == (len(METRIC_NAMES),)
        ref = ref_metrics(G, en, nxt, pi, 0.9, act)
        for i, name in enumerate(METRIC_NAMES):
            assert abs(float(m[i]) - ref[i]) <= 1e-5 * max(1.0, abs(ref[i])), (name, m[i], ref[i])
    if b == 0:
        assert m[:4].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_step_metrics_hand_values(np64):
    # node 0 -> {1, 2}, node 1 -> {2}, node 2 sink
    g = Graph.from_edges([0, 0, 1], [1, 2, 2], num_nodes=3)
    pi = np.array([0.25, 0.75, 1.0])
    en = np.array([[2.0, 0.0, 5.0], [1.0, 3.0, 0.0]])
    active = np.array([[True, True, True], [False, True, True]])
    nxt = np64.energy_scatter(g, en, pi, 0.5, active)
    assert nxt.tolist() == [[0.0, 0.25, 0.75], [0.0, 0.0, 1.5]]
    m = np64.step_metrics(g, en, nxt, pi, 0.5, active)
    h0 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected = [(1.0 + 1.5) / 2, (2 + 1) / 2, (3 + 1) / 2, 1.5, (h0 + 0.0) / 2]
    assert np.allclose(m, expected, rtol=0, atol=1e-15)


def test_avg_entropy_zero_log_zero(np64):
    g = Graph.from_edges([0, 0, 0, 1], [1, 1, 1, 0], num_nodes=3)
    pi = np.array([1.0, 0.0, 0.0, 1.0])
    en = np.ones((1, 3))
    m = np64.step_metrics(g, en, np64.energy_scatter(g, en, pi), pi)
    assert np.isfinite(m).all() and m[4] == 0.0
    assert m[2] == 2.0  # only pi > 0 edges count
    g_empty = Graph.from_edges([], [], num_nodes=2)
    m = np64.step_metrics(g_empty, en[:, :2], np.zeros((1, 2)), np.zeros(0))
    assert m.tolist() == [0.0, 2.0, 0.0, 0.0, 0.0]


# ----------------------------------------------------------------- dtype behaviour


def test_float32_vs_float64_dtypes():
    be32 = get_backend("numpy")
    be64 = get_backend("numpy", dtype="float64")
    assert be32.dtype == np.float32 and be64.dtype == np.float64
    q, k, bias = rand_params(G, dtype=np.float64)
    en = _energies(3, G.num_nodes, 1, np.float64)
    res = {}
    for be in (be32, be64):
        args = [be.asarray(x) for x in (q, k, bias)]
        assert all(a.dtype == be.dtype for a in args)
        lg = be.edge_logits(G, *args)
        pi = be.segment_softmax(G, lg, 0.5, TOPK)
        e = be.asarray(en)
        nxt = be.energy_scatter(G, e, pi, 0.9, None, True)
        res[be.dtype] = (lg, pi, nxt)
        for x in res[be.dtype]:
            assert x.dtype == be.dtype
    ref_pi = ref_softmax(G, ref_logits(G, q, k, bias), 0.5, TOPK)
    close(res[np.dtype(np.float64)][1], ref_pi, 1e-13)
    close(res[np.dtype(np.float64)][2], ref_scatter(G, en, ref_pi, 0.9, None, True), 1e-12)
    close(res[np.dtype(np.float32)][1], ref_pi, 1e-5)
    assert be32.asarray(np.array([1, 2])).dtype == np.int32
    assert be32.asarray(np.array([True])).dtype == np.bool_
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        NumpyBackend("float16")
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        NumpyBackend("notatype")


# --------------------------------------------------------------------- hypothesis


@st.composite
def graph_case(draw):
    n = draw(st.integers(1, 9))
    e = draw(st.integers(0, 30))
    src = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    g = Graph.from_edges(src, dst, num_nodes=n)
    b = draw(st.integers(0, 4))
    seed = draw(st.integers(0, 2**16))
    top_k = draw(st.integers(0, 4))
    tau = draw(st.sampled_from([1.0, 0.5, 2.5]))
    retain = draw(st.booleans())
    return g, b, seed, top_k, tau, retain


@given(graph_case())
def test_hypothesis_all_ops_float64(case):
    g, b, seed, top_k, tau, retain = case
    be = NumpyBackend("float64")
    rng = np.random.default_rng(seed)
    q, k, bias = rand_params(g, d=3, seed=seed, dtype=np.float64)
    bias = np.round(bias, 1)  # ties happen
    en = rng.random((b, g.num_nodes))
    active = rng.random((b, g.num_nodes)) < 0.7
    lg = be.edge_logits(g, q, k, bias)
    close(lg, ref_logits(g, q, k, bias), 1e-13, "logits")
    assert np.array_equal(be.segment_topk(g, lg, top_k), ref_topk(g, lg, top_k))
    pi = be.segment_softmax(g, lg, tau, top_k)
    close(pi, ref_softmax(g, lg, tau, top_k), 1e-13, "pi")
    nxt = be.energy_scatter(g, en, pi, 0.8, active, retain)
    close(nxt, ref_scatter(g, en, pi, 0.8, active, retain), 1e-13, "next")
    close(be.edge_flow(g, en, pi, 0.8, active), ref_flow(g, en, pi, 0.8, active), 1e-13, "flow")
    close(be.step_metrics(g, en, nxt, pi, 0.8, active), ref_metrics(g, en, nxt, pi, 0.8, active), 1e-12, "metrics")


@st.composite
def topk_case(draw):
    degrees = draw(st.lists(st.integers(0, 140), min_size=1, max_size=8))
    k = draw(st.sampled_from([0, 1, 2, 3, 4, 7, 8, 9, 16, 17, 33, 64, 65, 100]))
    levels = draw(st.integers(1, 6))  # few distinct values: many ties
    seed = draw(st.integers(0, 2**16))
    return degrees, k, levels, seed


@given(topk_case())
def test_hypothesis_segment_topk_and_softmax_all_degree_classes(case):
    degrees, k, levels, seed = case
    n = len(degrees)
    g = Graph.from_edges(np.repeat(np.arange(n), degrees), np.zeros(sum(degrees), np.int64), num_nodes=n)
    rng = np.random.default_rng(seed)
    vals = rng.integers(0, levels, size=g.num_edges).astype(np.float32)
    for be in (NumpyBackend("float32"), NumpyBackend("float64")):
        v = vals.astype(be.dtype)
        kept = be.segment_topk(g, v, k)
        assert np.array_equal(kept, ref_topk(g, v, k))
        pi = be.segment_softmax(g, v, 0.5, k)
        close(pi, ref_softmax(g, v, 0.5, k), 1e-6 if be.dtype == np.float32 else 1e-13, "pi")
