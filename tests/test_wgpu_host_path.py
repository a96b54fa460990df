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

from energetic_wgpu.backends.webgpu.kernels import F32, I32, U32, VEC4, Uniform  # noqa: E402
from energetic_wgpu.errors import InvalidArgumentError  # noqa: E402
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

_U = Uniform("TestParams", a=U32, x=F32, i=I32, b=U32, _pad0=U32, _pad1=U32, _pad2=U32, _pad3=U32, off=VEC4)
_TRICKY_FLOATS = [0.0, -0.0, 1.0, -1.5, 1e-45, 1e-40, 3.4028234e38, 3.5e38, 1e39, -1e300, float("inf"),
                  float("-inf"), float("nan"), 0.1, 1 / 3, 2.0**-149, 65504.0]


def _fields(**kw):
    return {**dict(a=7, x=1.0, i=-3, b=2**32 - 1, off=(1, 2, 3, 4)), **kw}


@pytest.mark.parametrize("value", _TRICKY_FLOATS)
@pytest.mark.parametrize("cast", [float, np.float32, np.float64])
def test_fast_uniform_packing_matches_the_checked_path_floats(value, cast):
    """The struct fast path and the field-by-field path give the same bytes (f32 rounding as
    np.float32, overflow to inf)."""
    with np.errstate(over="ignore"):
        v = cast(value)
        expected = np.float32(v).tobytes()
    packed = _U.pack(_fields(x=v))
    assert packed == _U._pack_checked(_fields(x=v))
    assert packed[4:8] == expected and len(packed) == 48


@pytest.mark.parametrize("values", [dict(a=0, b=0), dict(a=True, b=False), dict(a=np.int64(5), b=np.uint64(6)),
                                    dict(a=np.uint32(2**32 - 1), i=np.int32(-(2**31)))])
def test_fast_uniform_packing_matches_the_checked_path_ints(values):
    assert _U.pack(_fields(**values)) == _U._pack_checked(_fields(**values))
    assert _U.pack(_fields(**values))[16:32] == b"\0" * 16  # padding fields are zero


@pytest.mark.parametrize("values, match", [(dict(a=-1), "a .u32. = -1 does not fit"),
                                           (dict(b=2**32), "b .u32. = 4294967296 does not fit"),
                                           (dict(i=2**31), "i .i32. = 2147483648 does not fit"),
                                           (dict(a="x"), "a .u32. must be an int"),
                                           (dict(a=1.5), "a .u32. must be an int"),
                                           (dict(off=(1, 2)), "off .vec4<u32>. needs 4 values")])
def test_uniform_packing_errors_name_the_field(values, match):
    with pytest.raises(InvalidArgumentError, match=match):
        _U.pack(_fields(**values))


def test_uniform_packing_missing_and_unknown_fields():
    with pytest.raises(InvalidArgumentError, match=r"missing fields \['x'\], unknown fields \['y'\]"):
        _U.pack({**{k: v for k, v in _fields().items() if k != "x"}, "y": 1})


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
    saved_raw = rt.encoder.raw
    try:
        for mode in ("full", "records", "records-public-calls"):
            rt.trace = None
            rt.encoder.raw = None if mode == "records-public-calls" else saved_raw
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
        rt.encoder.raw = saved_raw
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
            assert uid not in rt.encoder.records_by_uid
            assert not any(uid in rec.uids for rec in rt.encoder.records.values())


def test_uniform_eviction_drops_records(gpu_backend, monkeypatch):
    """A uniform buffer evicted from the content cache (and destroyed) takes its records with
    it; results stay correct."""
    be = gpu_backend
    rt = be.runtime
    be.synchronize()
    monkeypatch.setattr(rt.uniforms, "capacity", 2)
    try:
        x = be.asarray(np.arange(64, dtype=np.float32))
        for _ in range(3):
            for n in (61, 62, 63, 64):
                y = be.empty((64,))
                be.runtime.dispatch("copy_vec4", threads=-(-n // 4), uniform=dict(n=n, n_vec=-(-n // 4)), src=x, dst=y)
                got = be.to_numpy(y)
                np.testing.assert_array_equal(got[:n], np.arange(n, dtype=np.float32))
        live = {p.uid for p in rt.uniforms.buffers.values()}
        for rec in rt.encoder.records.values():
            if rec.uniform_key is not None:
                assert rt.uniforms.buffers.get(rec.uniform_key) is not None and rec.uids[0] in live
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
    per_step = []
    before = be.counters.snapshot()
    n = 8
    for _ in range(n):
        d0 = be.counters.dispatches
        r.train_step(e, t, opt)
        per_step.append(be.counters.dispatches - d0)
    after = be.counters.snapshot()
    d = {k: after[k] - before[k] for k in after}
    assert d["submits"] == n
    assert d["compute_passes"] == n  # every step's dispatches are in one compute pass
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


# ------------------------------------------------------------------ the wgpu-native fast path


def test_native_fast_path_is_version_gated_and_can_be_turned_off(monkeypatch):
    """Only the tested wgpu versions use wgpu-native's private entry points; any other version
    (and ENERGETIC_WGPU_RAW_PASS=0) gets None: the encoder then uses the public methods."""
    from energetic_wgpu.backends.webgpu import native

    assert native.raw_pass_calls(version="0.0.1") is None
    assert native.raw_pass_calls(version="99.0.0") is None
    monkeypatch.setenv("ENERGETIC_WGPU_RAW_PASS", "0")
    assert native.raw_pass_calls() is None
    monkeypatch.setenv("ENERGETIC_WGPU_RAW_PASS", "1")
    import wgpu

    calls = native.raw_pass_calls()
    if wgpu.__version__ in native.TESTED_WGPU_VERSIONS:
        assert calls is not None and len(calls) == 5
    else:
        assert calls is None


_TRAIN_5_STEPS = """
import numpy as np, energetic_wgpu as ew
g = ew.build_lattice(ew.GraphConfig(3, 16, 4, 2, seed=1))
r = ew.Router(g, ew.RouterParams.init(g, 4, top_k=2, seed=3), be)
opt = ew.AdamW(r, lr=1e-2, max_grad_norm=1.0)
e = np.random.default_rng(0).random((5, g.num_nodes), dtype=np.float32)
for _ in range(5):
    res = r.train_step(e, 0.5 * e, opt, steps=2)
result = [res.loss, r.params().q.tobytes().hex()]
"""


def test_public_api_path_in_a_fresh_process_gives_the_same_bits(gpu_backend):
    """A process with ENERGETIC_WGPU_RAW_PASS=0 (what any untested wgpu version gets) trains
    to the same bits as this one, which uses the fast path where available."""
    import json
    import os
    import subprocess
    import sys

    from energetic_wgpu.backends.webgpu import list_adapters

    info = gpu_backend.adapter_info
    index = next(a["index"] for a in list_adapters()
                 if a["backend_type"] == info.get("backend_type") and a["name"] == info.get("device"))
    script = (f"import json\nfrom energetic_wgpu.backends.webgpu import WgpuBackend\nbe = WgpuBackend(adapter={index})\n"
              f"assert be.runtime.encoder.raw is None\n{_TRAIN_5_STEPS}\nprint(json.dumps(result))\n")
    env = dict(os.environ, ENERGETIC_WGPU_RAW_PASS="0")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    here: dict = {"be": gpu_backend}
    exec(_TRAIN_5_STEPS, here)
    assert here["result"] == json.loads(proc.stdout.strip().splitlines()[-1])
