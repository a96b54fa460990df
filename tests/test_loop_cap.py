"""llvmpipe's loop cap (backends/webgpu/loop_cap.py): an invocation's loops stop after 65,535
iterations in all, silently. The kernels whose per-invocation work grows with the input refuse
such inputs on llvmpipe with a DeviceLimitError before any dispatch, and are exact just below."""

from __future__ import annotations

import numpy as np
import pytest

from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import DeviceLimitError
from energetic_wgpu.graph import Graph

pytest.importorskip("energetic_wgpu.backends.webgpu", reason="wgpu backend not importable")
from energetic_wgpu.backends.webgpu.loop_cap import LOOP_CAP, has_loop_cap  # noqa: E402

NP64 = NumpyBackend("float64")


@pytest.fixture
def llvmpipe(gpu_backend):
    if not has_loop_cap(gpu_backend.runtime):
        pytest.skip("not an llvmpipe adapter: no loop cap")
    return gpu_backend


def test_the_cap_is_real(llvmpipe):
    """The premise: a loop of 70,000 iterations stops at 65,535 on this adapter (if Mesa lifts
    the cap, this fails and the guards can go)."""
    import wgpu

    rt = llvmpipe.runtime
    dev = rt.device
    src = """
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1)
fn main() {
    var c = 0u;
    for (var i = 0u; i < out[0]; i = i + 1u) { c = c + 1u; }
    out[1] = c;
}"""
    pipe = dev.create_compute_pipeline(layout="auto", compute={"module": dev.create_shader_module(code=src),
                                                               "entry_point": "main"})
    buf = dev.create_buffer_with_data(data=np.array([70_000, 0], np.uint32).tobytes(),
                                      usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    bg = dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[{"binding": 0, "resource": {"buffer": buf}}])
    enc = dev.create_command_encoder()
    p = enc.begin_compute_pass()
    p.set_pipeline(pipe)
    p.set_bind_group(0, bg)
    p.dispatch_workgroups(1)
    p.end()
    rt.queue.submit([enc.finish()])
    assert np.frombuffer(rt.queue.read_buffer(buf), np.uint32)[1] == LOOP_CAP


def _in_hub(deg: int) -> Graph:
    """Node 0 receives ``deg`` edges (from nodes 1..63) and sends 2."""
    n = 64
    src = np.concatenate([np.arange(deg) % (n - 1) + 1, [0, 0]])
    dst = np.concatenate([np.zeros(deg, np.int64), [1, 2]])
    return Graph.from_edges(src, dst, num_nodes=n)


def test_backward_hub_refused_over_the_cap_and_exact_below(llvmpipe):
    be = llvmpipe
    g = _in_hub(2100)  # 33 entries per lane; wrong from d = 1600 without the guard
    rng = np.random.default_rng(0)
    pi = NumpyBackend().segment_softmax(g, rng.standard_normal(g.num_edges).astype(np.float32), 1.0, 0)
    gpi = rng.standard_normal(g.num_edges).astype(np.float32)
    for dim, refused in ((1800, True), (1400, False)):
        q = (rng.standard_normal((g.num_nodes, dim)) / 8).astype(np.float32)
        k = (rng.standard_normal((g.num_nodes, dim)) / 8).astype(np.float32)
        d0 = be.counters()["dispatches"]
        if refused:
            with pytest.raises(DeviceLimitError, match=r"backward over a hub of 2,100 entries with d = 1800 needs "
                                                        r"about 77,563 loop iterations .*\(llvmpipe\) silently stops"):
                be.softmax_logits_backward(g, pi, gpi, 1.0, q, k)
            assert be.counters()["dispatches"] == d0
            continue
        got = [be.to_numpy(a) for a in be.softmax_logits_backward(g, pi, gpi, 1.0, q, k)]
        ref = NP64.edge_logits_backward(g, q.astype(np.float64), k.astype(np.float64),
                                        NP64.segment_softmax_backward(g, pi.astype(np.float64), gpi.astype(np.float64), 1.0))
        for a, r in zip(got, ref):
            assert np.max(np.abs(a - r)) <= 1e-5 * max(1.0, float(np.max(np.abs(r))))


def test_forward_hub_refused_over_the_cap_and_exact_below(llvmpipe):
    be = llvmpipe
    g = Graph.from_edges(np.zeros(300, np.int64), np.ones(300, np.int64), num_nodes=2)  # one hub, 2 edges per lane;
    # wrong from d = 130,000 without the guard
    rng = np.random.default_rng(1)
    bias = rng.standard_normal(300).astype(np.float32)
    for dim, refused in ((130_000, True), (120_000, False)):
        q = (rng.standard_normal((2, dim)) / np.sqrt(dim)).astype(np.float32)
        k = (rng.standard_normal((2, dim))).astype(np.float32)
        if refused:
            with pytest.raises(DeviceLimitError, match=r"top-k with a segment of 300 edges with d = 130000 needs about 67,232 loop"):
                be.edge_probs(g, q, k, bias, 1.0, 3)
            continue
        got = be.to_numpy(be.edge_probs(g, q, k, bias, 1.0, 3))
        ref = NP64.edge_probs(g, q.astype(np.float64), k.astype(np.float64), bias.astype(np.float64), 1.0, 3)
        assert np.count_nonzero(got) == 3 and np.max(np.abs(got - ref)) <= 1e-5


@pytest.mark.parametrize("bins,dim,refused", [("cpu", 9000, False), ("cpu", 14000, True), ("gpu", 14000, False)])
def test_wide_rows_refused_only_where_a_thread_takes_too_many_columns(llvmpipe, bins, dim, refused):
    """No hub, but rows so wide that one thread's columns exceed the cap in the thread bin
    (degree 20: the "cpu" bins' thread bin); the "gpu" bins' 32-lane groups share them."""
    from conftest import use_bins

    be = use_bins(llvmpipe, bins)
    g = Graph.from_edges(np.repeat(np.arange(4), 20), np.tile(np.arange(20) % 4, 4), num_nodes=4)  # degree 20
    rng = np.random.default_rng(3)
    q = (rng.standard_normal((4, dim)) / dim).astype(np.float32)
    k = rng.standard_normal((4, dim)).astype(np.float32)
    bias = (rng.standard_normal(g.num_edges) / 4).astype(np.float32)
    gpi = np.ones(g.num_edges, np.float32)
    if refused:
        with pytest.raises(DeviceLimitError, match=rf"the segment softmax / top-k with d = {dim} needs about"):
            be.edge_probs(g, q, k, bias, 1.0, 2)
        pi = NumpyBackend().edge_probs(g, q, k, bias, 1.0, 2)
        with pytest.raises(DeviceLimitError, match=rf"the softmax \+ logits backward with d = {dim} needs about"):
            be.softmax_logits_backward(g, pi, gpi, 1.0, q, k)
        return
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    pi = be.edge_probs(g, q, k, bias, 1.0, 2)
    ref = NP64.edge_probs(g, q64, k64, bias.astype(np.float64), 1.0, 2)
    assert np.max(np.abs(be.to_numpy(pi) - ref)) <= 1e-5
    got = [be.to_numpy(a) for a in be.softmax_logits_backward(g, pi, gpi, 1.0, q, k)]
    want = NP64.edge_logits_backward(g, q64, k64, NP64.segment_softmax_backward(g, be.to_numpy(pi).astype(np.float64),
                                                                               gpi.astype(np.float64), 1.0))
    for a, r in zip(got, want):
        assert np.max(np.abs(a - r)) <= 1e-5 * max(1.0, float(np.max(np.abs(r))))


def test_scatter_backward_batch_refused_over_the_cap_and_exact_below(llvmpipe):
    be = llvmpipe
    g = Graph.from_edges(np.array([0]), np.array([1]), num_nodes=2)
    pi = np.ones(1, np.float32)
    rng = np.random.default_rng(2)
    for batch, refused in ((131_100, True), (131_000, False)):  # wrong from 131,073 without the guard
        x = rng.random((batch, 2)).astype(np.float32)
        gn = rng.standard_normal((batch, 2)).astype(np.float32)
        if refused:
            with pytest.raises(DeviceLimitError, match=r"over a batch of 131,100 rows needs about 65,558 loop"):
                be.energy_scatter_backward(g, x, pi, gn)
            continue
        _, grad_pi = be.energy_scatter_backward(g, x, pi, gn)
        terms = x[:, 0].astype(np.float64) * gn[:, 1]
        # a compensated float32 sum: within float32 rounding of the terms' magnitude
        assert abs(float(be.to_numpy(grad_pi)[0]) - float(np.sum(terms))) <= 1e-6 * float(np.sum(np.abs(terms)))
