"""Packed parameters and AdamW moments past one storage binding (packed.py, ops_train.py).

With a forced small binding limit (``backend.binding_limit``) the packed [q | k | bias] buffer,
and AdamW's m and v with it, is one buffer updated in ranges of at most one binding; with a
forced small buffer limit too (``backend.buffer_limit``) each region is a buffer of its own.
Either way several clipped AdamW train steps give the same bits as the unsplit run and match
NumPy; get/set params, read_packed and a checkpoint round trip work split. On the default
limits, a Router + AdamW whose packed parameters exceed 128 MiB builds and steps.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from parity import assert_parity

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.webgpu.ops_train import packed_ranges
from energetic_wgpu.checkpoint import load_checkpoint, save_checkpoint
from energetic_wgpu.errors import DeviceLimitError, InvalidArgumentError

N, D, B = 32, 16, 4  # q and k: 2048 bytes each
LIMIT = 2048  # one region per binding: the packed parameters split into 3 ranges
BUFFER = 4096  # below the packed total: one buffer per region
DEFAULT_BINDING = 134217728


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    deg = rng.integers(0, 9, N)
    deg[3] = 0  # a node without out-edges
    src = np.repeat(np.arange(N), deg)
    graph = Graph.from_edges(src, rng.integers(0, N, src.size), num_nodes=N)
    e = graph.num_edges
    params = RouterParams(q=rng.standard_normal((N, D)).astype(np.float32),
                          k=rng.standard_normal((N, D)).astype(np.float32),
                          bias=rng.standard_normal(e).astype(np.float32), tau=0.8, alpha=0.9, top_k=0)
    energies = rng.random((B, N), dtype=np.float32)
    target = rng.random((B, N), dtype=np.float32)
    return graph, params, energies, target


def _train(be, graph, params, energies, target, steps: int = 3):
    router = Router(graph, params, be)
    # eps comparable to the gradients: Lipschitz in them (see test_wgpu_training.py), so NumPy stays close
    opt = AdamW(router, lr=1e-2, eps=1e-4, weight_decay=0.05, max_grad_norm=0.1)  # norms about 0.11-0.13: clipped
    norms = []
    for _ in range(steps):
        res = router.train_step(energies, target, opt, steps=2)
        norms.append(res.grad_norm)
    return router, opt, norms


def _same_bits(a: RouterParams, b: RouterParams) -> None:
    for name in ("q", "k", "bias"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


def _kernels(be, fn):
    """(fn(), the kernel names it dispatched, in order, with their bindings)."""
    be.runtime.trace = []
    try:
        out = fn()
        return out, [(t["kernel"], t["bindings"]) for t in be.runtime.trace]
    finally:
        be.runtime.trace = None


@pytest.mark.parametrize("layout", ["ranges", "buffers"])
def test_train_steps_split_bit_identical(gpu_backend, np_backend, layout):
    be = gpu_backend
    graph, params, energies, target = _problem()
    whole, whole_opt, whole_norms = _train(be, graph, params, energies, target)
    assert min(whole_norms) > 0.1  # clipping acts
    assert whole.q.pooled is whole.bias.pooled and whole.q.pooled.size <= LIMIT * 3  # one buffer, bound whole
    _, trace = _kernels(be, lambda: whole.train_step(energies, target, whole_opt, steps=2))
    assert [k for k, _ in trace if k.startswith("adamw_update")] == ["adamw_update_packed"]  # one dispatch
    buffer = BUFFER if layout == "buffers" else None
    with be.binding_limit(LIMIT), be.buffer_limit(buffer):
        router, opt, norms = _train(be, graph, params, energies, target)
        if layout == "ranges":
            assert router.q.pooled is router.k.pooled is router.bias.pooled
            assert router.q.pooled.size > LIMIT and opt.exp_avg[0].pooled is opt.exp_avg[2].pooled
            assert [router.q.offset, router.k.offset, router.bias.offset] == [0, 2048, 4096]
        else:
            assert not router.q.is_view and len({id(a.pooled) for a in (*router.parameters(), *opt.exp_avg)}) == 6
        _, trace = _kernels(be, lambda: router.train_step(energies, target, opt, steps=2))
        grads = router.loss_and_grads(energies, target, steps=2).grads.as_list()
        host_grads = [be.to_numpy(g) for g in grads]
    updates = [(k, b) for k, b in trace if k.startswith("adamw_update")]
    if layout == "ranges":  # 3 ranges of one binding each, from aligned offsets of one buffer
        assert [k for k, _ in updates] == ["adamw_update_packed"] * 3
        assert [[(x["offset"], x["size"]) for x in b[:3]] for _, b in updates] == [
            [(o, s)] * 3 for o, s in ((0, 2048), (2048, 2048), (4096, -(-graph.num_edges * 4 // 16) * 16))]
    else:
        assert [k for k, _ in updates] == ["adamw_update"] * 3
    assert be.limits_in_use()["max_binding_bytes"] == DEFAULT_BINDING
    assert be.runtime.max_buffer_bytes == be.limits_in_use()["max_buffer_size"]  # restored
    assert norms == whole_norms
    _same_bits(router.params(), whole.params())
    for key in ("m", "v"):
        for name in ("q", "k", "bias"):
            assert opt.state()[key][name].tobytes() == whole_opt.state()[key][name].tobytes()
    ref, ref_opt, ref_norms = _train(np_backend, graph, params, energies, target, steps=4)  # 3 + the traced one
    np.testing.assert_allclose(norms, ref_norms[:3], rtol=1e-5)
    for name in ("q", "k", "bias"):
        assert_parity(getattr(router.params(), name), getattr(ref.params(), name), name)
    # read_packed of split arrays (several readbacks when over the buffer limit)
    with be.binding_limit(LIMIT), be.buffer_limit(buffer):
        flat = be.read_packed(router.parameters())
        assert flat.tobytes() == np.concatenate([router.params().q.ravel(), router.params().k.ravel(),
                                                 router.params().bias]).tobytes()
        assert be.read_packed(grads).tobytes() == np.concatenate([g.ravel() for g in host_grads]).tobytes()


@pytest.mark.parametrize("layout", ["ranges", "buffers"])
def test_set_params_and_checkpoint_split(gpu_backend, tmp_path, layout):
    be = gpu_backend
    graph, params, energies, target = _problem(1)
    other = _problem(2)[1]
    other = RouterParams(other.q, other.k, params.bias[::-1].copy(), 1.0, 0.9, 0)
    buffer = BUFFER if layout == "buffers" else None
    whole, whole_opt, _ = _train(be, graph, params, energies, target, steps=2)
    whole_ck = save_checkpoint(tmp_path / "whole.ckpt", step=2, params=whole.params(), optimizer_state=whole_opt.state(),
                               graph=graph)
    with be.binding_limit(LIMIT), be.buffer_limit(buffer):
        router, opt, _ = _train(be, graph, params, energies, target, steps=2)
        path = save_checkpoint(tmp_path / "split.ckpt", step=2, params=router.params(), optimizer_state=opt.state(),
                               graph=graph)
        router.set_params(other)  # get/set params split
        _same_bits(router.params(), other)
        assert (router.q.pooled is router.k.pooled) == (layout == "ranges")
        ck = load_checkpoint(path, graph)
        resumed = Router(graph, ck.params, be)
        resumed_opt = AdamW(resumed, lr=1e-2, eps=1e-4, weight_decay=0.05, max_grad_norm=0.1)
        resumed_opt.load_state(ck.optimizer)
        assert (resumed_opt.exp_avg[0].pooled is resumed_opt.exp_avg[1].pooled) == (layout == "ranges")
        resumed.train_step(energies, target, resumed_opt, steps=2)
    ck_whole = load_checkpoint(whole_ck, graph)
    _same_bits(ck.params, ck_whole.params)  # the split checkpoint holds the unsplit run's bits
    whole.train_step(energies, target, whole_opt, steps=2)
    _same_bits(resumed.params(), whole.params())
    assert resumed_opt.state()["v"]["bias"].tobytes() == whole_opt.state()["v"]["bias"].tobytes()


def test_q_past_one_binding_without_room_for_row_windows_refused(gpu_backend):
    be = gpu_backend
    graph, params, energies, target = _problem()
    with be.binding_limit(1024):
        before = be.counters()["buffers_created"]
        # q and k (2,048 bytes each) are past the binding, and so is a row window's gathered rows
        with pytest.raises(DeviceLimitError, match=r"q and k of shape \(32, 16\) are over one storage binding, and "
                                                   r"a window's gathered rows \(64 \+ its edges, 64 bytes each\) do not "
                                                   r"fit one either \(max_binding_bytes = 1024 bytes"):
            Router(graph, params, be)
        assert be.counters()["buffers_created"] == before  # refused before anything was allocated
    router, opt, norms = _train(be, graph, params, energies, target, steps=1)  # the backend stays usable
    assert np.isfinite(norms[0]) and np.isfinite(router.params().q).all()


@pytest.mark.parametrize("value,match", [
    (True, "max_buffer_bytes must be None or an int"), (1.5, "max_buffer_bytes must be None or an int"),
    (100, "max_buffer_bytes must be a multiple of 256 and at least 256 bytes, got 100"),
    (2**40, r"max_buffer_bytes must be at most the device's maxBufferSize = 268435456 bytes \(default limits\)"),
])
def test_buffer_limit_errors(gpu_backend, value, match):
    with pytest.raises(InvalidArgumentError, match=match):
        with gpu_backend.buffer_limit(value):
            pass
    assert gpu_backend.runtime.max_buffer_bytes == 268435456
    with gpu_backend.buffer_limit(1024):  # below the binding limit: the binding limit counts
        assert gpu_backend.runtime.max_buffer_bytes == DEFAULT_BINDING
    assert gpu_backend.runtime.max_buffer_bytes == 268435456


def test_packed_ranges():
    # regions of 10, 70 and 3 elements at 0, 64 and 192 (256-byte aligned); 64-element ranges
    got = packed_ranges([(0, 10), (64, 70), (192, 3)], 195, 256)
    assert got == [(0, 64, [(0, 0, 10)]), (64, 128, [(1, 0, 64)]), (128, 192, [(1, 64, 6)]),
                   (192, 195, [(2, 0, 3)])]
    assert packed_ranges([(0, 10), (64, 70), (192, 3)], 195, 1024) == [(0, 195, [(0, 0, 10), (1, 0, 70), (2, 0, 3)])]
    assert packed_ranges([(0, 0)], 0, 256) == []
    # a limit that is not a multiple of 256 (an adapter's 2^31 - 1): ranges of whole 256 bytes
    assert packed_ranges([(0, 10), (64, 70), (192, 3)], 195, 511) == packed_ranges(
        [(0, 10), (64, 70), (192, 3)], 195, 256)


def test_parameters_over_128_mib_build_on_default_limits(gpu_backend):
    """N = 2^20, d = 16: q and k 64 MiB each, bias 4 MiB: 132 MiB packed, over one 128 MiB
    binding; one buffer (under maxBufferSize) and one clipped AdamW step in ranges."""
    be = gpu_backend
    n, d = 2**20, 16
    src = np.arange(n)
    graph = Graph.from_edges(src, (src * 7 + 1) % n, num_nodes=n)
    params = RouterParams(q=np.full((n, d), 0.01, np.float32), k=np.full((n, d), 0.02, np.float32),
                          bias=np.zeros(n, np.float32), tau=1.0, alpha=0.9, top_k=0)
    router = Router(graph, params, be)
    opt = AdamW(router, lr=1e-2, weight_decay=0.0, max_grad_norm=1.0)
    total = 4 * (2 * n * d + n)
    assert total > DEFAULT_BINDING and router.q.pooled is router.bias.pooled
    assert router.q.pooled.size >= total and be.memory()["parameters"] >= total
    grads = [be.zeros((n, d)), be.zeros((n, d)), be.asarray(np.ones(n, np.float32))]
    before = be.counters()["dispatches"]
    opt.step(grads)
    # sumsq_partials, adamw_prepare, then the update in 2 ranges (128 MiB and 4 MiB)
    assert be.counters()["dispatches"] - before == 4
    assert float(be.to_numpy(opt.last_grad_norm)[0]) == 1024.0
    bias, q = be.to_numpy(router.bias), be.to_numpy(router.q)
    # clipped to norm 1: g = 1/1024 per element; Adam's first step moves by lr * g/|g| = 0.01
    np.testing.assert_allclose(bias, -0.01, rtol=1e-4)
    assert np.all(q == np.float32(0.01)) and q.shape == (n, d)
    del router, opt, grads, bias, q
    gc.collect()
    be.synchronize()
    be.runtime.trim()
