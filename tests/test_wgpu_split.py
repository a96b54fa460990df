"""Batch chunks under a forced small binding limit (``max_binding_bytes``): ``edge_flow`` with
a [B, E] output larger than one binding is written in row chunks, and ``step_metrics`` takes
its [B, E] grid with fewer partial workgroups than blocks. Both stay bit-identical to the
unsplit run on the default limits and in parity with NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity

from energetic_wgpu.errors import DeviceLimitError
from energetic_wgpu.graph import Graph

LIMIT = 8192  # bytes per binding


def _case(b: int, n: int, e: int, seed: int):
    rng = np.random.default_rng(seed)
    src = np.sort(rng.integers(0, n, e))
    g = Graph.from_edges(src, rng.integers(0, n, e), num_nodes=n)
    en = (rng.random((b, n)) * (rng.random((b, n)) < 0.8)).astype(np.float32)
    nxt = rng.random((b, n), dtype=np.float32)
    act = rng.random((b, n)) < 0.7
    return g, en, nxt, act


# (B, N, E): rows of 2000 / 2048 / 1996 / 4000 bytes (unaligned and aligned chunk starts), 1 .. 4 rows
# per chunk, B*E*4 from 16x to 500x the binding limit
@pytest.mark.parametrize("b,n,e", [(512, 4, 500), (300, 6, 512), (40, 50, 499), (3, 2, 1000)])
def test_edge_flow_and_metrics_split(gpu_backend, np_backend, b, n, e):
    g, en, nxt, act = _case(b, n, e, seed=b + e)
    pi = np_backend.segment_softmax(g, np.random.default_rng(e).standard_normal(e).astype(np.float32), top_k=2)
    assert b * e * 4 > LIMIT
    for a in (None, act):
        with gpu_backend.binding_limit(LIMIT):
            before = gpu_backend.counters()["dispatches"]
            split = gpu_backend.to_numpy(gpu_backend.edge_flow(g, en, pi, 0.7, a))
            chunks = gpu_backend.counters()["dispatches"] - before
            m_split = gpu_backend.to_numpy(gpu_backend.step_metrics(g, en, nxt, pi, 0.7, a))
        per = (LIMIT - 256) // (e * 4)
        assert chunks == -(-b // per) > 1
        whole = gpu_backend.to_numpy(gpu_backend.edge_flow(g, en, pi, 0.7, a))
        assert split.tobytes() == whole.tobytes()
        assert_parity(split, np_backend.edge_flow(g, en, pi, 0.7, a))
        m_whole = gpu_backend.to_numpy(gpu_backend.step_metrics(g, en, nxt, pi, 0.7, a))
        assert m_split.tobytes() == m_whole.tobytes()
        assert_parity(m_split, np.asarray(np_backend.step_metrics(g, en, nxt, pi, 0.7, a)))


def test_large_flow_cannot_be_bound_whole(gpu_backend):
    g, en, _, _ = _case(64, 4, 500, seed=1)
    with gpu_backend.binding_limit(LIMIT):
        pi = gpu_backend.asarray(np.full(500, 0.5, np.float32))
        flow = gpu_backend.edge_flow(g, en, pi)
        assert flow.shape == (64, 500) and flow.pooled.size > LIMIT
        doubled = gpu_backend.add(flow, flow)  # in ranges of one binding
        assert doubled.pooled.size > LIMIT
        np.testing.assert_array_equal(gpu_backend.to_numpy(doubled), 2 * gpu_backend.to_numpy(flow))
        # sum_squares reduces in ranges of whole 4096-element workgroups: not under 8 KiB
        with pytest.raises(DeviceLimitError, match=r"array of 32000 elements \(128000 bytes\) is over the binding "
                                                   r"limit of 8192 bytes, and one reduction workgroup's range"):
            gpu_backend.sum_squares([flow])
        # the backend stays usable and the flow readable
        first = gpu_backend.to_numpy(gpu_backend.edge_flow(g, en[:1], pi))[0]
        np.testing.assert_array_equal(gpu_backend.to_numpy(flow)[0], first)
    with gpu_backend.binding_limit(2 * LIMIT):  # ranges of whole workgroups: the unsplit partials
        total = gpu_backend.to_numpy(gpu_backend.sum_squares([pi, flow, pi]))
    assert gpu_backend.limits_in_use()["max_binding_bytes"] == 134217728  # restored
    whole = gpu_backend.sum_squares([pi, gpu_backend.edge_flow(g, en, pi), pi])
    assert total.tobytes() == gpu_backend.to_numpy(whole).tobytes()
    ref = 2 * 500 * 0.25 + np.sum(gpu_backend.to_numpy(flow).astype(np.float64) ** 2)
    assert_parity(total, [ref], "sum of squares", rtol=1e-5)


def test_flow_over_max_buffer_size_refused(gpu_backend):
    with pytest.raises(DeviceLimitError, match=r"edge_flow of shape \(300, 1000000\) \(float32\) needs 1200000000 "
                                               r"bytes, over the device's maxBufferSize = 268435456 bytes"):
        gpu_backend.runtime.pool.new_large_array(gpu_backend, (300, 1_000_000), np.float32, "edge_flow")
