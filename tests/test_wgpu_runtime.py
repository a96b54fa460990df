"""Runtime tests of the wgpu backend: adapters, limits, buffers, uploads/readbacks, errors,
dispatch folding, bounds guards, caches and steady-state allocation. Run on every adapter."""

from __future__ import annotations

import gc
import json
import re

import numpy as np
import pytest

from energetic_wgpu.errors import (
    BackendUnavailable,
    DeviceError,
    DeviceLimitError,
    InvalidArgumentError,
    ShaderCompileError,
)
from energetic_wgpu.graph import Graph

webgpu = pytest.importorskip("energetic_wgpu.backends.webgpu", reason="wgpu backend not importable")
WgpuBackend = webgpu.WgpuBackend
DeviceArray = webgpu.DeviceArray

try:
    ADAPTERS = webgpu.list_adapters()
    _NO_ADAPTER_REASON = "no wgpu adapter found"
except BackendUnavailable as exc:  # pragma: no cover - environment
    ADAPTERS = []
    _NO_ADAPTER_REASON = str(exc)


def _small_graph(rng: np.random.Generator) -> Graph:
    degs = np.array([0, 1, 4, 5, 3, 70, 0, 2, 300, 9])
    n = degs.size
    src = np.repeat(np.arange(n), degs)
    dst = rng.integers(0, n, size=src.size)
    dst[:280] = 6  # node 6 gets in-degree >= 280 (workgroup path)
    return Graph.from_edges(src, dst, n)


# --------------------------------------------------------------------------- adapters


def test_list_adapters_fields():
    if not ADAPTERS:
        pytest.skip(_NO_ADAPTER_REASON)
    for a in ADAPTERS:
        print(a["index"], a["name"], a["backend_type"], a["description"])
        assert set(a) >= {"index", "name", "description", "backend_type", "adapter_type", "limits", "features"}
        assert a["limits"]["max_storage_buffer_binding_size"] > 0
        assert a["features"] == sorted(a["features"])


def test_unknown_adapter_lists_found():
    if not ADAPTERS:
        pytest.skip(_NO_ADAPTER_REASON)
    with pytest.raises(BackendUnavailable, match="no adapter matches 'no-such-gpu'.*adapters found"):
        WgpuBackend(adapter="no-such-gpu")
    with pytest.raises(BackendUnavailable, match="out of range"):
        WgpuBackend(adapter=len(ADAPTERS) + 3)


def test_constructor_argument_errors():
    if not ADAPTERS:
        pytest.skip(_NO_ADAPTER_REASON)
    with pytest.raises(InvalidArgumentError, match="float32"):
        WgpuBackend(dtype="float64")
    with pytest.raises(InvalidArgumentError, match="limits"):
        WgpuBackend(limits="huge")


def test_select_adapter_by_backend_name():
    names = {a["backend_type"].lower() for a in ADAPTERS}
    if not names:
        pytest.skip(_NO_ADAPTER_REASON)
    for name in names:
        b = WgpuBackend(adapter=name.upper())
        assert b.adapter_info["backend_type"].lower() == name
        assert name in b.describe().lower()


def test_default_limits(gpu_backend):
    lim = gpu_backend.limits
    assert lim["max_storage_buffer_binding_size"] == 134217728
    assert lim["max_storage_buffers_per_shader_stage"] == 8
    assert lim["max_compute_invocations_per_workgroup"] == 256
    assert lim["max_compute_workgroup_storage_size"] == 16384
    assert lim["max_compute_workgroups_per_dimension"] == 65535
    assert lim["max_buffer_size"] == 268435456
    assert gpu_backend.describe().startswith("wgpu: ")


# --------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("n", [0, 1, 3, 5, 1023])
def test_round_trip(gpu_backend, n):
    rng = np.random.default_rng(n)
    cases = [
        rng.standard_normal(n).astype(np.float32),
        rng.integers(-(2**31), 2**31 - 1, size=n, dtype=np.int64).astype(np.int32),
        rng.random(n) > 0.5,
        rng.standard_normal((n, 3)).astype(np.float64),  # float64 -> float32
    ]
    for host in cases:
        dev = gpu_backend.asarray(host)
        assert isinstance(dev, DeviceArray) and gpu_backend.is_array(dev)
        assert dev.shape == host.shape
        back = gpu_backend.to_numpy(dev)
        expected = host.astype(np.float32) if host.dtype.kind == "f" else host
        assert back.dtype == expected.dtype
        np.testing.assert_array_equal(back, expected)


def test_asarray_scalars_lists_and_same_backend(gpu_backend):
    x = gpu_backend.asarray([1.5, 2.5])
    assert gpu_backend.asarray(x) is x
    np.testing.assert_array_equal(gpu_backend.to_numpy(x), np.array([1.5, 2.5], np.float32))
    s = gpu_backend.asarray(3)
    assert s.dtype == np.int32 and s.shape == ()
    assert gpu_backend.to_numpy(s) == 3
    z = gpu_backend.zeros((2, 3))
    np.testing.assert_array_equal(gpu_backend.to_numpy(z), np.zeros((2, 3), np.float32))
    zb = gpu_backend.zeros((4,), dtype=bool)
    assert gpu_backend.to_numpy(zb).dtype == np.bool_


def test_bad_dtypes_and_ranges(gpu_backend):
    with pytest.raises(InvalidArgumentError, match="complex"):
        gpu_backend.asarray(np.ones(3, dtype=np.complex64))
    with pytest.raises(InvalidArgumentError, match="int32"):
        gpu_backend.asarray(np.array([2**40], dtype=np.int64))
    with pytest.raises(InvalidArgumentError):
        gpu_backend.asarray(np.array(["a", "b"]))


def test_array_protocol_is_explicit(gpu_backend):
    x = gpu_backend.asarray(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="to_numpy"):
        np.asarray(x)


def test_oversized_array_refused_then_usable(gpu_backend):
    limit = gpu_backend.limits["max_storage_buffer_binding_size"]
    n = limit // 4 + 1
    before = gpu_backend.counters.buffers_created
    with pytest.raises(DeviceLimitError, match=r"maxStorageBufferBindingSize = 134217728") as info:
        gpu_backend.zeros((n,))
    msg = str(info.value)
    assert f"({n},)" in msg and str(n * 4) in msg
    assert gpu_backend.counters.buffers_created == before  # refused before any allocation
    x = gpu_backend.asarray(np.arange(7, dtype=np.float32))
    np.testing.assert_array_equal(gpu_backend.to_numpy(gpu_backend.add(x, x)), 2 * np.arange(7, dtype=np.float32))


def test_read_async(gpu_backend):
    x = gpu_backend.asarray(np.arange(10, dtype=np.float32))
    y = gpu_backend.add(x, x)
    h = gpu_backend.read_async(y)
    h2 = gpu_backend.read_async(gpu_backend.asarray(np.zeros(0, np.float32)))
    np.testing.assert_array_equal(h.result(), 2 * np.arange(10, dtype=np.float32))
    assert h.done() and h2.result().shape == (0,)


def test_lazy_encoding_one_submit(gpu_backend):
    x = gpu_backend.asarray(np.arange(100, dtype=np.float32))
    gpu_backend.synchronize()
    c = gpu_backend.counters
    s0, d0 = c.submits, c.dispatches
    y = x
    for _ in range(10):
        y = gpu_backend.add(y, x)
    assert c.submits == s0  # nothing submitted yet
    assert c.dispatches == d0 + 10
    out = gpu_backend.to_numpy(y)
    assert c.submits == s0 + 1
    np.testing.assert_array_equal(out, 11 * np.arange(100, dtype=np.float32))


def test_buffer_reuse_after_release(gpu_backend):
    """A buffer released while commands using it are pending is recycled only after submit."""
    x = gpu_backend.asarray(np.full(64, 3.0, np.float32))
    y = gpu_backend.add(x, x)
    del x
    gc.collect()
    z = gpu_backend.asarray(np.full(64, 5.0, np.float32))  # must not land in x's buffer before y runs
    np.testing.assert_array_equal(gpu_backend.to_numpy(y), np.full(64, 6.0, np.float32))
    np.testing.assert_array_equal(gpu_backend.to_numpy(z), np.full(64, 5.0, np.float32))


# --------------------------------------------------------------------------- errors


def test_shader_compile_error_then_usable(gpu_backend):
    rt = gpu_backend.runtime
    with pytest.raises(ShaderCompileError) as info:
        rt.pipelines.shader_module(("broken_test.wgsl",), code="@compute @workgroup_size(1) fn main( { let x = ; }")
    msg = str(info.value)
    assert "broken_test.wgsl" in msg
    assert re.search(r"expected|error|unexpected", msg, re.IGNORECASE)
    x = gpu_backend.asarray(np.ones(5, np.float32))
    np.testing.assert_array_equal(gpu_backend.to_numpy(gpu_backend.add(x, x)), np.full(5, 2.0, np.float32))


def test_device_error_on_submit_then_usable(gpu_backend):
    a = gpu_backend.asarray(np.ones(5, np.float32))
    b = gpu_backend.asarray(np.ones(5, np.float32))
    gpu_backend.runtime.copy_buffer(a, b, 1 << 20)  # overruns: rejected at finish()
    with pytest.raises(DeviceError, match="rejected"):
        gpu_backend.runtime.flush()
    np.testing.assert_array_equal(gpu_backend.to_numpy(gpu_backend.add(a, b)), np.full(5, 2.0, np.float32))


def test_dispatch_argument_errors(gpu_backend):
    x = gpu_backend.asarray(np.ones(4, np.float32))
    with pytest.raises(InvalidArgumentError, match=r"kernel add binds \['a', 'b', 'out'\]; missing \['out'\], unknown \[\]"):
        gpu_backend.runtime.dispatch("add", threads=4, uniform=dict(n=4), a=x, b=x)
    with pytest.raises(InvalidArgumentError, match=r"unknown \['c'\]"):
        gpu_backend.runtime.dispatch("add", threads=4, uniform=dict(n=4), a=x, b=x, out=x, c=x)
    with pytest.raises(InvalidArgumentError, match=r"uniform AddParams: missing fields \['n', 'lo', 'count', 'base', "
                                                   r"'off', 'dim'\], unknown fields \['size'\]"):
        gpu_backend.runtime.dispatch("add", threads=4, uniform=dict(size=4), a=x, b=x, out=x)
    with pytest.raises(InvalidArgumentError, match="exactly one of threads= or workgroups="):
        gpu_backend.runtime.dispatch("add", uniform=dict(n=4, lo=0, count=0, base=0, off=0, dim=0), a=x, b=x, out=x)
    with pytest.raises(KeyError, match="unknown kernel"):
        gpu_backend.runtime.dispatch("nope", threads=4, x=x)
    np.testing.assert_array_equal(gpu_backend.to_numpy(gpu_backend.add(x, x)), np.full(4, 2.0, np.float32))  # still usable


# --------------------------------------------------------------------------- dispatch


def test_fold():
    from energetic_wgpu.backends.webgpu.encoder import fold
    assert fold(1) == (1, 1)
    assert fold(65535) == (65535, 1)
    gx, gy = fold(65536)
    assert gy == 2 and gx * gy >= 65536 and gx <= 65535
    gx, gy = fold(10**7)
    assert gx <= 65535 and gy <= 65535 and gx * gy >= 10**7


def test_2d_dispatch_folding(gpu_backend):
    n = 65535 * 64 + 1000  # add: WG = 64 -> 65,551 workgroups -> folded into (gx, 2)
    a = np.arange(n, dtype=np.float32)
    da = gpu_backend.asarray(a)
    gpu_backend.runtime.trace = []
    try:
        out = gpu_backend.add(da, da)
        rec = gpu_backend.runtime.trace[-1]
    finally:
        gpu_backend.runtime.trace = None
    assert rec["kernel"] == "add" and rec["workgroups"][1] == 2
    json.dumps(rec)
    res = gpu_backend.to_numpy(out)
    np.testing.assert_array_equal(res, 2 * a)


# --------------------------------------------------------------------------- shaders


def test_every_kernel_builds_and_every_entry_point_is_declared(gpu_backend):
    from energetic_wgpu.backends.webgpu.kernels import KERNELS
    from energetic_wgpu.wgsl import shader_names, shader_source

    for spec in KERNELS.values():
        gpu_backend.runtime.pipelines.pipeline(spec)
        json.loads(spec.to_json())
        text = "\n".join(shader_source(s) for s in spec.sources)
        assert re.search(rf"@compute\s+@workgroup_size\(WG\)\s*\n\s*fn {spec.entry_point}\(", text), spec.name
    by_file: dict[str, set[str]] = {}
    for spec in KERNELS.values():
        by_file.setdefault(spec.sources[-1], set()).add(spec.entry_point)
    forward_files = {"copy.wgsl", "elementwise.wgsl", "edge_logits.wgsl", "edge_probs.wgsl",
                     "energy_scatter.wgsl", "edge_flow.wgsl", "metrics.wgsl", "reduce.wgsl"}
    assert forward_files <= set(shader_names())
    for name in shader_names():
        if name == "common.wgsl" or name not in by_file:
            continue  # files of kernels registered elsewhere are checked by their own tests
        declared = set(re.findall(r"@compute\s+@workgroup_size\(WG\)\s*\n\s*fn (\w+)\(", shader_source(name)))
        assert declared, name
        assert declared <= by_file.get(name, set()), (name, declared)


def test_shader_source_unknown_name_lists_names():
    from energetic_wgpu.wgsl import shader_source

    with pytest.raises(KeyError, match="edge_probs.wgsl"):
        shader_source("no_such_shader")


def _poison_outputs(gpu_backend, monkeypatch):
    """Make every op output live in a buffer whose bytes past the data are a poison pattern.

    The pattern is a finite float (-1234.5677), not a NaN: NaN + NaN returns the first NaN's
    payload on x86, which would hide a kernel that writes a[i] + b[i] past the end."""
    made = []
    orig = gpu_backend.empty
    pattern = np.uint32(0xC49A522B)

    def poisoned(shape, dtype=np.float32):
        arr = orig(shape, dtype)
        words = arr.pooled.size // 4
        gpu_backend.runtime.upload(arr.pooled, np.full(words, pattern, np.uint32))
        made.append(arr)
        return arr

    monkeypatch.setattr(gpu_backend, "empty", poisoned)
    return made, pattern


def test_bounds_guards_with_poisoned_padding(gpu_backend, monkeypatch):
    rng = np.random.default_rng(3)
    g = _small_graph(rng)
    n, e = g.num_nodes, g.num_edges
    q = rng.standard_normal((n, 3)).astype(np.float32)
    k = rng.standard_normal((n, 3)).astype(np.float32)
    bias = rng.standard_normal(e).astype(np.float32)
    en = rng.standard_normal((3, n)).astype(np.float32)
    made, pattern = _poison_outputs(gpu_backend, monkeypatch)
    logits = gpu_backend.edge_logits(g, q, k, bias)
    pi = gpu_backend.segment_softmax(g, logits, 1.0, 4)
    gpu_backend.segment_topk(g, logits, 2)
    nxt = gpu_backend.energy_scatter(g, en, pi, 0.5, None, True)
    gpu_backend.edge_flow(g, en, pi)
    gpu_backend.step_metrics(g, en, nxt, pi)
    gpu_backend.sum_squares([logits, nxt])
    gpu_backend.add(logits, logits)
    gpu_backend.copy(gpu_backend.asarray(np.arange(5, dtype=np.float32)))
    assert len(made) >= 10
    for arr in made:
        raw = gpu_backend.runtime.readback.read_raw(arr.pooled, arr.pooled.size).view(np.uint32)
        tail = raw[arr.size:]
        assert tail.size > 0
        assert np.all(tail == pattern), f"an op wrote past the end of an output of shape {arr.shape}"


def test_copy_vec4_tail(gpu_backend):
    for n in (1, 3, 5, 8, 1023):
        x = np.arange(n, dtype=np.float32) + 0.5
        np.testing.assert_array_equal(gpu_backend.to_numpy(gpu_backend.copy(x)), x)


# --------------------------------------------------------------------------- caches / steady state


def _forward(gpu_backend, g, q, k, bias, en, act):
    logits = gpu_backend.edge_logits(g, q, k, bias)
    pi = gpu_backend.segment_softmax(g, logits, 0.8, 4)
    nxt = gpu_backend.energy_scatter(g, en, pi, 0.9, act, True)
    flow = gpu_backend.edge_flow(g, en, pi, 0.9, act)
    met = gpu_backend.step_metrics(g, en, nxt, pi, 0.9, act)
    norm = gpu_backend.sum_squares([logits, nxt])
    return [gpu_backend.to_numpy(a) for a in (logits, pi, nxt, flow, met, norm)]


def test_steady_state_no_allocation_and_bit_identical(gpu_backend):
    rng = np.random.default_rng(5)
    g = _small_graph(rng)
    n, e = g.num_nodes, g.num_edges
    q = gpu_backend.asarray(rng.standard_normal((n, 4)).astype(np.float32))
    k = gpu_backend.asarray(rng.standard_normal((n, 4)).astype(np.float32))
    bias = gpu_backend.asarray(rng.standard_normal(e).astype(np.float32))
    en = gpu_backend.asarray(rng.standard_normal((2, n)).astype(np.float32))
    act = gpu_backend.asarray(rng.random((2, n)) > 0.2)
    first = _forward(gpu_backend, g, q, k, bias, en, act)
    gc.collect()
    c = gpu_backend.counters
    snap = c.snapshot()
    third = _forward(gpu_backend, g, q, k, bias, en, act)
    gc.collect()
    after = c.snapshot()
    for key in ("buffers_created", "bind_groups_created", "pipelines_created", "shader_modules_created",
                "uniform_buffers_created", "bytes_uploaded"):
        assert after[key] == snap[key], (key, snap[key], after[key])
    assert after["dispatches"] > snap["dispatches"]
    for a, b in zip(first, third):
        assert a.tobytes() == b.tobytes()


def test_counters_reset(gpu_backend):
    gpu_backend.counters.reset()
    assert all(v == 0 for v in gpu_backend.counters.snapshot().values())


def test_adapter_selector_digit_string_is_an_index():
    """adapter="1" (from a CLI flag or a config file) means index 1, not a name substring."""
    from energetic_wgpu.backends.webgpu import WgpuBackend, list_adapters

    adapters = list_adapters()
    if len(adapters) < 2:
        pytest.skip("needs two adapters")
    be = WgpuBackend(adapter="1")
    assert adapters[1]["backend_type"] in be.describe()
