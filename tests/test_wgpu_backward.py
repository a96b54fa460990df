"""GPU backward, losses and AdamW against the NumPy reference (docs/testing.md: GPU backward, losses, AdamW).

Every gradient array (energies, pi, logits, q, k, bias) is compared directly — never only
through convergence — over the batch sizes and degrees of docs/testing.md, and every result is
checked bit-identical across two runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from graphs import degree_graph
from parity import assert_parity

from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.backends.webgpu import ops_train
from energetic_wgpu.graph import Graph
from energetic_wgpu.router import Router, RouterParams

TOPK = 4
# segments of every degree of the test matrix; the 1000-degree segment targets 3 nodes only,
# so those have in-degree > 256 (the workgroup-per-node path of grad_k)
DEGREES = [0, 1, TOPK, TOPK + 1, 64, 65, 1000, 0, 2, 3, 1, 7, 0, 5, 300]
BATCHES = [0, 1, 2, 31, 32, 33, 64, 65]
NP = NumpyBackend()
NP64 = NumpyBackend("float64")


def mixed_graph(seed: int = 0) -> Graph:
    return degree_graph(DEGREES, seed, big_into=3, duplicates=3)


GRAPH = mixed_graph()


def _inputs(batch: int, dim: int = 5, seed: int = 0, top_k: int = 0):
    rng = np.random.default_rng(seed + batch)
    n, e = GRAPH.num_nodes, GRAPH.num_edges
    logits = (2 * rng.standard_normal(e)).astype(np.float32)
    pi = NP.segment_softmax(GRAPH, logits, 0.7, top_k)
    return dict(
        energies=rng.random((batch, n)).astype(np.float32),
        grad_next=rng.standard_normal((batch, n)).astype(np.float32),
        active=rng.random((batch, n)) > 0.3,
        pi=pi,
        grad_pi=rng.standard_normal(e).astype(np.float32),
        q=rng.standard_normal((n, dim)).astype(np.float32),
        k=rng.standard_normal((n, dim)).astype(np.float32),
    )


def _bits(be, x) -> bytes:
    return be.to_numpy(x).tobytes()


# ------------------------------------------------------------------ single ops
@pytest.mark.parametrize("batch", BATCHES)
def test_energy_scatter_backward_parity(gpu_backend, batch):
    be = gpu_backend
    top_k = TOPK if batch % 2 else 0
    x = _inputs(batch, top_k=top_k)
    for active, retain in ((None, False), (x["active"], True)):
        ref_e, ref_pi = NP.energy_scatter_backward(GRAPH, x["energies"], x["pi"], x["grad_next"], 0.8, active, retain)
        args = (GRAPH, be.asarray(x["energies"]), be.asarray(x["pi"]), be.asarray(x["grad_next"]), 0.8,
                None if active is None else be.asarray(active), retain)
        got_e, got_pi = be.energy_scatter_backward(*args)
        assert_parity(be.to_numpy(got_e), ref_e, "grad_energies")
        assert_parity(be.to_numpy(got_pi), ref_pi, "grad_pi")
        again_e, again_pi = be.energy_scatter_backward(*args)
        assert _bits(be, again_e) == _bits(be, got_e) and _bits(be, again_pi) == _bits(be, got_pi)


@pytest.mark.parametrize("top_k", [0, 1, TOPK, TOPK + 1, 64])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_segment_softmax_backward_parity(gpu_backend, top_k, tau):
    be = gpu_backend
    x = _inputs(1, top_k=top_k)
    ref = NP.segment_softmax_backward(GRAPH, x["pi"], x["grad_pi"], tau)
    got = be.segment_softmax_backward(GRAPH, be.asarray(x["pi"]), be.asarray(x["grad_pi"]), tau)
    assert_parity(be.to_numpy(got), ref, "grad_logits")
    assert np.all(be.to_numpy(got)[x["pi"] == 0] == 0)
    again = be.segment_softmax_backward(GRAPH, be.asarray(x["pi"]), be.asarray(x["grad_pi"]), tau)
    assert _bits(be, again) == _bits(be, got)


@pytest.mark.parametrize("dim", [1, 5, 16])
def test_edge_logits_backward_parity(gpu_backend, dim):
    be = gpu_backend
    x = _inputs(1, dim=dim)
    gl = x["grad_pi"]
    ref = NP.edge_logits_backward(GRAPH, x["q"], x["k"], gl)
    got = be.edge_logits_backward(GRAPH, be.asarray(x["q"]), be.asarray(x["k"]), be.asarray(gl))
    for name, g, r in zip(("grad_q", "grad_k", "grad_bias"), got, ref):
        assert_parity(be.to_numpy(g), r, name)
    assert be.to_numpy(got[2]).tobytes() == gl.tobytes()  # dbias is an exact copy
    again = be.edge_logits_backward(GRAPH, be.asarray(x["q"]), be.asarray(x["k"]), be.asarray(gl))
    assert all(_bits(be, a) == _bits(be, b) for a, b in zip(again, got))


def test_empty_graph_and_sinks(gpu_backend):
    be = gpu_backend
    g = Graph.from_edges(np.zeros(0, int), np.zeros(0, int), num_nodes=4)
    e, gn = np.ones((2, 4), np.float32), np.arange(8, dtype=np.float32).reshape(2, 4)
    ge, gp = be.energy_scatter_backward(g, be.asarray(e), be.zeros((0,)), be.asarray(gn), 1.0, None, True)
    assert np.array_equal(be.to_numpy(ge), gn) and be.to_numpy(gp).shape == (0,)
    gq, gk, gb = be.edge_logits_backward(g, be.zeros((4, 3)), be.zeros((4, 3)), be.zeros((0,)))
    assert not be.to_numpy(gq).any() and not be.to_numpy(gk).any() and be.to_numpy(gb).shape == (0,)


def test_huge_segment(gpu_backend):
    """One 100,000-edge segment (and a node of in-degree 100,000): workgroup-per-node paths.

    The reference is the NumPy backend in float64 on the float32 inputs cast to float64: a float32 serial
    sum of 100,000 terms (scipy's) is itself off by more than the tolerance, while the GPU's
    compensated sums are not."""
    be = gpu_backend
    NP = NP64
    rng = np.random.default_rng(3)
    n, big = 64, 100_000
    src = np.concatenate([np.zeros(big, int), np.ones(big, int), rng.integers(2, n, 500)])
    dst = np.concatenate([rng.integers(0, n, big), np.full(big, 2), rng.integers(0, n, 500)])
    g = Graph.from_edges(src, dst, num_nodes=n)
    e = g.num_edges
    pi = NP.segment_softmax(g, rng.standard_normal(e).astype(np.float32), 1.0, 0)
    en = rng.random((2, n)).astype(np.float32)
    gn = rng.standard_normal((2, n)).astype(np.float32)
    gpi = rng.standard_normal(e).astype(np.float32)
    q, k = rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 4)).astype(np.float32)
    def f64(*xs):
        return [x.astype(np.float64) for x in xs]

    ref = NP.energy_scatter_backward(g, *f64(en, pi, gn), 1.0, None, False)
    got = be.energy_scatter_backward(g, be.asarray(en), be.asarray(pi), be.asarray(gn), 1.0, None, False)
    assert_parity(be.to_numpy(got[0]), ref[0], "grad_energies")
    assert_parity(be.to_numpy(got[1]), ref[1], "grad_pi")
    assert_parity(be.to_numpy(be.segment_softmax_backward(g, be.asarray(pi), be.asarray(gpi), 1.0)),
                  NP.segment_softmax_backward(g, *f64(pi, gpi), 1.0), "grad_logits")
    ref3 = NP.edge_logits_backward(g, *f64(q, k, gpi))
    got3 = be.edge_logits_backward(g, be.asarray(q), be.asarray(k), be.asarray(gpi))
    for name, a, r in zip(("grad_q", "grad_k", "grad_bias"), got3, ref3):
        assert_parity(be.to_numpy(a), r, name)


# ------------------------------------------------------------------ through Router.backward
@pytest.mark.parametrize(
    "steps,top_k,use_active,batch", [(1, 0, False, 1), (1, TOPK, True, 33), (3, 0, True, 2), (3, TOPK, False, 65)]
)
def test_router_backward_parity(gpu_backend, steps, top_k, use_active, batch):
    be = gpu_backend
    rng = np.random.default_rng(steps * 10 + top_k)
    params = RouterParams.init(GRAPH, 6, tau=0.8, alpha=0.9, top_k=top_k, seed=1, noise=0.3)
    params.bias = rng.standard_normal(GRAPH.num_edges).astype(np.float32)
    en = rng.random((batch, GRAPH.num_nodes)).astype(np.float32)
    gn = rng.standard_normal((batch, GRAPH.num_nodes)).astype(np.float32)
    gpi = rng.standard_normal(GRAPH.num_edges).astype(np.float32)
    act = rng.random((batch, GRAPH.num_nodes)) > 0.25 if use_active else None
    grads = []
    for backend in (NP, be, be):
        r = Router(GRAPH, params, backend)
        out = r.forward(en, active=act, steps=steps, retain_sinks=True)
        grads.append(r.backward(out, gn, gpi))
    ref, got, again = grads
    for name in ("q", "k", "bias", "energies"):
        a = be.to_numpy(getattr(got, name))
        assert_parity(a, getattr(ref, name), f"grad_{name}")
        assert a.tobytes() == be.to_numpy(getattr(again, name)).tobytes(), f"grad_{name} not bit-identical"
    assert abs(got.norm - ref.norm) <= 1e-5 * max(1.0, ref.norm)


# ------------------------------------------------------------------ losses
@pytest.mark.parametrize("batch", [0, 1, 33, 65])
def test_mse_parity(gpu_backend, batch):
    be = gpu_backend
    rng = np.random.default_rng(batch)
    pred = rng.random((batch, 300)).astype(np.float32)
    tgt = rng.random((batch, 300)).astype(np.float32)
    mask = rng.random((batch, 300)) > 0.5
    for m in (None, mask, np.zeros_like(mask)):
        ref_l, ref_g = NP.mse(pred, tgt, m)
        got_l, got_g = be.mse(be.asarray(pred), be.asarray(tgt), None if m is None else be.asarray(m))
        assert_parity(be.to_numpy(got_l), ref_l, "mse loss")
        g = be.to_numpy(got_g)
        assert_parity(g, ref_g, "mse grad")
        if m is not None:
            assert np.all(g[~m] == 0)  # masked-out outputs: exactly 0
        again = be.mse(be.asarray(pred), be.asarray(tgt), None if m is None else be.asarray(m))
        assert _bits(be, again[0]) == _bits(be, got_l) and _bits(be, again[1]) == g.tobytes()


def test_mse_large_and_unbatched(gpu_backend):
    be = gpu_backend
    rng = np.random.default_rng(1)
    for shape in ((70_001,), (3, 20_000)):
        pred, tgt = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)
        mask = rng.random(shape) > 0.1
        ref = NP.mse(pred, tgt, mask)
        got = be.mse(be.asarray(pred), be.asarray(tgt), be.asarray(mask))
        assert_parity(be.to_numpy(got[0]), ref[0], "loss")
        assert_parity(be.to_numpy(got[1]), ref[1], "grad")


@pytest.mark.parametrize("shape", [(0, 7), (7,), (33, 50)])
def test_cross_entropy_parity(gpu_backend, shape):
    be = gpu_backend
    rng = np.random.default_rng(2)
    pred = rng.random(shape).astype(np.float32)
    if pred.size:
        pred.flat[::5] = 0.0  # log(0) clamps: finite loss, grad 0 there
    tgt = rng.random(shape).astype(np.float32)
    ref_l, ref_g = NP.cross_entropy(pred, tgt, 1e-6)
    got_l, got_g = be.cross_entropy(be.asarray(pred), be.asarray(tgt), 1e-6)
    assert np.isfinite(be.to_numpy(got_l)).all()
    assert_parity(be.to_numpy(got_l), ref_l, "ce loss")
    assert_parity(be.to_numpy(got_g), ref_g, "ce grad")


@pytest.mark.parametrize("top_k", [0, TOPK])
def test_entropy_regularization_parity(gpu_backend, top_k):
    be = gpu_backend
    pi = _inputs(1, top_k=top_k)["pi"]
    ref_l, ref_g = NP.entropy_regularization(GRAPH, pi, 0.3)
    got_l, got_g = be.entropy_regularization(GRAPH, be.asarray(pi), 0.3)
    assert_parity(be.to_numpy(got_l), ref_l, "entropy loss")
    g = be.to_numpy(got_g)
    assert_parity(g, ref_g, "entropy grad")
    assert np.all(g[pi == 0] == 0)


def test_add_and_sum_squares(gpu_backend):
    be = gpu_backend
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(10_007).astype(np.float32), rng.standard_normal(10_007).astype(np.float32)
    assert_parity(be.to_numpy(be.add(be.asarray(a), be.asarray(b))), NP.add(a, b), "add")
    arrays = [a, b[:5], np.zeros(0, np.float32)]
    assert_parity(be.to_numpy(be.sum_squares([be.asarray(x) for x in arrays])), NP.sum_squares(arrays), "sumsq")


# ------------------------------------------------------------------ AdamW
def _adam_run(be, n_steps, max_norm, betas=(0.8, 0.95), eps=1e-6, wd=0.05, lr=lambda t: 0.01 * t, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(17, 5), (17, 5), (301,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(n_steps)]
    out = []
    for backend in (NP, be):
        p = [backend.asarray(x.copy()) for x in params]
        m = [backend.zeros(s) for s in shapes]
        v = [backend.zeros(s) for s in shapes]
        t = backend.zeros((1,))
        dev_grads = [[backend.asarray(x) for x in gs] for gs in grads]
        submits = backend.counters()["submits"]
        norms = [backend.adamw_step(p, dev_grads[i], m, v, t, lr(i + 1), betas[0], betas[1], eps, wd, max_norm)
                 for i in range(n_steps)]
        submits = backend.counters()["submits"] - submits
        out.append(([backend.to_numpy(x) for x in p + m + v + [t]], [float(backend.to_numpy(x)[0]) for x in norms]))
    out.append(submits)
    return out


@pytest.mark.parametrize("n_steps", [1, 7])
@pytest.mark.parametrize("max_norm", [None, 0.5, 1e6])
def test_adamw_step_parity(gpu_backend, n_steps, max_norm):
    (ref, ref_norms), (got, got_norms), _ = _adam_run(gpu_backend, n_steps, max_norm)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_parity(g, r, f"state[{i}]")
    assert got[-1][0] == n_steps  # t on the device
    np.testing.assert_allclose(got_norms, ref_norms, rtol=1e-5)
    if max_norm == 0.5:
        assert min(ref_norms) > 0.5  # clipping was active on every step


def test_adamw_beta_edge_cases_and_determinism(gpu_backend):
    (ref, _), (got, _), _ = _adam_run(gpu_backend, 3, 0.5, betas=(0.0, 0.999), eps=1e-8, wd=0.0, lr=lambda t: 1e-3)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_parity(g, r, f"state[{i}]")
    (_, _), (again, _), _ = _adam_run(gpu_backend, 3, 0.5, betas=(0.0, 0.999), eps=1e-8, wd=0.0, lr=lambda t: 1e-3)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, again))


def test_adamw_lr_ring_many_steps_per_submit(gpu_backend):
    """More optimizer steps per submit than lr ring slots, each with its own lr: the ring
    flushes instead of overwriting a slot a pending step still reads."""
    be = gpu_backend
    ops_train.set_steps_per_submit(be, 10_000)
    try:
        n_steps = 2 * ops_train.RING + 5
        (ref, _), (got, _), submits = _adam_run(be, n_steps, None, lr=lambda t: 1e-3 * (1 + t % 7 + t / 100))
        assert submits == n_steps // ops_train.RING  # a flush each time the ring wraps, never per step
    finally:
        ops_train.set_steps_per_submit(be, 1)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_parity(g, r, f"state[{i}]")
