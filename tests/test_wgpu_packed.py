"""Packed parameters: DeviceArray views into one flat buffer and the one-dispatch AdamW update.

``backend.pack`` uploads arrays into one pooled buffer (regions at multiples of the device's
storage offset alignment) and returns views; ``Router.set_params`` packs q, k, bias and
``AdamW`` allocates m and v with the same layout, so the update is ONE dispatch
(``adamw_update_packed``). The per-array path (``adamw_update`` once per array) remains for
arrays that are not so laid out; both give bit-identical results.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from energetic_wgpu.backends.webgpu import ops_train
from energetic_wgpu.graph import GraphConfig, build_lattice
from energetic_wgpu.optim import AdamW, CosineLR
from energetic_wgpu.router import Router, RouterParams

GRAPH = build_lattice(GraphConfig(layers=4, nodes_per_layer=24, local_neighbors=4, jump_neighbors=2, seed=1))
N = GRAPH.num_nodes


def _data(batch: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    en = np.zeros((batch, N), np.float32)
    en[:, :24] = rng.random((batch, 24))
    tgt = (rng.random((batch, N)) * 0.2).astype(np.float32)
    return en, tgt


def _router(be, **opt):
    params = RouterParams.init(GRAPH, 8, tau=0.7, alpha=0.95, top_k=3, seed=0, noise=0.1)
    kw = dict(lr=0.01, betas=(0.85, 0.97), eps=1e-4, weight_decay=0.02, max_grad_norm=0.05,
              schedule=CosineLR(0.01, 20))
    kw.update(opt)
    r = Router(GRAPH, params, be)
    return r, AdamW(r, **kw)




def test_params_are_aligned_views_of_one_buffer(gpu_backend):
    r, opt = _router(gpu_backend)
    align = gpu_backend.runtime.offset_alignment
    assert align >= 4 and align % 4 == 0
    for group in (r.parameters(), opt.exp_avg, opt.exp_avg_sq):
        assert all(a.is_view for a in group)
        assert len({id(a.pooled) for a in group}) == 1
        assert all(a.offset % align == 0 for a in group)
    assert [a.offset for a in opt.exp_avg] == [a.offset for a in r.parameters()] == [a.offset for a in opt.exp_avg_sq]
    assert r.parameters()[0].pooled is not opt.exp_avg[0].pooled
    assert len({a.offset for a in r.parameters()}) == 3


def test_view_upload_download_round_trip(gpu_backend):
    be, rt = gpu_backend, gpu_backend.runtime
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(n).astype(np.float32) for n in (5, 1, 7, 0, 130)]
    arrays.append(rng.integers(-9, 9, (3, 3)).astype(np.int32))
    views = be.pack(arrays)
    assert len({id(v.pooled) for v in views}) == 1
    assert views[1].offset > 0 and views[2].offset > views[1].offset
    for a, v in zip(arrays, views):
        assert v.offset % rt.offset_alignment == 0
        got = be.to_numpy(v)
        assert got.dtype == a.dtype and got.tobytes() == a.tobytes()
        assert be.read_async(v).result().tobytes() == a.tobytes()
    # write into a view at a non-zero offset: the neighbours are untouched
    new = rng.standard_normal(7).astype(np.float32)
    rt.write(views[2], new)
    assert be.to_numpy(views[2]).tobytes() == new.tobytes()
    assert be.to_numpy(views[0]).tobytes() == arrays[0].tobytes()
    assert be.to_numpy(views[4]).tobytes() == arrays[4].tobytes()
    # reshape keeps the offset; ops read and write views
    r = views[4].reshape(10, 13)
    assert r.offset == views[4].offset
    np.testing.assert_array_equal(be.to_numpy(be.add(views[2], views[2])), new + new)
    np.testing.assert_array_equal(be.to_numpy(be.copy(views[2])), new)
    np.testing.assert_array_equal(be.to_numpy(be.copy(views[0])), arrays[0])
    # pack of device arrays copies on the device; zeros_like_packed keeps the layout
    again = be.pack(views[:3])
    assert [a.offset for a in again] == [v.offset for v in views[:3]]
    assert be.to_numpy(again[2]).tobytes() == new.tobytes()
    z = be.zeros_like_packed(views[:3])
    assert [a.offset for a in z] == [v.offset for v in views[:3]]
    assert all(not be.to_numpy(a).any() for a in z)


def test_views_keep_the_buffer_alive(gpu_backend):
    be, rt = gpu_backend, gpu_backend.runtime
    views = be.pack([np.arange(5, dtype=np.float32), np.arange(3, dtype=np.float32)])
    uid = views[0].pooled.uid
    keep = views[1]
    del views
    gc.collect()
    free = {p.uid for lst in rt.pool.free.values() for _, p in lst}
    assert uid not in free  # the remaining view holds the buffer
    np.testing.assert_array_equal(be.to_numpy(keep), np.arange(3, dtype=np.float32))
    del keep
    gc.collect()
    rt.flush()
    free = {p.uid for lst in rt.pool.free.values() for _, p in lst}
    assert uid in free or uid not in rt.pool.live


def test_fused_update_is_one_dispatch_and_two_fewer_per_step(gpu_backend):
    be, rt = gpu_backend, gpu_backend.runtime
    en, tgt = _data()
    ge, gt = be.asarray(en), be.asarray(tgt)

    def per_step(r, opt):
        for _ in range(ops_train.RING + 2):  # warm-up
            r.train_step(ge, gt, opt, steps=2)
        before = be.counters.snapshot()
        n = 5
        for _ in range(n):
            r.train_step(ge, gt, opt, steps=2)
        after = be.counters.snapshot()
        d = {k: after[k] - before[k] for k in after}
        assert d["submits"] == n
        assert d["buffers_created"] == 0 and d["bind_groups_created"] == 0 and d["uniform_buffers_created"] == 0
        assert d["dispatches"] % n == 0
        return d["dispatches"] // n

    r, opt = _router(be)
    fused = per_step(r, opt)
    r2, opt2 = _router(be)
    _unpack(be, r2, opt2)
    split = per_step(r2, opt2)
    assert split - fused == 2

    # exactly one AdamW update dispatch in the fused step (trace: every dispatch listed)
    rt.trace = []
    try:
        r.train_step(ge, gt, opt, steps=2)
    finally:
        trace, rt.trace = rt.trace, None
    names = [t["kernel"] for t in trace]
    assert names.count("adamw_update_packed") == 1 and names.count("adamw_update") == 0
    assert len(trace) == fused
    packed = next(t for t in trace if t["kernel"] == "adamw_update_packed")
    assert len(packed["bindings"]) == 8


def _unpack(be, r, opt):
    """Give the router and optimizer separate whole-buffer arrays (the per-array path)."""
    r.q, r.k, r.bias = [be.asarray(be.to_numpy(a)) for a in r.parameters()]
    opt.exp_avg = [be.asarray(be.to_numpy(a)) for a in opt.exp_avg]
    opt.exp_avg_sq = [be.asarray(be.to_numpy(a)) for a in opt.exp_avg_sq]
    assert not any(a.is_view for a in r.parameters())


def test_fused_and_per_array_paths_are_bit_identical(gpu_backend):
    be = gpu_backend
    en, tgt = _data(seed=2)
    ra, oa = _router(be)
    rb, ob = _router(be)
    _unpack(be, rb, ob)
    for _ in range(10):
        la = ra.train_step(en, tgt, oa, steps=2).loss
        lb = rb.train_step(en, tgt, ob, steps=2).loss
        assert la == lb
    sa, sb = oa.state(), ob.state()
    assert sa["t"] == sb["t"] == 10
    for key in ("m", "v"):
        for name in ("q", "k", "bias"):
            assert sa[key][name].tobytes() == sb[key][name].tobytes(), (key, name)
    for name in ("q", "k", "bias"):
        assert getattr(ra.params(), name).tobytes() == getattr(rb.params(), name).tobytes(), name
    # the norm returned by the step is the same too
    assert be.to_numpy(oa.last_grad_norm).tobytes() == be.to_numpy(ob.last_grad_norm).tobytes()


def test_load_state_keeps_the_packed_layout(gpu_backend):
    be = gpu_backend
    r, opt = _router(be)
    en, tgt = _data()
    for _ in range(3):
        r.train_step(en, tgt, opt, steps=2)
    state = opt.state()
    opt.load_state(state)
    assert [a.offset for a in opt.exp_avg] == [a.offset for a in r.parameters()]
    assert ops_train._packed_layout(r.parameters(), r.parameters(), opt.exp_avg, opt.exp_avg_sq) is None  # grads alias P
    grads = [be.asarray(np.zeros(a.shape, np.float32)) for a in r.parameters()]
    assert ops_train._packed_layout(r.parameters(), grads, opt.exp_avg, opt.exp_avg_sq) is not None
    back = opt.state()
    for key in ("m", "v"):
        for name in ("q", "k", "bias"):
            assert back[key][name].tobytes() == state[key][name].tobytes()


def test_numpy_pack_default(backend):
    arrays = [np.arange(3, dtype=np.float32), np.ones((2, 2), np.float32)]
    out = backend.pack(arrays)
    for a, b in zip(arrays, out):
        np.testing.assert_array_equal(backend.to_numpy(b), a)
    z = backend.zeros_like_packed(out)
    assert [tuple(x.shape) for x in z] == [(3,), (2, 2)]
    assert all(not backend.to_numpy(x).any() for x in z)


@pytest.mark.parametrize("bad", ["overlap", "mixed"])
def test_layout_mismatch_falls_back(gpu_backend, bad):
    be = gpu_backend
    r, opt = _router(be)
    params = r.parameters()
    grads = [be.asarray(np.zeros(a.shape, np.float32)) for a in params]
    m, v = list(opt.exp_avg), list(opt.exp_avg_sq)
    if bad == "overlap":
        m = [m[1], m[0], m[2]]
    else:
        v[2] = be.zeros(tuple(params[2].shape))
    assert ops_train._packed_layout(params, grads, m, v) is None
