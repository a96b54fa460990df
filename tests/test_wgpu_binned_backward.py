"""The degree-binned softmax + logits backward (``softmax_logits_backward``, segment_backward.wgsl)
and the sum-of-squares partials it hands to the optimizer.

Degrees cross every bin boundary (thread per node <= 16 < 32-lane group <= 256 < workgroup per
hub), in both directions (out-segments and in-ranges), and dims cross the lane count (1, 33,
70): parity with NumPy, bit-identical reruns, exactly two dispatches whatever the degrees.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import use_bins
from graphs import degree_graph
from parity import assert_parity

from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.backends.webgpu.graph_data import binned_segments
from energetic_wgpu.backends.webgpu.kernels import SMALL_DEGREE_MAX, THREAD_DEGREE_MAX
from energetic_wgpu.graph import Graph

NP = NumpyBackend()
# out-degrees around both bin boundaries; big_into=3 gives those 3 nodes in-degrees > 256
DEGREES = [0, 1, THREAD_DEGREE_MAX, THREAD_DEGREE_MAX + 1, 32, 33, SMALL_DEGREE_MAX, SMALL_DEGREE_MAX + 1, 700, 3, 0]
GRAPH = degree_graph(DEGREES, 7, big_into=3, duplicates=2)


def _inputs(graph, dim, top_k=0, seed=0):
    rng = np.random.default_rng(seed)
    n, e = graph.num_nodes, graph.num_edges
    pi = NP.segment_softmax(graph, (2 * rng.standard_normal(e)).astype(np.float32), 0.7, top_k)
    return (pi, rng.standard_normal(e).astype(np.float32), rng.standard_normal((n, dim)).astype(np.float32),
            rng.standard_normal((n, dim)).astype(np.float32))


def _run(be, graph, x, tau):
    pi, gpi, q, k = (be.asarray(a) for a in x)
    return be.softmax_logits_backward(graph, pi, gpi, tau, q, k)


def test_bins_cover_every_node_once():
    seg, n_small, n_mid, n_hub = binned_segments(GRAPH.row_ptr)
    n = GRAPH.num_nodes
    assert np.array_equal(seg[: n + 1], GRAPH.row_ptr)
    nodes = seg[n + 1:]
    assert sorted(nodes.tolist()) == list(range(n))
    deg = GRAPH.out_degree[nodes]
    assert (n_small, n_mid, n_hub) == (int(np.sum(deg <= 16)), int(np.sum((deg > 16) & (deg <= 256))),
                                       int(np.sum(deg > 256)))
    assert np.all(deg[:n_small] <= 16) and np.all(deg[n_small:n_small + n_mid] <= 256)
    assert np.all(deg[n_small + n_mid:] > 256) and n_hub >= 2 and n_mid >= 4
    assert int(np.sum(GRAPH.in_degree > SMALL_DEGREE_MAX)) >= 1  # an in-hub for grad_k


@pytest.mark.parametrize("bins", ["gpu", "cpu"])
@pytest.mark.parametrize("dim,top_k,tau", [(1, 0, 1.0), (5, 4, 0.7), (33, 0, 0.3), (70, 2, 1.5)])
def test_parity_and_bit_identical(gpu_backend, dim, top_k, tau, bins):
    be = use_bins(gpu_backend, bins)
    x = _inputs(GRAPH, dim, top_k, seed=dim)
    ref = NP.edge_logits_backward(GRAPH, x[2], x[3], NP.segment_softmax_backward(GRAPH, x[0], x[1], tau))
    d0 = be.counters()["dispatches"]
    got = _run(be, GRAPH, x, tau)
    assert be.counters()["dispatches"] - d0 == 2
    for name, g, r in zip(("grad_q", "grad_k", "grad_bias"), got, ref):
        assert_parity(be.to_numpy(g), r, name)
    again = _run(be, GRAPH, x, tau)
    for a, b in zip(got, again):
        assert be.to_numpy(a).tobytes() == be.to_numpy(b).tobytes()
    # the same values as the two separate ops
    sep = be.edge_logits_backward(GRAPH, be.asarray(x[2]), be.asarray(x[3]),
                                  be.segment_softmax_backward(GRAPH, be.asarray(x[0]), be.asarray(x[1]), tau))
    for name, g, r in zip(("grad_q", "grad_k", "grad_bias"), got, sep):
        assert_parity(be.to_numpy(g), be.to_numpy(r), name)


def _serial_graph():
    """Every out- and in-degree <= 32 (17..32 included): with the "cpu" bins both directions are
    all thread bin (the barrier-free segment_bwd_serial, one partial per node)."""
    degrees = [0, 1, 2, THREAD_DEGREE_MAX, THREAD_DEGREE_MAX + 1, 31, 32, 5, 0, 32, 9] * 6
    g = degree_graph(degrees, 11)
    assert g.out_degree.max() == 32 and 17 <= g.in_degree.max() <= 32, g.in_degree.max()
    return g


@pytest.mark.parametrize("bins,threads", [("gpu", None), ("cpu", None), ("cpu", 7)])
@pytest.mark.parametrize("dim", [1, 6, 33])
def test_serial_dispatch_parity_and_partials(gpu_backend, bins, threads, dim, monkeypatch):
    """Degrees 0..32 in both directions: the "cpu" bins run segment_bwd_serial twice (thread and
    partial per node; with ``threads`` = 7, 7 invocations taking 10 nodes each, as a graph of
    millions of nodes does), the "gpu" bins segment_bwd (17..32 in the group bin); all match
    NumPy, rerun bit-identically and leave partials that sum to the gradients' sum of squares."""
    from energetic_wgpu.backends.webgpu import graph_data, sumsq

    if threads:
        monkeypatch.setattr(graph_data, "SERIAL_THREADS", threads)
        monkeypatch.setattr(graph_data, "SERIAL_NODES_PER_THREAD", 16)
    be = use_bins(gpu_backend, bins)
    g = _serial_graph()
    gd = be.graph_data(g)
    assert gd.bins_out.serial == gd.bins_in.serial == (bins == "cpu")
    x = _inputs(g, dim, 3, seed=dim)
    ref = NP.edge_logits_backward(g, x[2], x[3], NP.segment_softmax_backward(g, x[0], x[1], 0.8))
    d0 = be.counters()["dispatches"]
    got = _run(be, g, x, 0.8)
    assert be.counters()["dispatches"] - d0 == 2
    for name, a, r in zip(("grad_q", "grad_k", "grad_bias"), got, ref):
        assert_parity(be.to_numpy(a), r, name)
    again = _run(be, g, x, 0.8)
    assert all(be.to_numpy(a).tobytes() == be.to_numpy(b).tobytes() for a, b in zip(got, again))
    partials, count = sumsq.partials_for(be, list(again))
    expect_count = gd.bins_out.workgroups + gd.bins_in.workgroups
    if bins == "cpu":
        expect_count = 2 * (threads or g.num_nodes)
        assert gd.bins_out.serial_threads == (threads or g.num_nodes)
    assert count == expect_count
    ref_sq = sum(float(np.sum(be.to_numpy(a).astype(np.float64) ** 2)) for a in again)
    total = float(np.sum(be.to_numpy(partials)[:count].astype(np.float64)))
    assert abs(total - ref_sq) <= 1e-5 * max(1.0, ref_sq)


def test_recorded_partials_sum_to_the_squares(gpu_backend):
    """The partials the two dispatches write sum to the gradients' sum of squares, and the
    optimizer uses them (one dispatch fewer) unless a gradient was written since."""
    from energetic_wgpu.backends.webgpu import sumsq

    be = gpu_backend
    x = _inputs(GRAPH, 6, seed=1)
    grads = _run(be, GRAPH, x, 0.9)
    rec = sumsq.partials_for(be, list(grads))
    assert rec is not None
    partials, count = rec
    host = [be.to_numpy(g).astype(np.float64) for g in grads]
    ref = sum(float(np.sum(h ** 2)) for h in host)
    total = float(np.sum(be.to_numpy(partials)[:count].astype(np.float64)))
    assert abs(total - ref) <= 1e-5 * max(1.0, ref)
    d0 = be.counters()["dispatches"]
    norm_sq = float(be.to_numpy(be.sum_squares(list(grads)))[0])  # sum_squares uses them too
    assert be.counters()["dispatches"] - d0 == 1 and abs(norm_sq - ref) <= 1e-5 * max(1.0, ref)
    assert sumsq.partials_for(be, [grads[1], grads[0], grads[2]]) is None  # other order: not covered
    assert sumsq.partials_for(be, list(grads[:2])) is None
    be.write(grads[2], np.zeros(grads[2].shape, np.float32))  # a host write discards the record
    assert sumsq.partials_for(be, list(grads)) is None


def test_optimizer_norm_after_a_write_to_a_gradient(gpu_backend):
    """A gradient written after backward (as a data-parallel all-reduce does): the optimizer's
    norm is the norm of the written values, not of the backward's."""
    from energetic_wgpu import AdamW, GraphConfig, Router, RouterParams, build_lattice

    be = gpu_backend
    g = build_lattice(GraphConfig(layers=2, nodes_per_layer=16, local_neighbors=3, jump_neighbors=1, seed=2))
    r = Router(g, RouterParams.init(g, 4, seed=3), be)
    opt = AdamW(r, lr=0.01)
    rng = np.random.default_rng(4)
    lg = r.loss_and_grads(rng.random((2, g.num_nodes)).astype(np.float32),
                          rng.random((2, g.num_nodes)).astype(np.float32))
    norm_backward = float(be.to_numpy(opt.step(lg.grads))[0])
    assert abs(norm_backward - lg.grads.norm) <= 1e-5 * max(1.0, lg.grads.norm)
    lg = r.loss_and_grads(rng.random((2, g.num_nodes)).astype(np.float32),
                          rng.random((2, g.num_nodes)).astype(np.float32))
    ones = np.ones(lg.grads.bias.shape, np.float32)
    be.write(lg.grads.bias, ones)
    expect = np.sqrt(sum(float(np.sum(be.to_numpy(a).astype(np.float64) ** 2)) for a in lg.grads.as_list()))
    got = float(be.to_numpy(opt.step(lg.grads))[0])
    assert abs(got - expect) <= 1e-5 * max(1.0, expect)


def test_empty_and_edgeless(gpu_backend):
    be = gpu_backend
    for graph in (Graph.from_edges(np.zeros(0, int), np.zeros(0, int), num_nodes=4),
                  Graph.from_edges(np.zeros(0, int), np.zeros(0, int), num_nodes=0)):
        x = _inputs(graph, 3)
        gq, gk, gb = _run(be, graph, x, 1.0)
        n = graph.num_nodes
        assert np.array_equal(be.to_numpy(gq), np.zeros((n, 3), np.float32))
        assert np.array_equal(be.to_numpy(gk), np.zeros((n, 3), np.float32))
        assert be.to_numpy(gb).shape == (0,)


def test_huge_hub(gpu_backend):
    """A 100,000-edge segment and a node of in-degree 100,000 (the workgroup-per-hub bin)
    against float64 NumPy (a float32 serial sum of 100,000 terms is itself too far off)."""
    be = gpu_backend
    np64 = NumpyBackend("float64")
    rng = np.random.default_rng(3)
    n, big = 64, 100_000
    src = np.concatenate([np.zeros(big, int), np.ones(big, int), rng.integers(2, n, 500)])
    dst = np.concatenate([rng.integers(0, n, big), np.full(big, 2), rng.integers(0, n, 500)])
    g = Graph.from_edges(src, dst, num_nodes=n)
    x = _inputs(g, 3, seed=5)
    x64 = [a.astype(np.float64) for a in x]
    ref = np64.edge_logits_backward(g, x64[2], x64[3], np64.segment_softmax_backward(g, x64[0], x64[1], 1.0))
    got = _run(be, g, x, 1.0)
    for name, a, r in zip(("grad_q", "grad_k", "grad_bias"), got, ref):
        assert_parity(be.to_numpy(a), r, name)
