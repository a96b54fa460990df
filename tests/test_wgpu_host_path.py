"""The host side of a GPU train step: cached dispatch records, fast uniform packing, one pass.

A repeated dispatch replays a cached record (pipeline, bind group, workgroup counts) instead of
rebuilding it; these tests pin down that this changes nothing observable: the same bits as the
full path, every dispatch still traced, records dropped with their buffers, and a steady-state
train step still one submit in one compute pass with no allocation.
"""

from __future__ import annotations

import gc
import struct

import numpy as np
import pytest

pytest.importorskip("energetic_wgpu.backends.webgpu", reason="wgpu backend not importable")

from energetic_wgpu.backends.webgpu import runtime as rtmod  # noqa: E402
from energetic_wgpu.graph import GraphConfig, build_lattice  # noqa: E402
from energetic_wgpu.optim import AdamW, CosineLR  # noqa: E402
from energetic_wgpu.router import Router, RouterParams  # noqa: E402

GRAPH = build_lattice(GraphConfig(layers=4, nodes_per_layer=24, local_neighbors=4, jump_neighbors=2, seed=1))
N = GRAPH.num_nodes


def _data(batch: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    en = np.zeros((batch, N), np.float32)
    en[:, :24] = rng.random((batch, 24))
    tgt = (rng.random((batch, N)) * 0.2).astype(np.float32)
    return en, tgt


def _router(be, **opt):
    params = RouterParams.init(GRAPH, 8, tau=0.7, alpha=0.95, top_k=3, seed=3, noise=0.1)
    r = Router(GRAPH, params, be)
    kw = dict(lr=0.01, betas=(0.85, 0.97), eps=1e-4, weight_decay=0.02, max_grad_norm=0.5)
    kw.update(opt)
    return r, AdamW(r, **kw)


# ------------------------------------------------------------------ uniform packing


_TRICKY_FLOATS = [0.0, -0.0, 1.0, -1.5, 1e-45, 1e-40, 3.4028234e38, 3.5e38, 1e39, -1e300, float("inf"),
                  float("-inf"), float("nan"), 0.1, 1 / 3, 2.0**-149, 65504.0]


@pytest.mark.parametrize("value", _TRICKY_FLOATS)
@pytest.mark.parametrize("cast", [float, np.float32, np.float64])
def test_fast_uniform_packing_matches_pack_uniforms_floats(value, cast):
    with np.errstate(over="ignore"):
        v = cast(value)
    values = (7, v, np.int32(-3), np.uint32(2**32 - 1))
    with np.errstate(over="ignore"):
        assert rtmod.pack_uniforms_fast(values) == rtmod.pack_uniforms(values)


@pytest.mark.parametrize(
    "values",
    [(), (0,), (True, False), (2**32 - 1,), (np.int64(5), np.uint64(6)), (1, 2, 3, 4, 5),
     (np.int32(-(2**31)), 1.5, 2, np.float32(-0.0), 9, 10, 11, 12, 13)],
)
def test_fast_uniform_packing_matches_pack_uniforms_ints(values):
    assert rtmod.pack_uniforms_fast(values) == rtmod.pack_uniforms(values)
    assert len(rtmod.pack_uniforms_fast(values)) % 16 == 0


@pytest.mark.parametrize("values", [(-1,), (2**32,), ("x",), (np.bool_(True), 1.0)])
def test_fast_uniform_packing_same_errors(values):
    try:
        expected = rtmod.pack_uniforms(values)
    except Exception as exc:  # the fast packer raises the same error type
        with pytest.raises(type(exc)):
            rtmod.pack_uniforms_fast(values)
    else:
        assert rtmod.pack_uniforms_fast(values) == expected


def test_struct_float_rounding_is_numpy_rounding():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(2000) * 10.0 ** rng.integers(-40, 38, 2000)
    for v in x:
        assert struct.pack("<f", float(v)) == np.float32(v).tobytes()


# ------------------------------------------------------------------ records


def _full_path(rt):
    """Force every dispatch through the full path (tracing disables the records)."""
    rt.trace = []


def test_records_give_the_same_bits_as_the_full_path(gpu_backend):
    """N train steps with cached records (raw pass calls or wgpu-py's methods) equal N steps
    through the full dispatch path, bit for bit, with a schedule (the lr slot changes)."""
    be = gpu_backend
    rt = be.runtime
    en, tgt = _data()
    results = []
    saved_raw = rt._raw_pass_calls
    try:
        for mode in ("full", "records", "records-public-calls"):
            rt.trace = None
            rt._raw_pass_calls = None if mode == "records-public-calls" else saved_raw
            r, opt = _router(be, schedule=CosineLR(0.02, 12))
            e, t = be.asarray(en), be.asarray(tgt)
            if mode == "full":
                _full_path(rt)
            losses = [r.train_step(e, t, opt, steps=2).loss for _ in range(12)]
            p = r.params()
            results.append((losses, p.q.tobytes(), p.k.tobytes(), p.bias.tobytes(), opt.state()["v"]["q"].tobytes()))
            rt.trace = None
    finally:
        rt.trace = None
        rt._raw_pass_calls = saved_raw
    assert results[0] == results[1] == results[2]


def test_every_dispatch_is_traced_even_when_cached(gpu_backend):
    be = gpu_backend
    rt = be.runtime
    x = be.asarray(np.arange(40, dtype=np.float32))
    for _ in range(3):
        be.add(x, x)  # records exist now
    rt.trace = []
    try:
        d0 = be.counters.dispatches
        for _ in range(4):
            be.add(x, x)
        assert len(rt.trace) == 4 == be.counters.dispatches - d0
        assert all(e["kernel"] == "add" for e in rt.trace)
    finally:
        rt.trace = None
    be.synchronize()


def test_records_are_dropped_with_their_buffers(gpu_backend):
    """trim() destroys free buffers; records binding them are forgotten, and new buffers with
    other uids get correct results."""
    be = gpu_backend
    rt = be.runtime
    for round_ in range(3):
        a = be.asarray(np.full(300, 2.0 + round_, np.float32))
        out = be.to_numpy(be.add(a, a))
        np.testing.assert_array_equal(out, np.full(300, 2.0 * (2.0 + round_), np.float32))
        uids = {a.pooled.uid}
        del a
        gc.collect()
        be.synchronize()
        rt.trim()
        for uid in uids:
            assert uid not in rt._records_by_uid
            assert not any(uid in rec.uids for rec in rt._records.values())


def test_uniform_eviction_drops_records(gpu_backend, monkeypatch):
    """A uniform buffer evicted from the content cache (and destroyed) takes its records with
    it; results stay correct."""
    be = gpu_backend
    rt = be.runtime
    be.synchronize()
    monkeypatch.setattr(rtmod, "_UNIFORM_CACHE_SIZE", 2)
    try:
        x = be.asarray(np.arange(64, dtype=np.float32))
        for _ in range(3):
            for n in (61, 62, 63, 64):
                y = be.empty((64,))
                be.runtime.dispatch("copy_vec4", [x, y], threads=-(-n // 4), uniforms=(n, -(-n // 4)))
                got = be.to_numpy(y)
                np.testing.assert_array_equal(got[:n], np.arange(n, dtype=np.float32))
        live = {p.uid for p in rt._uniforms.values()}
        for rec in rt._records.values():
            if rec.uniform_key is not None:
                assert rt._uniforms.get(rec.uniform_key) is not None and rec.uids[0] in live
    finally:
        monkeypatch.undo()
        be.synchronize()


# ------------------------------------------------------------------ steady state


@pytest.mark.parametrize("schedule", [None, "cosine"])
def test_steady_state_default_step_counters(gpu_backend, schedule):
    """The default train step on device arrays: exactly 1 submit, one compute pass, a fixed
    number of dispatches, and nothing created (buffers, bind groups, uniforms, pipelines)."""
    be = gpu_backend
    rt = be.runtime
    r, opt = _router(be, schedule=CosineLR(0.01, 500) if schedule else None)
    en, tgt = _data(batch=7)
    e, t = be.asarray(en), be.asarray(tgt)
    for _ in range(20):  # warm-up: pipelines, pool, records, lr ring slots
        r.train_step(e, t, opt)
    be.synchronize()
    passes = []
    orig = rt._ensure_pass

    def counting_ensure_pass():
        if rt._pass is None:
            passes.append(1)
        return orig()

    rt._ensure_pass = counting_ensure_pass
    try:
        per_step = []
        before = be.counters.snapshot()
        n = 8
        for _ in range(n):
            d0 = be.counters.dispatches
            r.train_step(e, t, opt)
            per_step.append(be.counters.dispatches - d0)
        after = be.counters.snapshot()
    finally:
        del rt._ensure_pass
    d = {k: after[k] - before[k] for k in after}
    assert d["submits"] == n
    assert len(passes) == n  # every step's dispatches are in one compute pass
    assert len(set(per_step)) == 1 and per_step[0] > 0
    for key in ("buffers_created", "bind_groups_created", "uniform_buffers_created", "pipelines_created",
                "shader_modules_created", "readbacks", "bytes_read_back"):
        assert d[key] == 0, (key, d[key])
    assert d["bytes_uploaded"] == (8 * n if schedule else 0)


def test_array_collected_in_a_cycle_returns_an_intact_buffer(gpu_backend):
    """An array that dies in a garbage cycle (finalizers in arbitrary order) returns a buffer
    that still works when the pool hands it out again."""
    be = gpu_backend
    be.synchronize()
    for _ in range(3):
        a = be.asarray(np.full(96, 1.0, np.float32))
        holder: list = [a]
        holder.append(holder)
        del a, holder
        gc.collect()
        b = be.asarray(np.full(96, 4.0, np.float32))
        np.testing.assert_array_equal(be.to_numpy(be.add(b, b)), np.full(96, 8.0, np.float32))
