"""One batch row of N past one binding: the scatter, its backward, the flow, the metrics and
the Router row by row (wide_rows.py).

When N nodes (4 N bytes, bound from any aligned start) are past one storage binding (N > 33.5 M
on WebGPU's default limits) the graph's pointers are in node blocks and every op over the
[B, N] energies runs one batch row at a time over the edge windows: each window's own nodes
are one range of the row, the values at the other end of its edges are gathered per node block
first, a sink is read from its row_ptr block, and grad_pi's sum over the rows is carried from
row to row; a row past the buffer size limit too is split over buffers at its node blocks.
Here N = 3,000 under a 4 KiB binding (windows of at most 956 nodes, 4 pointer blocks; an 8 KiB
buffer limit for rows over 2 buffers) and N = 10,000 under 16 KiB for the Router (its losses
and metrics reduce blocks of 4,096 elements, 16 KiB): every result bit-identical to the
unsplit run and in parity with NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity, assert_steady_step, forced_limits

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.webgpu.arrays import parts_of
from energetic_wgpu.errors import DeviceLimitError

N = 3000


def _graph(kind: str, n: int = N) -> Graph:
    """Out-degrees 0 .. 5 ("serial"); plus hubs of 300 out-edges at nodes 10, n/2 and n - 1 and
    an in-hub of 400 at node 7 ("mixed", windowed whole); or node 3 with 1,500 out-edges and
    node 7 with 1,500 in-edges, more than a 4 KiB window holds (960: "big", in pieces)."""
    rng = np.random.default_rng(4)
    deg = rng.integers(0, 6, n)
    if kind == "mixed":
        deg[[10, n // 2, n - 1]] = 300
    if kind == "big":
        deg[3] = 1500
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    cols = rng.integers(0, n, int(ptr[-1]))
    hub_in = {"mixed": 400, "big": 1500}.get(kind, 0)
    cols[rng.permutation(cols.size)[:hub_in]] = 7
    return Graph.from_csr(ptr, cols, num_nodes=n)


def _ops(be, limit, kind, batch, masked, retain, n=N, buffer=None):
    """energy_scatter (with the flow) and energy_scatter_backward (with grad_pi_acc) on
    ``batch`` rows under ``limit`` (and ``buffer``, a buffer size limit): the outputs and the
    graph's ptr_block and the number of buffers of the next energies."""
    g = _graph(kind, n)
    rng = np.random.default_rng(batch)
    shape = (batch, n)
    # magnitudes over 4 decades: a sum in another order changes bits
    en = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 2, shape)).astype(np.float32)
    gn = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 2, shape)).astype(np.float32)
    pi = rng.random(g.num_edges).astype(np.float32)
    acc = rng.standard_normal(g.num_edges).astype(np.float32)
    act = rng.random(shape) < 0.7 if masked else None
    with forced_limits(be, limit, buffer):
        nxt, flow = be.energy_scatter(g, en, pi, 0.9, act, retain, True)
        ge, gp = be.energy_scatter_backward(g, en, pi, gn, 0.9, act, retain, True, acc)
        _, gp_only = be.energy_scatter_backward(g, en, pi, gn, 1.1, act, retain, False)
        out = {"next": nxt, "flow": flow, "grad_energies": ge, "grad_pi": gp, "grad_pi alone": gp_only}
        layout = (be.graph_data(g).ptr_block, len(parts_of(nxt) or [nxt])) if hasattr(be, "graph_data") else None
        return {name: be.to_numpy(x) for name, x in out.items()}, layout


def _assert_as_unsplit(gpu_backend, np_backend, limit, *args, block=956, buffer=None, buffers=1):
    whole, _ = _ops(gpu_backend, None, *args)
    got, layout = _ops(gpu_backend, limit, *args, buffer=buffer)
    assert layout == (block, buffers)
    ref, _ = _ops(np_backend, None, *args)
    for name in whole:
        assert got[name].shape == ref[name].shape, name
        assert got[name].tobytes() == whole[name].tobytes(), name
        assert_parity(got[name], ref[name], name, rtol=1e-4)


@pytest.mark.parametrize("kind", ["serial", "mixed", "big"])
@pytest.mark.parametrize("batch,masked,retain", [(1, False, False), (2, True, True), (5, False, True)])
def test_scatter_ops_row_by_row_bit_identical(gpu_backend, np_backend, kind, batch, masked, retain):
    """Under 4 KiB (N = 3,000: 4 pointer blocks of 956 nodes) the scatter, the flow and both
    backward gradients run row by row: bit-identical to one dispatch over the whole batch and
    in parity with NumPy, with masks and retained sinks, hubs windowed whole and
    big hubs in pieces both ways."""
    _assert_as_unsplit(gpu_backend, np_backend, 4096, kind, batch, masked, retain)


def test_scatter_ops_with_no_rows(gpu_backend, np_backend):
    """B = 0 row by row: empty energies and gradients, grad_pi the accumulated gradient alone."""
    _assert_as_unsplit(gpu_backend, np_backend, 4096, "mixed", 0, True, True)


@pytest.mark.parametrize("n,block", [(956, 0), (957, 956), (1024, 956)])
def test_rows_at_the_edge_of_one_binding(gpu_backend, np_backend, n, block):
    """Under 4 KiB a row of up to 956 nodes fits a binding from any aligned start (4 N + 256 +
    16 bytes): whole; from 957 nodes (also 1,024, exactly 4 KiB, whose 1,025 pointers do not
    fit) row by row, in pointer blocks of 956."""
    _assert_as_unsplit(gpu_backend, np_backend, 4096, "serial", 3, True, True, n, block=block)


@pytest.mark.parametrize("kind,batch", [("serial", 1), ("big", 3)])
def test_rows_past_the_buffer_limit(gpu_backend, np_backend, kind, batch):
    """Under a 4 KiB binding and an 8 KiB buffer limit a row of 3,000 nodes (12,000 bytes) is
    past one buffer too: each [B, N] array is split over buffers at its rows' node blocks
    (2 per row: 3 blocks of at most 956 nodes, as many per buffer as fit), every bound range in
    one; bit-identical and in parity with NumPy."""
    _assert_as_unsplit(gpu_backend, np_backend, 4096, kind, batch, True, True, buffer=8192, buffers=2 * batch)


def _router_graph() -> Graph:
    """N = 10,000: out-degrees 0 .. 6, hubs of 300 out-edges at nodes 10, 5,000 and 9,999 and
    300 in-edges at 9,000; node 3 with 5,000 out-edges and node 7 with 5,000 in-edges, more than
    a 16 KiB window holds (4,032)."""
    rng = np.random.default_rng(4)
    n = 10_000
    deg = rng.integers(0, 7, n)
    deg[[10, 5000, n - 1]] = 300
    deg[3] = 5000
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    cols = rng.integers(0, n, int(ptr[-1]))
    pick = rng.permutation(cols.size)
    cols[pick[:5000]] = 7
    cols[pick[5000:5300]] = 9000
    return Graph.from_csr(ptr, cols, num_nodes=n)


def _train(be, limit, buffer=None, n_steps=3):
    """3 clipped AdamW steps (B = 3, d = 2, top-3, 2 scatter steps, an active mask, retained
    sinks) under ``limit`` (and ``buffer``), then a forward with its metrics: [losses and
    norms, q, k, bias, next energies, metrics]."""
    g = _router_graph()
    n = g.num_nodes
    rng = np.random.default_rng(3)
    q, k = ((0.3 * rng.standard_normal((n, 2))).astype(np.float32) for _ in range(2))
    en = rng.random((3, n)).astype(np.float32)
    tgt = (0.1 * rng.random((3, n))).astype(np.float32)
    act = rng.random((3, n)) < 0.8
    bias = (0.1 * rng.standard_normal(g.num_edges)).astype(np.float32)
    with forced_limits(be, limit, buffer):
        r = Router(g, RouterParams(q, k, bias, tau=0.8, alpha=0.9, top_k=3), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        out = []
        for _ in range(n_steps):
            res = r.train_step(en, tgt, opt, active=act, steps=2, retain_sinks=True)
            out += [res.loss, res.grad_norm]
        if limit and hasattr(be, "graph_data"):
            assert be.graph_data(g).ptr_block == 4028
            assert buffer is None or len(parts_of(r.forward(en, steps=1).next_energies)) > 1
        p = r.params()
        o = r.forward(en, ~act, steps=2, retain_sinks=True)
        metrics = np.array(list(o.metrics.values()), np.float32)
        return [np.array(out, np.float32), p.q, p.k, p.bias, be.to_numpy(o.next_energies), metrics]


@pytest.mark.parametrize("buffer", [None, 32768])
def test_router_trains_row_by_row(gpu_backend, np_backend, buffer):
    """The Router row by row (N = 10,000 under 16 KiB, 3 pointer blocks, a big hub in pieces
    each way; under a 32 KiB buffer limit each row, 40,000 bytes, split over 2 buffers too):
    losses, gradient norms, parameters, the forward and its metrics bit-identical to the
    unsplit run and in parity with NumPy."""
    split, whole = _train(gpu_backend, 16384, buffer), _train(gpu_backend, None)
    ref = _train(np_backend, None)
    names = ("losses and norms", "q", "k", "bias", "next energies", "metrics")
    for name, a, b, c in zip(names, split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name, rtol=1e-4)


def test_row_by_row_train_step_is_one_submit_without_allocations(gpu_backend):
    """Row by row, a steady-state train step is still one submit creating no buffer, bind group
    or pipeline (the gathered values, carries and the metrics' identity come from the pool or
    are kept); its dispatches are the same every step."""
    be = gpu_backend
    g = _router_graph()
    n = g.num_nodes
    rng = np.random.default_rng(6)
    q, k = ((0.3 * rng.standard_normal((n, 2))).astype(np.float32) for _ in range(2))
    en, tgt = rng.random((2, n)).astype(np.float32), (0.1 * rng.random((2, n))).astype(np.float32)
    with forced_limits(be, 16384):
        r = Router(g, RouterParams(q, k, np.zeros(g.num_edges, np.float32), tau=0.8, alpha=0.9), be)
        opt = AdamW(r, lr=0.01, eps=1e-2, max_grad_norm=0.1)
        assert_steady_step(be, lambda: r.train_step(en, tgt, opt, steps=2, retain_sinks=True), 6)


def test_batch_of_2_to_the_32_elements_refused(gpu_backend):
    """Past 2^32 elements (the kernels' u32 element range) a [B, N] array of wide rows is refused
    before anything is allocated, and the backend stays usable."""
    be = gpu_backend
    with forced_limits(be, 4096, 8192), pytest.raises(DeviceLimitError, match="past 2.32 elements"):
        be.zeros((2**32 // N + 1, N))
    assert be.to_numpy(be.add(np.ones(3, np.float32), np.ones(3, np.float32))).tolist() == [2, 2, 2]


def test_rows_split_elsewhere_are_copied_into_node_blocks(gpu_backend):
    """An [N] device array past the buffer limit is split at reduction workgroups, not at the
    node blocks the row-by-row ops bind; reshaped to [1, N] (as the Router does with [N]
    energies) it is copied into node blocks first: the same bits as the [1, N] upload."""
    be = gpu_backend
    g = _graph("mixed")
    rng = np.random.default_rng(9)
    en = rng.standard_normal((1, N)).astype(np.float32)
    pi = rng.random(g.num_edges).astype(np.float32)
    with forced_limits(be, 4096, 8192):
        flat = be.asarray(en[0])
        assert [s for s, *_ in parts_of(flat)] != [0, 956, 1912, 2868]  # not at the node blocks
        rows = be.reshape(flat, (1, N))
        got = [be.to_numpy(x) for x in (be.energy_scatter(g, rows, pi, 0.9, None, True),
                                         *be.energy_scatter_backward(g, rows, pi, rows, 0.9))]
        ref = [be.to_numpy(x) for x in (be.energy_scatter(g, en, pi, 0.9, None, True),
                                         *be.energy_scatter_backward(g, en, pi, en, 0.9))]
    for a, b in zip(got, ref):
        assert a.tobytes() == b.tobytes()
