"""The issue's scale test on WebGPU's default limits: N = 2^20 nodes, out-degree 10
(E = 10,485,760), d = 16, B = 64, on the Vulkan adapter (lavapipe in CI).

The [B, N] energies, targets and gradients are 256 MiB each (the default maxBufferSize, twice
the 128 MiB binding limit): the router runs them in 2 batch chunks of 32 rows. The packed
parameters (2*N*d + E floats, about 176 MB) and the AdamW moments are over one binding too:
the test needs a Router whose parameters exceed one binding, and skips (saying so) on a build
that still refuses it. NumPy checks a few sampled batch rows only (the whole graph, B = 3). A second test takes the
batch past maxBufferSize (B = 96: [B, N] arrays of 384 MiB, each in 2 buffers), and a third the
edges past one binding (E = 41.9 M: the graph cut into edge windows), and a fourth q and k past
one binding (N = 2.6 M, d = 16: row windows); more take the state into rows, the segment bins
and the graph's pointers past one binding (N = 34.6 M: the ops that need no batch row of N).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ADAPTERS, ADAPTER_ERROR, wgpu_backend_for
from parity import assert_parity

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import DeviceLimitError

N, DEGREE, DIM, B = 2**20, 10, 16, 64
SAMPLED_ROWS = [0, 33, 63]  # one in each chunk, the first and the last row


def _vulkan_backend():
    for a in ADAPTERS:
        if a["backend_type"] == "Vulkan":
            return wgpu_backend_for(a["index"])
    pytest.skip(f"no Vulkan adapter (the scale test runs on lavapipe with default limits): {ADAPTER_ERROR or ADAPTERS}")


def split_params_unsupported(be) -> str | None:
    """None when a Router whose packed parameters exceed one binding builds and trains (a
    small case under a forced 4 KiB binding limit), else the refusal's message."""
    rng = np.random.default_rng(0)
    n, e, d = 64, 256, 8  # parameters: 4 * (2*64*8 + 256) = 5,120 bytes
    g = Graph.from_edges(np.repeat(np.arange(n), e // n), rng.integers(0, n, e), num_nodes=n)
    p = RouterParams(q=rng.standard_normal((n, d)).astype(np.float32), k=rng.standard_normal((n, d)).astype(np.float32),
                     bias=np.zeros(e, np.float32))
    with be.binding_limit(4096):
        try:
            r = Router(g, p, be)
            r.train_step(np.ones((2, n), np.float32), np.zeros((2, n), np.float32), AdamW(r, lr=1e-3)).loss
        except DeviceLimitError as exc:
            return str(exc)
    return None


def scale_case(dim: int):
    """(graph, params, energies [B, N], target [B, N]) of the scale test, seeded."""
    rng = np.random.default_rng(12)
    src = np.repeat(np.arange(N, dtype=np.int64), DEGREE)
    g = Graph.from_edges(src, rng.integers(0, N, src.size), num_nodes=N)
    params = RouterParams(q=(0.3 * rng.standard_normal((N, dim))).astype(np.float32),
                          k=(0.3 * rng.standard_normal((N, dim))).astype(np.float32),
                          bias=(0.1 * rng.standard_normal(src.size)).astype(np.float32), tau=0.8, alpha=0.9)
    energies = rng.random((B, N), dtype=np.float32)
    target = (0.5 * rng.random((B, N), dtype=np.float32))
    return g, params, energies, target


def run_scale(be, dim: int, timings: dict | None = None) -> None:
    """Build Router + AdamW, run one train step, check the loss and parameters finite and the
    step's forward (sampled rows) against NumPy. ``timings`` gets each phase's seconds."""
    clock = [time.perf_counter()]
    times = {} if timings is None else timings

    def lap(name: str) -> None:
        now = time.perf_counter()
        times[name] = now - clock[0]
        clock[0] = now

    g, params, energies, target = scale_case(dim)
    assert g.num_edges == 10_485_760 and energies.nbytes == 2**28  # the default maxBufferSize
    lap("case")
    r = Router(g, params, be)
    opt = AdamW(r, lr=1e-3)
    lap("build")
    res = r.train_step(energies, target, opt)
    assert np.isfinite(res.loss) and res.loss > 0 and not res.skipped
    lap("train_step")
    after = r.params()
    for name in ("q", "k", "bias"):
        value = getattr(after, name)
        assert np.isfinite(value).all(), name
        assert not np.array_equal(value, getattr(params, name)), f"{name} did not change"
    # the step's forward ran on the parameters before the update
    got = be.to_numpy(res.output.next_energies)[SAMPLED_ROWS]
    lap("readback")
    ref = Router(g, params, NumpyBackend()).forward(energies[SAMPLED_ROWS]).next_energies
    assert_parity(got, ref, "sampled rows of next_energies")
    lap("numpy")


@pytest.mark.slow
def test_scale_n_2_20_degree_10_d16_b64_default_limits():
    be = _vulkan_backend()
    assert be.limits_in_use()["max_binding_bytes"] == 2**27  # WebGPU's default limits
    reason = split_params_unsupported(be)
    if reason is not None:
        pytest.skip(f"packed parameters past one binding are not supported on this build yet: {reason}")
    run_scale(be, DIM)


@pytest.mark.slow
def test_batch_past_max_buffer_size_default_limits():
    """B = 96 rows of N = 2^20 nodes on default limits: each [B, N] array is 384 MiB, past the
    256 MiB maxBufferSize, so it lives in 2 buffers (64 + 32 rows) and the router runs 3 batch
    chunks of 32 rows. A train step (out-degree 2, d = 4) runs; sampled rows of its forward
    match NumPy and its loss is finite."""
    from energetic_wgpu.backends.webgpu.arrays import parts_of

    be = _vulkan_backend()
    assert be.limits_in_use()["max_buffer_size"] == 2**28
    n, b, d = 2**20, 96, 4
    rng = np.random.default_rng(5)
    src = np.repeat(np.arange(n, dtype=np.int64), 2)
    g = Graph.from_edges(src, rng.integers(0, n, src.size), num_nodes=n)
    params = RouterParams(q=(0.3 * rng.standard_normal((n, d))).astype(np.float32),
                          k=(0.3 * rng.standard_normal((n, d))).astype(np.float32),
                          bias=np.zeros(src.size, np.float32), tau=0.8, alpha=0.9)
    energies = be.asarray(rng.random((b, n), dtype=np.float32))
    assert [(s, c) for s, c, *_ in parts_of(energies)] == [(0, 64 * n), (64 * n, 32 * n)]
    r = Router(g, params, be)
    res = r.train_step(energies, be.asarray(0.5 * rng.random((b, n), dtype=np.float32)), AdamW(r, lr=1e-3))
    assert np.isfinite(res.loss) and res.loss > 0 and not res.skipped
    rows = [0, 63, 64, 95]  # either side of the buffers' boundary
    got = be.to_numpy(res.output.next_energies)[rows]
    ref = Router(g, params, NumpyBackend()).forward(be.to_numpy(energies)[rows]).next_energies
    assert_parity(got, ref, "sampled rows of next_energies")


def _random_case(n: int, degree: int, dim: int, batch: int, top_k: int, seed: int):
    """(graph of n nodes of out-degree ``degree`` to random targets, params with d = ``dim``,
    energies and target [batch, n]), seeded."""
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(n, dtype=np.int64), degree)
    g = Graph.from_edges(src, rng.integers(0, n, src.size), num_nodes=n)
    del src
    params = RouterParams(q=(0.3 * rng.standard_normal((n, dim))).astype(np.float32),
                          k=(0.3 * rng.standard_normal((n, dim))).astype(np.float32),
                          bias=(0.1 * rng.standard_normal(g.num_edges)).astype(np.float32), tau=0.8, alpha=0.9,
                          top_k=top_k)
    return g, params, rng.random((batch, n), dtype=np.float32), 0.5 * rng.random((batch, n), dtype=np.float32)


@pytest.mark.slow
def test_edges_past_one_binding_default_limits():
    """E = 2^20 * 40 = 41,943,040 edges on default limits: every [E] array (168 MB) is past the
    128 MiB binding, so the graph is cut into edge windows (2 source and 2 target windows) and
    the bias, its moments and its gradient live in the windows' layout. Router + clipped AdamW
    build, one train step (B = 4, d = 16) runs, the loss and parameters are finite and sampled
    rows of the step's forward match NumPy."""
    be = _vulkan_backend()
    g, params, energies, target = _random_case(2**20, 40, 16, 4, top_k=8, seed=21)
    r = Router(g, params, be)
    gd = be.graph_data(g)
    assert 4 * g.num_edges > be.limits_in_use()["max_binding_bytes"]
    assert len(gd.windows) == 2 and len(gd.rwindows) == 2
    res = r.train_step(energies, target, AdamW(r, lr=1e-3, max_grad_norm=1.0))
    assert np.isfinite(res.loss) and res.loss > 0 and not res.skipped and np.isfinite(res.grad_norm)
    after = r.params()
    assert np.isfinite(after.bias).all() and not np.array_equal(after.bias, params.bias)
    rows = [0, 3]
    got = be.to_numpy(res.output.next_energies)[rows]
    ref = Router(g, params, NumpyBackend()).forward(energies[rows]).next_energies
    assert_parity(got, ref, "sampled rows of next_energies")


@pytest.mark.slow
def test_q_and_k_past_one_binding_default_limits():
    """N = 5 * 2^19 = 2,621,440 nodes, d = 16 on default limits: q and k (168 MB each) are past
    the 128 MiB binding (each in one 168 MB buffer, bound in node ranges), and the logits' ops run over row windows (node_rows.py: k's rows gathered per window of
    sources, q's per window of targets). Router + clipped AdamW build, one train step (out-degree
    4, B = 4) runs, the loss, gradient norm and parameters are finite, q and k change, and
    sampled rows of the step's forward match NumPy."""
    be = _vulkan_backend()
    n, d = 5 * 2**19, 16
    g, params, energies, target = _random_case(n, 4, d, 4, top_k=3, seed=31)
    r = Router(g, params, be)
    assert r.q.nbytes > be.limits_in_use()["max_binding_bytes"]  # one 168 MB buffer, bound in node ranges
    res = r.train_step(energies, target, AdamW(r, lr=1e-3, max_grad_norm=1.0))
    assert np.isfinite(res.loss) and res.loss > 0 and not res.skipped and np.isfinite(res.grad_norm)
    plan = be.graph_data(g).row_plans[d]
    assert len(plan.windows) >= 5 and len(plan.rwindows) >= 5
    after = r.params()
    for name in ("q", "k"):
        value = getattr(after, name)
        assert np.isfinite(value).all() and not np.array_equal(value, getattr(params, name)), name
    rows = [0, 3]
    got = be.to_numpy(res.output.next_energies)[rows]
    ref = Router(g, params, NumpyBackend()).forward(energies[rows]).next_energies
    assert_parity(got, ref, "sampled rows of next_energies")


@pytest.mark.slow
def test_state_in_rows_default_limits():
    """N = 9 * 2^20 = 9,437,184 nodes on default limits: 4 node-major rows of N (151 MB) are
    past the 128 MiB binding, so the scatter's state stays in its [B, N] rows (batch_chunks.
    RowChunks; B = 5 in chunks of 3 and 2 rows, 113 MB each). Out-degree 2, d = 2 (E = 18.9 M:
    the reverse index split, no edge windows). Router + clipped AdamW build, one train step
    (3 scatter steps) runs, the loss, gradient norm and parameters are finite, and sampled rows
    of the step's forward match NumPy."""
    from energetic_wgpu.backends.webgpu import batch_chunks

    be = _vulkan_backend()
    n = 9 * 2**20
    g, params, energies, target = _random_case(n, 2, 2, 5, top_k=0, seed=41)
    r = Router(g, params, be)
    assert batch_chunks.state_in_rows(be, n) and batch_chunks.plan(be, 5, n) == [(0, 3), (3, 2)]
    res = r.train_step(energies, target, AdamW(r, lr=1e-3, max_grad_norm=1.0), steps=3)
    assert isinstance(res.output.history[0], batch_chunks.RowChunks)
    assert np.isfinite(res.loss) and res.loss > 0 and not res.skipped and np.isfinite(res.grad_norm)
    after = r.params()
    for name in ("q", "k", "bias"):
        value = getattr(after, name)
        assert np.isfinite(value).all() and not np.array_equal(value, getattr(params, name)), name
    rows = [0, 4]  # one in each chunk
    got = be.to_numpy(res.output.next_energies)[rows]
    del res, r
    ref = Router(g, params, NumpyBackend()).forward(energies[rows], steps=3).next_energies
    assert_parity(got, ref, "sampled rows of next_energies")


@pytest.mark.slow
def test_segment_bins_past_one_binding_default_limits():
    """N = 17 * 2^20 = 17,825,792 nodes of out-degree 1 on default limits: the [E] arrays (71 MB)
    fit one binding, but the backward's segment bins (u32 [2N + 1], 143 MB) do not, so the graph
    is cut into edge windows of at most 11.2 M nodes (2 each way) and each window binds its own
    pieces of the bins (ops_backward.window_pieces); the scatter's state is in [B, N] rows.
    The backward's gradients (d = 2, B = 1) match NumPy's, and one clipped AdamW step runs with
    a finite loss, gradient norm and parameters."""
    be = _vulkan_backend()
    n = 17 * 2**20
    g, params, energies, target = _random_case(n, 1, 2, 1, top_k=0, seed=51)
    r = Router(g, params, be)
    gd = be.graph_data(g)
    assert 4 * g.num_edges <= be.runtime.max_binding_bytes < 4 * (2 * n + 1)
    assert gd.bins_out.seg is None and len(gd.windows) == 2 and len(gd.rwindows) == 2
    out = r.forward(energies, steps=2)
    grads = r.backward(out, target)
    got = {name: be.to_numpy(getattr(grads, name)) for name in ("q", "k", "bias")}
    del out, grads
    ref_r = Router(g, params, NumpyBackend())
    ref = ref_r.backward(ref_r.forward(energies, steps=2), target)
    for name, value in got.items():
        assert_parity(value, getattr(ref, name), f"grad {name}")
    del ref, ref_r
    res = r.train_step(energies, target, AdamW(r, lr=1e-3, max_grad_norm=1.0), steps=2)
    assert np.isfinite(res.loss) and res.loss > 0 and not res.skipped and np.isfinite(res.grad_norm)
    after = r.params()
    for name in ("q", "k", "bias"):
        value = getattr(after, name)
        assert np.isfinite(value).all() and not np.array_equal(value, getattr(params, name)), name


@pytest.mark.slow
def test_pointers_past_one_binding_default_limits():
    """N = 2^25 + 2^20 = 34,603,008 nodes of out-degree 0 .. 2 on default limits: the graph's
    pointers (u32 [N + 1], 138 MB) are past the 128 MiB binding, so they go into node blocks
    (2 each way) with every window inside one; q and k (d = 1) are in row windows, and one
    batch row of N (138 MB) is past the binding too, so the scatter runs row by row
    (wide_rows.py). edge_probs (top-2), segment_softmax_backward, energy_scatter (a mask,
    retained sinks) and energy_scatter_backward (B = 2) match NumPy. (softmax_logits_backward
    over these pointers takes about 2 minutes on lavapipe, and a Router step more:
    tests/test_pointer_blocks.py and tests/test_wide_rows.py run them under forced limits.)"""
    be = _vulkan_backend()
    n = 2**25 + 2**20
    rng = np.random.default_rng(61)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's benchmarks package
    from benchmarks.bench_wide_rows import sparse_graph

    g = sparse_graph(n, rng)
    q, k = ((0.5 * rng.standard_normal((n, 1))).astype(np.float32) for _ in range(2))
    bias = (0.5 * rng.standard_normal(g.num_edges)).astype(np.float32)
    gpi = rng.standard_normal(g.num_edges).astype(np.float32)
    got = {"pi": be.to_numpy(pi := be.edge_probs(g, q, k, bias, 0.8, 2))}
    gd = be.graph_data(g)
    assert gd.ptr_block and len(gd.row_blocks) == len(gd.rev_blocks) == 2
    got["grad_logits"] = be.to_numpy(be.segment_softmax_backward(g, pi, gpi, 0.8))
    del pi
    en = rng.random((2, n), np.float32)
    act = rng.random((2, n)) < 0.8
    epi = rng.random(g.num_edges, np.float32)
    got["next"] = be.to_numpy(be.energy_scatter(g, en, epi, 0.9, act, True))
    ge, gp = be.energy_scatter_backward(g, en, epi, en, 0.9, act, True)
    got["grad_energies"], got["grad_pi"] = be.to_numpy(ge), be.to_numpy(gp)
    del ge, gp
    ref_be = NumpyBackend()
    ref_pi = ref_be.edge_probs(g, q, k, bias, 0.8, 2)
    ref = {"pi": ref_pi, "grad_logits": ref_be.segment_softmax_backward(g, ref_pi, gpi, 0.8),
           "next": ref_be.energy_scatter(g, en, epi, 0.9, act, True)}
    ref["grad_energies"], ref["grad_pi"] = ref_be.energy_scatter_backward(g, en, epi, en, 0.9, act, True)
    for name, value in got.items():
        assert_parity(value, ref[name], name, rtol=1e-4)
