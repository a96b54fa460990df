"""Memory accounting (``backend.memory()``) and the limits in use (``limits="adapter"``,
``max_binding_bytes``) on every backend.

Sizes are chosen so every packed region is a multiple of 256 bytes: the device bytes of the
parameters are then exactly 4 * (2*N*d + E).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from conftest import ADAPTERS, ADAPTER_ERROR

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends import get_backend
from energetic_wgpu.backends.base import MEMORY_PURPOSES
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import DeviceLimitError, InvalidArgumentError

N, D, E = 64, 4, 256  # q, k: 1024 bytes each; bias 1024 bytes
PARAM_BYTES = 4 * (2 * N * D + E)
STEP_STATE_BYTES = 256  # AdamW's [3] step state: one 256-byte pool bucket on wgpu


def _graph() -> Graph:
    src = np.repeat(np.arange(N), E // N)
    dst = (src * 7 + np.tile(np.arange(E // N), N)) % N
    return Graph.from_edges(src, dst, num_nodes=N)


def _params(seed: int = 0) -> RouterParams:
    rng = np.random.default_rng(seed)
    return RouterParams(q=rng.standard_normal((N, D)).astype(np.float32),
                        k=rng.standard_normal((N, D)).astype(np.float32),
                        bias=rng.standard_normal(E).astype(np.float32), tau=1.0, alpha=0.9, top_k=0)


def _delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


def test_memory_by_purpose_wgpu(gpu_backend):
    """Differences of memory() on the shared backend (other tests' arrays stay as they are:
    the garbage collector is held off so that none of theirs goes in between)."""
    be = gpu_backend
    gc.collect()
    gc.disable()
    try:
        m0 = be.memory()
        assert tuple(m0) == MEMORY_PURPOSES
        assert m0["total"] == sum(m0[k] for k in MEMORY_PURPOSES[:-1])
        g = _graph()
        router = Router(g, _params(), be)
        d1 = _delta(be.memory(), m0)
        assert d1["parameters"] == PARAM_BYTES and d1["optimizer"] == 0
        opt = AdamW(router, lr=1e-3)
        d2 = _delta(be.memory(), m0)
        assert d2["parameters"] == PARAM_BYTES
        assert d2["optimizer"] == 2 * PARAM_BYTES + STEP_STATE_BYTES
        router.forward(np.ones((2, N), np.float32), steps=1)
        m3 = be.memory()
        # graph data (row_ptr, rev_ptr [N+1], col_idx, src [E], rev_pairs [E, 2], sink [N], ...):
        # each array in a pool bucket of 256-byte steps
        arrays = [v for v in vars(be.graph_data(g)).values() if hasattr(v, "nbytes") and hasattr(v, "pooled")]
        assert len(arrays) >= 6
        assert m3["graph"] - m0["graph"] == sum(max(256, -(-a.nbytes // 256) * 256) for a in arrays) >= 5376
        del arrays
        assert m3["total"] == sum(m3[k] for k in MEMORY_PURPOSES[:-1])
        assert m3["workspace"] > 0  # uniform buffers, the dummy binding, staging
        assert all(isinstance(v, int) and v >= 0 for v in m3.values())
        # freeing returns: the parameters' and moments' buffers go back to the pool
        del opt, router
        be.synchronize()
        d4 = _delta(be.memory(), m0)
        assert d4["parameters"] == 0 and d4["optimizer"] == 0
        assert be.memory()["pool_free"] >= m3["pool_free"] + 3 * PARAM_BYTES
        del g
        assert be.memory()["graph"] == m0["graph"]
    finally:
        gc.enable()
    be.runtime.trim()
    assert be.memory()["pool_free"] == 0


def test_memory_numpy():
    be = NumpyBackend()
    assert be.memory()["parameters"] == 0
    g = _graph()
    router = Router(g, _params(), be)
    opt = AdamW(router, lr=1e-3)
    router.forward(np.ones((2, N), np.float32), steps=1)
    m = be.memory()
    assert tuple(m) == MEMORY_PURPOSES
    assert m["parameters"] == PARAM_BYTES
    assert m["optimizer"] == 2 * PARAM_BYTES + 3 * 4
    assert m["graph"] > 2 * E * 8  # src and col as intp at least
    assert m["activations"] is None and m["pool_free"] == 0
    assert m["total"] == m["graph"] + m["parameters"] + m["optimizer"] + m["workspace"]
    del opt, router
    gc.collect()
    assert be.memory()["parameters"] == 0 and be.memory()["optimizer"] == 0


def test_tag_memory_rejects_unknown_purpose(backend):
    with pytest.raises(InvalidArgumentError, match=r"purpose must be one of \['graph', 'parameters'"):
        backend.tag_memory([backend.zeros((3,))], "weights")


def _second_device_ok(gpu_backend) -> None:
    """Skip on Mesa's OpenGL adapter: a second device there, made and dropped while the shared
    one is in use, can abort wgpu-native's poller thread. (The limit paths are the same on
    every adapter; the shared-backend tests above and below run on OpenGL too.)"""
    if gpu_backend.adapter_info.get("backend_type", "").lower() == "opengl":
        pytest.skip("a second wgpu device on the OpenGL adapter can abort wgpu-native's poller thread")


def test_limits_in_use_default_and_adapter(gpu_backend):
    from energetic_wgpu.backends.webgpu import WgpuBackend

    assert gpu_backend.limits_in_use() == {"limits_mode": "default", "max_binding_bytes": 134217728,
                                           "max_storage_buffer_binding_size": 134217728,
                                           "max_buffer_size": 268435456}
    _second_device_ok(gpu_backend)
    kind = gpu_backend.adapter_info["backend_type"]
    adapter_max = next(a for a in ADAPTERS if a["backend_type"] == kind)["limits"]
    big = WgpuBackend(adapter=kind.lower(), limits="adapter")  # not get_backend: no cached second device
    got = big.limits_in_use()
    assert got["limits_mode"] == "adapter"
    assert got["max_binding_bytes"] == adapter_max["max_storage_buffer_binding_size"]
    assert got["max_buffer_size"] == adapter_max["max_buffer_size"]
    assert big.limits["max_compute_workgroup_storage_size"] == adapter_max["max_compute_workgroup_storage_size"]
    del big
    gc.collect()


def test_max_binding_bytes_forces_a_small_limit(gpu_backend):
    from energetic_wgpu.backends.webgpu import WgpuBackend

    def check(be):
        assert be.limits_in_use()["max_binding_bytes"] == 2**20
        x = be.zeros((2**18,))  # exactly 1 MiB: allowed
        assert be.to_numpy(x).shape == (2**18,)
        before = be.counters()["buffers_created"]
        with pytest.raises(DeviceLimitError, match=r"needs 1048580 bytes, over max_binding_bytes = 1048576 bytes"):
            be.zeros((2**18 + 1,))
        assert be.counters()["buffers_created"] == before
        y = be.asarray(np.arange(5, dtype=np.float32))
        np.testing.assert_array_equal(be.to_numpy(be.add(y, y)), 2 * np.arange(5, dtype=np.float32))

    with gpu_backend.binding_limit(2**20):  # at run time, on the shared backend
        check(gpu_backend)
    assert gpu_backend.limits_in_use()["max_binding_bytes"] == 134217728
    assert gpu_backend.to_numpy(gpu_backend.zeros((2**18 + 1,))).shape == (2**18 + 1,)
    _second_device_ok(gpu_backend)
    small = WgpuBackend(adapter=gpu_backend.adapter_info["backend_type"].lower(), max_binding_bytes=2**20)
    check(small)  # at construction
    del small
    gc.collect()


@pytest.mark.parametrize("value,match", [
    (True, "must be None or an int"), (1.5, "must be None or an int"), ("1MiB", "must be None or an int"),
    (0, "a multiple of 256 and at least 256 bytes, got 0"), (1000, "got 1000"), (-256, "got -256"),
    (2**40, r"at most the device's maxStorageBufferBindingSize = 134217728 bytes \(default limits\), got"),
])
def test_max_binding_bytes_errors(gpu_backend, value, match):
    from energetic_wgpu.backends.webgpu import WgpuBackend

    kind = gpu_backend.adapter_info["backend_type"].lower()
    with pytest.raises(InvalidArgumentError, match=match):
        WgpuBackend(adapter=kind, max_binding_bytes=value)  # refused before a device is made
    with pytest.raises(InvalidArgumentError, match="max_binding_bytes"):
        get_backend("wgpu", adapter=kind, max_binding_bytes=value)
    with pytest.raises(InvalidArgumentError, match=match):
        with gpu_backend.binding_limit(value):
            pass
    assert gpu_backend.limits_in_use()["max_binding_bytes"] == 134217728
    assert gpu_backend.to_numpy(gpu_backend.asarray([1.0, 2.0])).tolist() == [1.0, 2.0]


def test_bad_limits_value():
    if not ADAPTERS:
        pytest.skip(f"no wgpu adapter: {ADAPTER_ERROR}")
    for bad in ("max", 3, None):
        with pytest.raises(InvalidArgumentError, match=r"limits must be 'default' or 'adapter', got"):
            get_backend("wgpu", limits=bad)


def test_info_shows_limits_in_use(capsys):
    if not ADAPTERS:
        pytest.skip(f"no wgpu adapter: {ADAPTER_ERROR}")
    import json

    from energetic_wgpu.cli import main

    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for a in report["adapters"]:
        assert a["limits_in_use"] == {"limits_mode": "default", "max_binding_bytes": 134217728,
                                      "max_storage_buffer_binding_size": 134217728, "max_buffer_size": 268435456}
        assert a["limits"]["max_storage_buffer_binding_size"] >= 134217728  # the adapter's own maxima
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.count("limits in use (default): max_binding_bytes 134217728 (128 MiB), "
                     "max_buffer_size 268435456 (256 MiB)") == len(ADAPTERS)
    assert "adapter limits (limits='adapter'): max_buffer_size" in out
