"""Finite-difference checks of every gradient in float64 (SPEC §4, §5; audit §0, §2, §11).

Each parameter (q, k, bias) and the input energies is perturbed **in isolation**, element by
element, with central differences; bias is always checked directly.
"""

from __future__ import annotations

import numpy as np
import pytest

from energetic_wgpu import Graph, Router, RouterParams, losses
from energetic_wgpu.backends.numpy_backend import NumpyBackend

H = 1e-6
RTOL = 1e-7

BE = NumpyBackend("float64")


def small_graph() -> Graph:
    """9 nodes: duplicates, a self-loop, sinks mid-graph (3, 6, 7), an isolated node (8), node 0
    with in-degree 0, segments of degree 1..5."""
    edges = [
        (0, 1), (0, 2), (0, 3), (0, 1),
        (1, 3), (1, 4), (1, 1),
        (2, 5),
        (4, 5), (4, 6), (4, 7), (4, 3), (4, 2),
        (5, 7), (5, 6),
    ]  # fmt: skip
    s, d = zip(*edges)
    return Graph.from_edges(list(s), list(d), num_nodes=9)


G = small_graph()


def make_router(g=G, d=3, tau=1.0, alpha=0.9, top_k=0, seed=0, gapped=False) -> Router:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((g.num_nodes, d))
    k = rng.standard_normal((g.num_nodes, d))
    bias = rng.standard_normal(g.num_edges)
    if gapped:  # logits with clear gaps inside each segment: top-k stable under +-h
        q *= 0.05
        k *= 0.05
        for j in range(g.num_nodes):
            seg = np.arange(g.row_ptr[j], g.row_ptr[j + 1])
            bias[seg] = rng.permutation(len(seg)) * 1.0
    p = RouterParams(q=q, k=k, bias=bias, tau=tau, alpha=alpha, top_k=top_k)
    return Router(g, p, backend=BE)


def linear_loss(w, u=None):
    """L = sum(w * next) (+ sum(u * pi)); returns (L, dL/dnext, dL/dpi)."""

    def f(nxt, pi):
        val = float(np.sum(w * nxt))
        if u is not None:
            val += float(np.sum(u * pi))
        return val, w, u

    return f


def mse_loss(target):
    def f(nxt, pi):
        val, grad = losses.mse(nxt, target)
        return val, grad, None

    return f


def entropy_loss(w, lam):
    def f(nxt, pi):
        val, gpi = losses.entropy_regularization(pi, lam, G)
        return float(np.sum(w * nxt)) + val, w, gpi

    return f


def evaluate(router, energies, lossf, active=None, steps=1, retain=False):
    out = router.forward(energies, active=active, steps=steps, retain_sinks=retain)
    return lossf(np.asarray(out.next_energies), np.asarray(out.edge_pi)), out


def fd_check(router, energies, lossf, active=None, steps=1, retain=False, which=("q", "k", "bias", "energies")):
    (val, gn, gp), out = evaluate(router, energies, lossf, active, steps, retain)
    grads = router.backward(out, gn, gp)
    results = {}
    for name in which:
        target = energies if name == "energies" else getattr(router, name)
        analytic = np.asarray(getattr(grads, name))
        assert analytic.shape == target.shape, name
        assert analytic.dtype == np.float64
        fd = np.zeros(target.shape)
        for idx in np.ndindex(target.shape):
            orig = target[idx]
            target[idx] = orig + H
            lp = evaluate(router, energies, lossf, active, steps, retain)[0][0]
            target[idx] = orig - H
            lm = evaluate(router, energies, lossf, active, steps, retain)[0][0]
            target[idx] = orig
            fd[idx] = (lp - lm) / (2 * H)
        scale = max(1.0, float(np.abs(fd).max()))
        err = float(np.abs(fd - analytic).max())
        assert err <= RTOL * scale, f"d{name}: max|fd - analytic| = {err:.3e} (scale {scale:.3e})"
        results[name] = (analytic, fd)
    expected_norm = np.sqrt(sum(float(np.sum(np.asarray(getattr(grads, n)) ** 2)) for n in ("q", "k", "bias")))
    assert abs(grads.norm - expected_norm) <= 1e-12 * max(1.0, expected_norm)
    return results


def rand_inputs(b=2, seed=1, g=G):
    rng = np.random.default_rng(seed)
    shape = (g.num_nodes,) if b is None else (b, g.num_nodes)
    return rng.random(shape) + 0.1, rng.standard_normal(shape)


# ------------------------------------------------------------------ router gradients


def test_fd_no_topk():
    en, w = rand_inputs()
    res = fd_check(make_router(), en, linear_loss(w))
    assert np.abs(res["bias"][0]).max() > 1e-3  # the check is not vacuous


def test_fd_topk_stable():
    r = make_router(top_k=2, gapped=True)
    en, w = rand_inputs(seed=2)
    res = fd_check(r, en, linear_loss(w))
    pi = np.asarray(r.forward(en).edge_pi)
    dropped = pi == 0
    assert dropped.sum() == (4 - 2) + (3 - 2) + (5 - 2)
    assert (res["bias"][0][dropped] == 0).all()  # dropped edges get exactly 0
    assert np.abs(res["bias"][0][~dropped]).max() > 1e-4


def test_fd_tau():
    en, w = rand_inputs(seed=3)
    fd_check(make_router(tau=0.4), en, linear_loss(w))
    fd_check(make_router(tau=2.7, top_k=3, gapped=True), en, linear_loss(w))


def test_fd_inactive_nodes():
    en, w = rand_inputs(seed=4)
    rng = np.random.default_rng(4)
    active = rng.random(en.shape) < 0.6
    active[:, 4] = [False, True]
    res = fd_check(make_router(top_k=2, gapped=True), en, linear_loss(w), active=active)
    ge = res["energies"][0]
    nonsink_inactive = ~active & ~G.sink_mask[None, :]
    assert (ge[nonsink_inactive] == 0).all()


def test_fd_empty_segments_and_sinks_get_zero_energy_grad():
    en, w = rand_inputs(seed=5)
    res = fd_check(make_router(), en, linear_loss(w))
    ge = res["energies"][0]
    assert (ge[:, G.sink_mask] == 0).all()  # sinks (3, 6, 7, 8) send nothing
    assert G.sink_mask.tolist() == [False, False, False, True, False, False, True, True, True]


@pytest.mark.parametrize("retain", [False, True])
def test_fd_multistep(retain):
    en, w = rand_inputs(seed=6)
    res = fd_check(make_router(top_k=3, gapped=True, tau=0.8), en, linear_loss(w), steps=3, retain=retain)
    ge = res["energies"][0]
    if retain:  # isolated sink 8 keeps its energy through all steps: dL/de8 = w8
        assert np.allclose(ge[:, 8], w[:, 8], rtol=0, atol=1e-15)
    else:
        assert (ge[:, 8] == 0).all()


def test_fd_multistep_inactive_mse():
    en, _ = rand_inputs(seed=7)
    target = np.random.default_rng(7).random(en.shape)
    active = np.ones(en.shape, bool)
    active[0, 1] = False
    fd_check(make_router(tau=1.3), en, mse_loss(target), active=active, steps=3, retain=True)


def test_fd_extra_grad_pi():
    en, w = rand_inputs(seed=8)
    u = np.random.default_rng(8).standard_normal(G.num_edges)
    fd_check(make_router(top_k=2, gapped=True), en, linear_loss(w, u), which=("q", "k", "bias"))
    # the extra path alone (w = 0): bias gradient = softmax backward of u
    r = make_router()
    out = r.forward(en)
    g = r.backward(out, np.zeros_like(en), u)
    pi = np.asarray(out.edge_pi)
    ref = np.zeros(G.num_edges)
    for j in range(G.num_nodes):
        seg = slice(G.row_ptr[j], G.row_ptr[j + 1])
        ref[seg] = pi[seg] * (u[seg] - np.sum(pi[seg] * u[seg]))
    assert np.allclose(np.asarray(g.bias), ref, rtol=0, atol=1e-14)


def test_fd_entropy_regularization_path():
    en, w = rand_inputs(seed=9)
    fd_check(make_router(top_k=3, gapped=True), en, entropy_loss(w, 0.3), which=("q", "k", "bias"))


def test_fd_unbatched_input():
    en, w = rand_inputs(b=None, seed=10)
    res = fd_check(make_router(top_k=2, gapped=True), en, linear_loss(w), steps=2)
    assert res["energies"][0].shape == (G.num_nodes,)
    # the same numbers as a batch of one
    r = make_router(top_k=2, gapped=True)
    out1 = r.forward(en, steps=2)
    outb = r.forward(en[None, :], steps=2)
    g1 = r.backward(out1, w)
    gb = r.backward(outb, w[None, :])
    for name in ("q", "k", "bias"):
        assert np.array_equal(getattr(g1, name), getattr(gb, name))
    assert np.array_equal(g1.energies, gb.energies[0])


def test_fd_lattice_graph():
    from energetic_wgpu import GraphConfig, build_lattice

    g = build_lattice(GraphConfig(layers=4, nodes_per_layer=4, local_neighbors=3, jump_neighbors=2, seed=2))
    r = Router(g, RouterParams.init(g, dim=2, top_k=0, tau=0.7, alpha=1.0), backend=BE)
    rng = np.random.default_rng(11)
    en = np.zeros((2, g.num_nodes))
    en[:, :4] = rng.random((2, 4))
    w = rng.standard_normal((2, g.num_nodes))
    fd_check(r, en, linear_loss(w), steps=3, retain=True, which=("bias", "q", "energies"))


# ----------------------------------------------------------- optimum and descent


def test_gradient_zero_at_optimum():
    r = make_router(top_k=2, gapped=True)
    en, _ = rand_inputs(seed=12)
    out = r.forward(en, steps=2)
    target = np.asarray(out.next_energies).copy()
    val, grad = losses.mse(out.next_energies, target)
    assert val == 0.0 and (grad == 0).all()
    g = r.backward(out, grad)
    for name in ("q", "k", "bias", "energies"):
        assert (np.asarray(getattr(g, name)) == 0).all(), name
    assert g.norm == 0.0


@pytest.mark.parametrize("top_k", [0, 2])
def test_step_along_negative_gradient_lowers_loss(top_k):
    r = make_router(top_k=top_k, gapped=bool(top_k))
    en, _ = rand_inputs(seed=13)
    target = np.random.default_rng(13).random(en.shape)
    out = r.forward(en, steps=2)
    l0, grad = losses.mse(out.next_energies, target)
    g = r.backward(out, grad)
    lr = 1e-3 / max(g.norm, 1e-12)
    gsq = g.norm**2
    r.q -= lr * g.q
    r.k -= lr * g.k
    r.bias -= lr * g.bias
    l1, _ = losses.mse(r.forward(en, steps=2).next_energies, target)
    assert l1 < l0
    # first-order prediction: l0 - l1 ~ lr * |g|^2
    assert abs((l0 - l1) - lr * gsq) < 0.05 * lr * gsq


# -------------------------------------------------------------------- op-level checks


def _fd_array(f, x):
    out = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        o = x[idx]
        x[idx] = o + H
        p = f()
        x[idx] = o - H
        m = f()
        x[idx] = o
        out[idx] = (p - m) / (2 * H)
    return out


def _close(a, b):
    scale = max(1.0, float(np.abs(b).max()))
    assert float(np.abs(np.asarray(a) - b).max()) <= RTOL * scale


@pytest.mark.parametrize("retain", [False, True])
def test_energy_scatter_backward_op(retain):
    rng = np.random.default_rng(20)
    en = rng.random((3, G.num_nodes))
    pi = rng.random(G.num_edges)
    gn = rng.standard_normal((3, G.num_nodes))
    active = rng.random((3, G.num_nodes)) < 0.7
    ge, gp = BE.energy_scatter_backward(G, en, pi, gn, 0.7, active, retain)
    f = lambda: float(np.sum(gn * BE.energy_scatter(G, en, pi, 0.7, active, retain)))  # noqa: E731
    _close(ge, _fd_array(f, en))
    _close(gp, _fd_array(f, pi))


@pytest.mark.parametrize("tau, top_k", [(1.0, 0), (0.3, 0), (2.0, 2)])
def test_segment_softmax_backward_op(tau, top_k):
    rng = np.random.default_rng(21)
    logits = np.zeros(G.num_edges)
    for j in range(G.num_nodes):
        seg = np.arange(G.row_ptr[j], G.row_ptr[j + 1])
        logits[seg] = rng.permutation(len(seg)) * 0.7 + 0.01 * rng.standard_normal(len(seg))
    u = rng.standard_normal(G.num_edges)
    pi = BE.segment_softmax(G, logits, tau, top_k)
    gl = BE.segment_softmax_backward(G, pi, u, tau)
    fd = _fd_array(lambda: float(np.sum(u * BE.segment_softmax(G, logits, tau, top_k))), logits)
    _close(gl, fd)
    if top_k:
        assert (gl[pi == 0] == 0).all() and (pi == 0).any()


def test_edge_logits_backward_op():
    rng = np.random.default_rng(22)
    q = rng.standard_normal((G.num_nodes, 4))
    k = rng.standard_normal((G.num_nodes, 4))
    bias = rng.standard_normal(G.num_edges)
    gl = rng.standard_normal(G.num_edges)
    gq, gk, gb = BE.edge_logits_backward(G, q, k, gl)
    f = lambda: float(np.sum(gl * BE.edge_logits(G, q, k, bias)))  # noqa: E731
    _close(gq, _fd_array(f, q))
    _close(gk, _fd_array(f, k))
    _close(gb, _fd_array(f, bias))
    assert not np.shares_memory(gb, gl)


# ------------------------------------------------------------------------- losses


def test_mse_value_grad_and_fd():
    rng = np.random.default_rng(30)
    pred = rng.random((3, 5))
    target = rng.random((3, 5))
    val, grad = losses.mse(pred, target)
    assert abs(val - float(np.mean((pred - target) ** 2))) < 1e-15
    _close(grad, _fd_array(lambda: losses.mse(pred, target)[0], pred))


def test_mse_mask():
    rng = np.random.default_rng(31)
    pred = rng.random((3, 5))
    target = rng.random((3, 5))
    mask = rng.random((3, 5)) < 0.5
    val, grad = losses.mse(pred, target, mask)
    assert abs(val - float(np.mean((pred - target)[mask] ** 2))) < 1e-15
    assert (grad[~mask] == 0).all()
    assert np.allclose(grad[mask], 2 * (pred - target)[mask] / mask.sum(), rtol=0, atol=1e-15)
    _close(grad, _fd_array(lambda: losses.mse(pred, target, mask)[0], pred))


def test_mse_all_zero_mask():
    pred = np.ones((2, 3))
    val, grad = losses.mse(pred, np.zeros((2, 3)), np.zeros((2, 3), bool))
    assert val == 0.0 and grad.shape == (2, 3) and (grad == 0).all()


def test_mse_errors():
    with pytest.raises(ValueError, match=r"target must have the shape of pred \(2,\), got \(3,\)"):
        losses.mse(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        losses.mse(np.zeros(2), np.zeros(2), np.full(2, 0.5))
    with pytest.raises(ValueError, match="pred must be finite"):
        losses.mse(np.array([np.nan, 0.0]), np.zeros(2))


def test_cross_entropy_value_grad_and_fd():
    rng = np.random.default_rng(32)
    pred = rng.random((4, 6)) + 0.05
    target = rng.random((4, 6))
    val, grad = losses.cross_entropy(pred, target)
    assert abs(val - float(-np.sum(target * np.log(pred)) / 4)) < 1e-14
    _close(grad, _fd_array(lambda: losses.cross_entropy(pred, target)[0], pred))
    v1, g1 = losses.cross_entropy(pred[0], target[0])  # [N] is one row
    assert abs(v1 - float(-np.sum(target[0] * np.log(pred[0])))) < 1e-14
    _close(g1, -target[0] / pred[0])


def test_cross_entropy_pred_zero_is_finite_and_clamped_grad_zero():
    pred = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    target = np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    val, grad = losses.cross_entropy(pred, target, eps=1e-12)
    expected = -(0.2 * np.log(1e-12) + 0.3 * np.log(0.5) + 0.5 * np.log(0.5) + 1.0 * np.log(1e-12)) / 2
    assert np.isfinite(val) and abs(val - expected) < 1e-12
    assert np.isfinite(grad).all()
    assert grad[0, 0] == 0 and grad[1, 1] == 0 and grad[1, 2] == 0
    assert abs(grad[0, 1] - (-0.3 / 0.5 / 2)) < 1e-15
    with pytest.raises(ValueError, match="eps must be > 0, got 0.0"):
        losses.cross_entropy(pred, target, eps=0.0)


def test_cross_entropy_float32_pred_zero():
    pred = np.zeros((1, 3), np.float32)
    target = np.ones((1, 3), np.float32)
    val, grad = losses.cross_entropy(pred, target)
    assert np.isfinite(val) and abs(val - 3 * 27.631021) < 1e-3
    assert (grad == 0).all() and grad.dtype == np.float32


def test_entropy_regularization_value_grad_and_fd():
    r = make_router(top_k=2, gapped=True)
    pi = np.asarray(r.forward(np.ones(G.num_nodes)).edge_pi).copy()
    lam = 0.7
    val, grad = losses.entropy_regularization(pi, lam, G)
    pos = pi > 0
    assert abs(val - float(-lam * np.sum(pi[pos] * np.log(pi[pos])))) < 1e-14
    assert (grad[~pos] == 0).all() and (~pos).any()
    # FD on the kept entries (each pi[e] perturbed independently)
    fd = np.zeros_like(pi)
    for e in np.flatnonzero(pos):
        o = pi[e]
        pi[e] = o + H
        p = losses.entropy_regularization(pi, lam, G)[0]
        pi[e] = o - H
        m = losses.entropy_regularization(pi, lam, G)[0]
        pi[e] = o
        fd[e] = (p - m) / (2 * H)
    _close(grad, fd)
    with pytest.raises(ValueError, match=r"pi must have shape \(15,\)"):
        losses.entropy_regularization(pi[:3], lam, G)
    with pytest.raises(ValueError, match="lam must be finite"):
        losses.entropy_regularization(pi, float("nan"), G)
    with pytest.raises(ValueError, match="graph must be a Graph"):
        losses.entropy_regularization(pi, lam, None)
