"""Index arithmetic past 2^32: kernels whose range is a product of sizes (edge_flow and
step_metrics over [B, E]) locate a workgroup's (row, first column) with ``block_origin``
(shaders/common.wgsl) instead of a flat ``w * span``, which wraps in u32 (B = 257,
E = 16.7M gives B*E > 2^32).

The helper runs here in a small test kernel at workgroup indices near 2^32, where the flat
arithmetic gives wrong rows; the ops using it are checked against NumPy with B*E that is not a
multiple of the span (rows share no workgroup) and with one batch row per 2-D-folded grid line.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity

from energetic_wgpu.graph import Graph
from energetic_wgpu.wgsl import shader_source

_PROBE = """
@group(0) @binding(0) var<storage, read> cases: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> got: array<vec2<u32>>;

@compute @workgroup_size(64)
fn probe(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < arrayLength(&cases)) {
        let c = cases[i];  // (w, blocks, span, item)
        let rc = block_origin(c.x, c.y, c.z);
        got[i] = vec2<u32>(rc.x, rc.y + c.w);
    }
}
"""

_SPAN = 256 * 16  # metrics_partials' items per workgroup


def _cases() -> np.ndarray:
    """(w, blocks, span, item) with w * span far past 2^32: workgroups of an [B, E] grid with
    B = 257 (and more) rows of E = 16.7M edges, the first and last of rows, and u32's edge."""
    out = []
    for rows, cols, span in ((257, 2**24, _SPAN), (300, 16_700_001, _SPAN), (70_000, 100_000, 64),
                             (2**20, 4095, _SPAN), (2, 2**31 + 5, 64)):
        blocks = -(-cols // span)
        for w in (0, blocks - 1, blocks, rows * blocks // 2 + 1, rows * blocks - 1):
            for item in (0, span - 1):
                if w < 2**32:
                    out.append((w, blocks, span, item))
    out.append((2**32 - 1, 1, 1, 0))
    out.append((2**32 - 1, 2**32 - 1, 2**20, 2**20 - 1))
    return np.array(out, dtype=np.uint64)


def _run_probe(backend, cases: np.ndarray) -> np.ndarray:
    import wgpu

    dev = backend.runtime.device
    src = shader_source("common.wgsl").replace("override WG: u32 = 64u;", "const WG: u32 = 64u;") + _PROBE
    module = dev.create_shader_module(code=src)
    pipe = dev.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "probe"})
    data = cases.astype(np.uint32)
    inp = dev.create_buffer_with_data(data=data.tobytes(), usage=wgpu.BufferUsage.STORAGE)
    out = dev.create_buffer(size=8 * len(cases), usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    bg = dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": inp, "offset": 0, "size": inp.size}},
        {"binding": 1, "resource": {"buffer": out, "offset": 0, "size": out.size}},
    ])
    enc = dev.create_command_encoder()
    cp = enc.begin_compute_pass()
    cp.set_pipeline(pipe)
    cp.set_bind_group(0, bg)
    cp.dispatch_workgroups(-(-len(cases) // 64))
    cp.end()
    dev.queue.submit([enc.finish()])
    return np.frombuffer(dev.queue.read_buffer(out), dtype=np.uint32).reshape(-1, 2)


def test_block_origin_past_2_32(gpu_backend):
    cases = _cases()
    w, blocks, span, item = (cases[:, i].astype(object) for i in range(4))
    want = np.stack([w // blocks, (w % blocks) * span + item], axis=1).astype(np.uint64)
    got = _run_probe(gpu_backend, cases)
    np.testing.assert_array_equal(got.astype(np.uint64), want)
    # the old flat arithmetic (item i = w * span + lid in u32, then b = i / E) wraps on these:
    # its row of the wrapped index differs from the true one
    flat = w * span + item
    wrapped = flat % 2**32
    cols = blocks * span  # a row's length rounded up to whole workgroups
    assert sum(1 for f, c, r in zip(wrapped, cols, want[:, 0]) if f // c != r) == sum(flat >= 2**32) >= 9


def _graph(n: int, e: int, seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    src = np.sort(rng.integers(0, n, e))
    return Graph.from_edges(src, rng.integers(0, n, e), num_nodes=n)


@pytest.mark.parametrize("b,n,e", [(3, 50, 4097), (5, 7, 8191), (2, 4000, 130), (1, 9000, 12_289), (0, 20, 30)])
def test_flow_and_metrics_over_row_grid(gpu_backend, np_backend, b, n, e):
    """edge_flow and step_metrics with B*E split into rows of edge blocks: parity with NumPy
    (E not a multiple of the 64 / 4096 items of a workgroup, so a flat layout would mix rows)."""
    g = _graph(n, e, seed=b + n)
    rng = np.random.default_rng(e)
    en = rng.random((b, n), dtype=np.float32) * (rng.random((b, n)) < 0.7)
    nxt = rng.random((b, n), dtype=np.float32)
    pi = np_backend.segment_softmax(g, rng.standard_normal(e).astype(np.float32), top_k=3)
    act = rng.random((b, n)) < 0.8
    for a in (None, act):
        ref = np_backend.edge_flow(g, en, pi, 0.7, a)
        got = gpu_backend.to_numpy(gpu_backend.edge_flow(g, en, pi, 0.7, a))
        assert got.shape == (b, e)
        assert_parity(got, ref)
        m_ref = np.asarray(np_backend.step_metrics(g, en, nxt, pi, 0.7, a))
        m = gpu_backend.to_numpy(gpu_backend.step_metrics(g, en, nxt, pi, 0.7, a))
        assert_parity(m, m_ref)
        again = gpu_backend.to_numpy(gpu_backend.step_metrics(g, en, nxt, pi, 0.7, a))
        assert m.tobytes() == again.tobytes()
