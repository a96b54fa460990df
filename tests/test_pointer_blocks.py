"""The graph's node pointers past one binding: row_ptr and rev_ptr (u32 [N + 1]) in node blocks.

When one batch row of N nodes is past the binding limit in use from any aligned start (4 N +
alignment + 16 bytes: N > 33.5 M on WebGPU's default limits; the N + 1 pointers then too, or
nearly), the pointers go into blocks of ``ptr_block`` nodes (each holding its nodes' pointers
and the next one), every edge window and window of targets lies in one block, and the kernels
that read the pointers bind the window's block with its first node as ``p_shift``. Here N =
3,000 under a 4 KiB binding (blocks of 956 nodes): the logits, the softmax and top-k and every
backward of them, with q and k in row windows too, are bit-identical to one dispatch over the
whole graph and in parity with NumPy; the segment backward's per-node values of the serial
kernel (u32 [N] past the binding too) are reduced in ranges with each thread's sum carried
from round to round. The ops over the [B, N] energies run row by row: tests/test_wide_rows.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity, forced_limits

from energetic_wgpu import Graph
from energetic_wgpu.backends.webgpu import graph_data

N = 3000


def _graph(kind: str) -> Graph:
    """Out-degrees 0 .. 5 ("serial": every node in the backward's thread bin, both ways), or
    with 40 segments of 40 edges, three hubs of 300 (one at the last node) and an in-hub of
    400 ("mixed")."""
    rng = np.random.default_rng(4)
    deg = rng.integers(0, 6, N)
    if kind == "mixed":
        deg[[10, 1500, N - 1]] = 300
        deg[100:140] = 40
    ptr = np.zeros(N + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    cols = rng.integers(0, N, int(ptr[-1]))
    if kind == "mixed":
        cols[rng.permutation(cols.size)[:400]] = 7
    return Graph.from_csr(ptr, cols, num_nodes=N)


def _ops(be, limit, kind, dim):
    rng = np.random.default_rng(5)
    g = _graph(kind)
    q, k = (rng.standard_normal((N, dim)).astype(np.float32) for _ in range(2))
    bias = rng.standard_normal(g.num_edges).astype(np.float32)
    gpi = rng.standard_normal(g.num_edges).astype(np.float32)
    out = {}
    with forced_limits(be, limit):
        out["logits"] = be.edge_logits(g, q, k, bias)
        out["pi"] = pi = be.edge_probs(g, q, k, bias, 0.7, 0)
        out["pi top-3"] = be.edge_probs(g, q, k, bias, 0.7, 3)
        out["segment_softmax top-2"] = be.segment_softmax(g, bias, 0.5, 2)
        out["segment_topk 2"] = be.segment_topk(g, bias, 2)
        out["segment_softmax_backward"] = be.segment_softmax_backward(g, pi, gpi, 0.7)
        out["grad_q"], out["grad_k"], out["grad_logits"] = gq, gk, gl = be.softmax_logits_backward(
            g, pi, gpi, 0.7, q, k)
        out["sum of squares"] = be.sum_squares([gq, gk, gl])
        out["logits_bwd grad_q"], out["logits_bwd grad_k"], _ = be.edge_logits_backward(g, q, k, gl)
        gd = be.graph_data(g) if hasattr(be, "graph_data") else None
        return {name: be.to_numpy(x) for name, x in out.items()}, gd


@pytest.fixture
def few_serial_threads(monkeypatch):
    """64 serial threads (instead of 2^18): the serial kernel's partials fit a 4 KiB binding as
    they do at the sizes whose values do not (N / 64 threads past 16.7 M nodes), and each thread
    sums about 40 places, carried across rounds."""
    monkeypatch.setattr(graph_data, "SERIAL_THREADS", 64)


@pytest.mark.parametrize("kind", ["serial", "mixed"])
@pytest.mark.parametrize("dim", [1, 2])
def test_ops_with_pointers_in_node_blocks_bit_identical(gpu_backend, np_backend, few_serial_threads, kind, dim):
    whole, gd_whole = _ops(gpu_backend, None, kind, dim)
    got, gd = _ops(gpu_backend, 4096, kind, dim)
    assert gd_whole.ptr_block == 0 and gd_whole.row_ptr is not None
    assert gd.ptr_block == 956 and len(gd.row_blocks) == len(gd.rev_blocks) == 4 and gd.row_ptr is None
    for w in gd.windows + gd.rwindows:  # every window in one node block
        assert w.n0 // 956 == (w.n1 - 1) // 956, (w.n0, w.n1)
    assert gd.bins_out.serial == (kind == "serial") and dim in gd.row_plans  # q, k [N, d] past 4 KiB too
    ref, _ = _ops(np_backend, None, kind, dim)
    for name in whole:
        assert got[name].tobytes() == whole[name].tobytes(), name
        assert_parity(got[name], ref[name], name, rtol=1e-4)
