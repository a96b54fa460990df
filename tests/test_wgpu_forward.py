"""Forward-op parity of the wgpu backend against an independent float64 NumPy reference
(and the NumPy backend when it is importable), on every adapter."""

from __future__ import annotations

import numpy as np
import pytest

from graphs import degree_graph
from parity import assert_parity

from energetic_wgpu.graph import Graph

pytest.importorskip("energetic_wgpu.backends.webgpu", reason="wgpu backend not importable")

F32_MAX = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------- float64 reference


def ref_logits(g, q, k, bias):
    return np.einsum("ed,ed->e", q[g.src].astype(np.float64), k[g.col_idx].astype(np.float64)) + bias


def ref_topk(g, values, k):
    e = g.num_edges
    if k == 0:
        return np.ones(e, dtype=bool)
    edge = np.arange(e)
    order = np.lexsort((edge, -np.asarray(values, np.float64), g.src))
    rank = np.empty(e, dtype=np.int64)
    rank[order] = edge - g.row_ptr[g.src[order]]
    return rank < k


def ref_z(logits, tau):
    with np.errstate(over="ignore"):
        z = np.asarray(logits, np.float32) / np.float32(tau)
    return np.clip(z, -F32_MAX, F32_MAX).astype(np.float64)


def ref_softmax(g, logits, tau, top_k):
    z = ref_z(logits, tau)
    kept = ref_topk(g, z, top_k)
    m = np.full(g.num_nodes, -np.inf)
    np.maximum.at(m, g.src[kept], z[kept])
    ex = np.where(kept, np.exp(z - m[g.src]), 0.0)
    s = np.zeros(g.num_nodes)
    np.add.at(s, g.src, ex)
    return np.where(kept, ex / np.where(s[g.src] > 0, s[g.src], 1.0), 0.0)


def ref_x(energies, alpha, active):
    x = energies.astype(np.float64) * alpha
    return x if active is None else np.where(active, x, 0.0)


def ref_scatter(g, energies, pi, alpha, active, retain):
    x = ref_x(energies, alpha, active)
    out = np.zeros(energies.shape)
    np.add.at(out.T, g.col_idx, (x[:, g.src] * pi).T)
    if retain:
        out += np.where(g.sink_mask, energies, 0.0)
    return out


def ref_flow(g, energies, pi, alpha, active):
    return ref_x(energies, alpha, active)[:, g.src] * pi


def ref_metrics(g, energies, nxt, pi, alpha, active):
    b = energies.shape[0]
    act = np.ones(energies.shape, bool) if active is None else active
    out = np.zeros(5)
    if b:
        out[0] = nxt.astype(np.float64).sum(axis=1).mean()
        out[1] = (act & (energies != 0)).sum(axis=1).mean()
        out[2] = (act[:, g.src] & (pi > 0)).sum(axis=1).mean()
        if g.num_edges:
            out[3] = ref_flow(g, energies, pi, alpha, active).max()
    nonempty = g.out_degree > 0
    if nonempty.any():
        p = pi.astype(np.float64)
        h = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        ent = np.zeros(g.num_nodes)
        np.add.at(ent, g.src, h)
        out[4] = ent[nonempty].mean()
    return out


# --------------------------------------------------------------------------- graphs


DEGREES = [0, 1, 4, 5, 63, 64, 65, 1000, 0, 2, 3, 257, 256, 7]


def tie_logits(rng, e, scale=1.0):
    """Logits with many exact ties (rounded) and both signs."""
    return (np.round(rng.standard_normal(e) * 4) / 4 * scale).astype(np.float32)


# --------------------------------------------------------------------------- tests


def test_edge_logits(gpu_backend):
    rng = np.random.default_rng(1)
    g = degree_graph(DEGREES)
    for d in (1, 3, 16):
        q = rng.standard_normal((g.num_nodes, d)).astype(np.float32)
        k = rng.standard_normal((g.num_nodes, d)).astype(np.float32)
        bias = rng.standard_normal(g.num_edges).astype(np.float32)
        assert_parity(gpu_backend.to_numpy(gpu_backend.edge_logits(g, q, k, bias)), ref_logits(g, q, k, bias))


@pytest.mark.parametrize("top_k", [0, 1, 4, 5, 64, 300])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_segment_softmax_and_topk(gpu_backend, top_k, tau):
    rng = np.random.default_rng(top_k)
    g = degree_graph(DEGREES, seed=top_k)
    logits = tie_logits(rng, g.num_edges)
    pi = gpu_backend.to_numpy(gpu_backend.segment_softmax(g, logits, tau, top_k))
    ref = ref_softmax(g, logits, tau, top_k)
    assert_parity(pi, ref)
    assert np.all(np.isfinite(pi)) and np.all(pi >= 0)
    # kept edges exactly as the reference (ties to the lower edge index)
    mask = gpu_backend.to_numpy(gpu_backend.segment_topk(g, logits / np.float32(tau), top_k))
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, ref_topk(g, ref_z(logits, tau), top_k))
    np.testing.assert_array_equal(pi > 0, ref > 0)
    # sums to 1 within 1e-6 on every non-empty segment; at most top_k non-zero
    sums = np.zeros(g.num_nodes)
    np.add.at(sums, g.src, pi.astype(np.float64))
    nonempty = g.out_degree > 0
    assert np.max(np.abs(sums[nonempty] - 1.0)) < 1e-6
    counts = np.bincount(g.src, weights=(pi > 0), minlength=g.num_nodes)
    expect = g.out_degree if top_k == 0 else np.minimum(g.out_degree, top_k)
    np.testing.assert_array_equal(counts, expect)


def test_segment_topk_all_ties_goes_to_lower_index(gpu_backend):
    g = degree_graph([10, 300, 3, 0])
    vals = np.zeros(g.num_edges, np.float32)
    mask = gpu_backend.to_numpy(gpu_backend.segment_topk(g, vals, 4))
    expect = (np.arange(g.num_edges) - g.row_ptr[g.src]) < 4
    np.testing.assert_array_equal(mask, expect)


def test_segment_topk_raw_values(gpu_backend):
    rng = np.random.default_rng(9)
    g = degree_graph(DEGREES, seed=9)
    vals = tie_logits(rng, g.num_edges, 100.0)
    for k in (0, 1, 3, 64, 65):
        np.testing.assert_array_equal(gpu_backend.to_numpy(gpu_backend.segment_topk(g, vals, k)), ref_topk(g, vals, k))


def test_segment_softmax_extreme_values(gpu_backend):
    g = degree_graph([3, 4, 300, 2])
    rng = np.random.default_rng(4)
    logits = rng.choice(np.array([3e38, -3e38, 0.0, 1e30, -0.0, 80.0], np.float32), size=g.num_edges)
    for tau, k in ((1.0, 0), (1e-3, 0), (1e-3, 2), (1e6, 3)):
        pi = gpu_backend.to_numpy(gpu_backend.segment_softmax(g, logits, tau, k))
        assert np.all(np.isfinite(pi))
        assert_parity(pi, ref_softmax(g, logits, tau, k))


def test_segment_softmax_empty_graph(gpu_backend):
    g = Graph.from_csr([0, 0, 0], np.zeros(0, np.int64))
    pi = gpu_backend.to_numpy(gpu_backend.segment_softmax(g, np.zeros(0, np.float32), 1.0, 2))
    assert pi.shape == (0,)


@pytest.mark.parametrize("batch", [0, 1, 2, 31, 32, 33, 64, 65])
def test_scatter_flow_metrics_batches(gpu_backend, batch):
    rng = np.random.default_rng(batch)
    g = degree_graph([0, 1, 4, 5, 63, 64, 65, 2, 0, 300, 3], seed=batch, hub_in=290)
    logits = tie_logits(rng, g.num_edges)
    pi = ref_softmax(g, logits, 1.0, 4).astype(np.float32)
    energies = rng.standard_normal((batch, g.num_nodes)).astype(np.float32)
    energies[:, ::5] = 0.0
    active = rng.random((batch, g.num_nodes)) > 0.3
    for act in (None, active):
        for retain in (False, True):
            alpha = 0.7
            nxt = gpu_backend.energy_scatter(g, energies, pi, alpha, act, retain)
            ref_next = ref_scatter(g, energies, pi, alpha, act, retain)
            assert_parity(gpu_backend.to_numpy(nxt), ref_next)
        flow = gpu_backend.edge_flow(g, energies, pi, alpha, act)
        assert_parity(gpu_backend.to_numpy(flow), ref_flow(g, energies, pi, alpha, act))
        met = gpu_backend.to_numpy(gpu_backend.step_metrics(g, energies, nxt, pi, alpha, act))
        assert_parity(met, ref_metrics(g, energies, gpu_backend.to_numpy(nxt), pi, alpha, act))


def test_energy_conservation(gpu_backend):
    rng = np.random.default_rng(11)
    g = degree_graph(DEGREES, seed=11)
    pi = gpu_backend.segment_softmax(g, tie_logits(rng, g.num_edges), 1.0, 5)
    energies = rng.random((3, g.num_nodes)).astype(np.float32)
    active = rng.random((3, g.num_nodes)) > 0.5
    nxt = gpu_backend.to_numpy(gpu_backend.energy_scatter(g, energies, pi, 0.8, active))
    expect = 0.8 * np.where(active & ~g.sink_mask, energies, 0).sum(axis=1)
    np.testing.assert_allclose(nxt.sum(axis=1), expect, rtol=1e-5)


def test_one_dimensional_energies(gpu_backend):
    rng = np.random.default_rng(12)
    g = degree_graph([3, 2, 0, 5])
    pi = ref_softmax(g, tie_logits(rng, g.num_edges), 1.0, 0).astype(np.float32)
    e = rng.standard_normal(g.num_nodes).astype(np.float32)
    out = gpu_backend.to_numpy(gpu_backend.energy_scatter(g, e, pi, 1.0, None, True))
    assert out.shape == (g.num_nodes,)
    assert_parity(out, ref_scatter(g, e[None], pi, 1.0, None, True)[0])
    assert_parity(gpu_backend.to_numpy(gpu_backend.edge_flow(g, e, pi)), ref_flow(g, e[None], pi, 1.0, None)[0])


def test_negative_alpha_max_flow(gpu_backend):
    rng = np.random.default_rng(13)
    g = degree_graph([3, 2, 5, 0])
    pi = ref_softmax(g, tie_logits(rng, g.num_edges), 1.0, 0).astype(np.float32)
    e = (rng.random((2, g.num_nodes)) + 0.5).astype(np.float32)
    nxt = ref_scatter(g, e, pi, -1.0, None, False).astype(np.float32)
    met = gpu_backend.to_numpy(gpu_backend.step_metrics(g, e, nxt, pi, -1.0, None))
    ref = ref_metrics(g, e, nxt, pi, -1.0, None)
    assert ref[3] < 0
    assert_parity(met, ref)


def test_add_and_sum_squares(gpu_backend):
    rng = np.random.default_rng(14)
    a = rng.standard_normal((37, 5)).astype(np.float32)
    b = rng.standard_normal((37, 5)).astype(np.float32)
    assert_parity(gpu_backend.to_numpy(gpu_backend.add(a, b)), a.astype(np.float64) + b)
    big = rng.standard_normal(100_003).astype(np.float32)
    arrays = [a, b, big, np.zeros(0, np.float32)]
    ref = sum(float(np.sum(x.astype(np.float64) ** 2)) for x in arrays)
    got = gpu_backend.to_numpy(gpu_backend.sum_squares(arrays))
    assert got.shape == (1,)
    assert abs(got[0] - ref) <= 1e-5 * ref
    assert gpu_backend.to_numpy(gpu_backend.sum_squares([])).tolist() == [0.0]


def test_huge_segment_and_huge_in_degree(gpu_backend):
    """One 100,000-edge segment whose edges all go to node 0 (100,000 in-degree)."""
    rng = np.random.default_rng(15)
    degrees = [2, 100_000, 3, 0, 5]
    g = degree_graph(degrees, seed=15, hub_in=100_000)
    assert g.max_out_degree == 100_000 and g.in_degree[0] >= 100_000
    logits = tie_logits(rng, g.num_edges)
    for k in (0, 4, 50):
        pi = gpu_backend.to_numpy(gpu_backend.segment_softmax(g, logits, 0.5, k))
        ref = ref_softmax(g, logits, 0.5, k)
        assert_parity(pi, ref)
        np.testing.assert_array_equal(pi > 0, ref > 0)
        seg = pi[g.row_ptr[1]:g.row_ptr[2]].astype(np.float64)
        assert abs(seg.sum() - 1.0) < 1e-5
        if k:
            assert np.count_nonzero(seg) == k
    pi = ref_softmax(g, logits, 1.0, 0).astype(np.float32)
    energies = rng.standard_normal((2, g.num_nodes)).astype(np.float32)
    nxt = gpu_backend.energy_scatter(g, energies, pi, 1.0, None, True)
    assert_parity(gpu_backend.to_numpy(nxt), ref_scatter(g, energies, pi, 1.0, None, True))
    met = gpu_backend.to_numpy(gpu_backend.step_metrics(g, energies, nxt, pi, 1.0, None))
    assert_parity(met, ref_metrics(g, energies, gpu_backend.to_numpy(nxt), pi, 1.0, None))


def test_bit_identical_runs(gpu_backend):
    rng = np.random.default_rng(16)
    g = degree_graph(DEGREES + [5000], seed=16, hub_in=3000)
    logits = rng.standard_normal(g.num_edges).astype(np.float32)
    energies = rng.standard_normal((4, g.num_nodes)).astype(np.float32)

    def run():
        pi = gpu_backend.segment_softmax(g, logits, 0.7, 5)
        nxt = gpu_backend.energy_scatter(g, energies, pi, 0.9)
        met = gpu_backend.step_metrics(g, energies, nxt, pi, 0.9)
        return [gpu_backend.to_numpy(x).tobytes() for x in (pi, nxt, met)]

    assert run() == run()


def test_parity_with_numpy_backend(gpu_backend):
    nbmod = pytest.importorskip("energetic_wgpu.backends.numpy_backend")
    nb = nbmod.NumpyBackend()
    rng = np.random.default_rng(17)
    g = degree_graph(DEGREES, seed=17, hub_in=500)
    n, e = g.num_nodes, g.num_edges
    q = rng.standard_normal((n, 8)).astype(np.float32)
    k = rng.standard_normal((n, 8)).astype(np.float32)
    bias = rng.standard_normal(e).astype(np.float32)
    energies = rng.standard_normal((3, n)).astype(np.float32)
    active = rng.random((3, n)) > 0.2
    lr = nb.edge_logits(g, q, k, bias)
    assert_parity(gpu_backend.to_numpy(gpu_backend.edge_logits(g, q, k, bias)), lr)
    pr = nb.segment_softmax(g, lr, 0.8, 4)
    assert_parity(gpu_backend.to_numpy(gpu_backend.segment_softmax(g, lr, 0.8, 4)), pr)
    nr = nb.energy_scatter(g, energies, pr, 0.9, active, True)
    assert_parity(gpu_backend.to_numpy(gpu_backend.energy_scatter(g, energies, pr, 0.9, active, True)), nr)
    assert_parity(gpu_backend.to_numpy(gpu_backend.edge_flow(g, energies, pr, 0.9, active)), nb.edge_flow(g, energies, pr, 0.9, active))
    assert_parity(
        gpu_backend.to_numpy(gpu_backend.step_metrics(g, energies, nr, pr, 0.9, active)),
        nb.step_metrics(g, energies, nr, pr, 0.9, active),
    )


@pytest.mark.parametrize("top_k", [0, 3])
def test_one_pass_softmax_adversarial_orders_sum_to_one(gpu_backend, top_k):
    """The one-pass (online max/sum) small-segment softmax rescales its running sum whenever a
    new maximum appears: ascending logits are its worst case. Every segment of degree 1..16 (the
    one-pass range) and 17..40 (the multi-pass range) must still sum to 1 within 1e-6 and match
    NumPy."""
    from energetic_wgpu.backends.numpy_backend import NumpyBackend

    degrees = list(range(1, 41))
    rp = np.zeros(len(degrees) + 1, dtype=np.int64)
    np.cumsum(degrees, out=rp[1:])
    n = len(degrees)
    g = Graph.from_csr(rp, np.arange(rp[-1]) % n, num_nodes=n)
    rng = np.random.default_rng(7)
    parts = []
    for i, d in enumerate(degrees):
        kind = i % 3
        if kind == 0:
            parts.append(np.linspace(-30, 30, d))  # strictly ascending: a new max every edge
        elif kind == 1:
            parts.append(np.sort(rng.standard_normal(d) * 8))
        else:
            parts.append(np.linspace(0, 1e-3, d))  # nearly equal
    logits = np.concatenate(parts).astype(np.float32)
    pi = gpu_backend.to_numpy(gpu_backend.segment_softmax(g, gpu_backend.asarray(logits), 0.9, top_k))
    ref = NumpyBackend().segment_softmax(g, logits, 0.9, top_k)
    sums = np.add.reduceat(pi.astype(np.float64), rp[:-1])
    assert np.max(np.abs(sums - 1.0)) < 1e-6, np.max(np.abs(sums - 1.0))
    assert np.max(np.abs(pi - ref)) <= 1e-5
