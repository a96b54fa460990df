"""Router API: parameter init, validation messages, batching, B = 0, round trips
(SPEC §1-§3; audit §1 CPU forward and §10 errors)."""

from __future__ import annotations

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu import Graph, GraphConfig, Router, RouterParams, build_lattice, get_backend, to_numpy
from energetic_wgpu.backends import METRIC_NAMES
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import EnergeticError, InvalidArgumentError, ShapeError

from conftest import assert_parity

CFG = GraphConfig(layers=4, nodes_per_layer=8, local_neighbors=3, jump_neighbors=2, seed=3)
G = build_lattice(CFG)
N, E = G.num_nodes, G.num_edges


def params(**kw):
    return RouterParams.init(G, dim=4, **kw)


def energies(b, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((b, N)).astype(np.float32)


# ---------------------------------------------------------------- RouterParams.init


def test_init_reproducible_and_seeded():
    a = RouterParams.init(G, dim=6, seed=4)
    b = RouterParams.init(G, dim=6, seed=4)
    c = RouterParams.init(G, dim=6, seed=5)
    for name in ("q", "k", "bias"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.q, c.q) and not np.array_equal(a.k, c.k)
    assert a.q.shape == (N, 6) and a.k.shape == (N, 6) and a.bias.shape == (E,)
    assert a.q.dtype == np.float32 and a.k.dtype == np.float32 and a.bias.dtype == np.float32
    assert not np.array_equal(a.q, a.k)  # different noise for Q and K
    assert (a.bias == 0).all()
    assert a.dim == 6


def test_init_positional_features_without_noise():
    p = RouterParams.init(G, dim=6, noise=0.0)
    assert np.array_equal(p.q, p.k)
    # sin/cos pairs scaled by 1/sqrt(dim): each row has squared norm (dim/2) / dim = 0.5
    assert np.allclose(np.sum(p.q.astype(np.float64) ** 2, axis=1), 0.5, atol=1e-6)
    # nodes differ from each other
    assert len({p.q[i].tobytes() for i in range(N)}) == N


def test_init_bias_from_weights():
    g = Graph.from_edges([0, 0, 1], [1, 2, 2], num_nodes=3, weights=[0.5, -1.25, 2.0])
    p = RouterParams.init(g, dim=2, tau=0.5, alpha=0.8, top_k=1)
    assert p.bias.dtype == np.float32 and p.bias.tolist() == [0.5, -1.25, 2.0]
    assert (p.tau, p.alpha, p.top_k) == (0.5, 0.8, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=0), "dim must be an int >= 1"),
        (dict(dim=2.5), "dim must be an int >= 1"),
        (dict(dim=2, tau=0.0), "tau must be > 0"),
        (dict(dim=2, tau=float("inf")), "tau must be finite"),
        (dict(dim=2, alpha=float("nan")), "alpha must be finite"),
        (dict(dim=2, top_k=-1), "top_k must be an int >= 0"),
        (dict(dim=2, seed=-3), "seed must be an int >= 0"),
        (dict(dim=2, noise="x"), "noise must be a real number"),
    ],
)
def test_init_errors(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        RouterParams.init(G, **kwargs)


def test_init_requires_graph():
    with pytest.raises(InvalidArgumentError, match="graph must be a Graph, got dict"):
        RouterParams.init({}, dim=2)


# ---------------------------------------------------------------- params validation


def _with(**kw):
    p = params()
    for k, v in kw.items():
        setattr(p, k, v)
    return p


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (dict(q=np.zeros(N, np.float32)), ShapeError, r"params.q must be 2-D \[N, d\], got shape \(32,\)"),
        (dict(q=np.zeros((N + 1, 4), np.float32)), ShapeError, r"params.q must have shape \(32, 4\), got \(33, 4\)"),
        (
            dict(q=np.zeros((N, 0), np.float32), k=np.zeros((N, 0), np.float32)),
            ShapeError,
            r"params.q must have d >= 1",
        ),
        (dict(k=np.zeros((N, 3), np.float32)), ShapeError, r"params.k must have shape \(32, 4\), got \(32, 3\)"),
        (
            dict(bias=np.zeros(E + 1, np.float32)),
            ShapeError,
            rf"params.bias must have shape \({E},\), got \({E + 1},\)",
        ),
        (dict(q=np.zeros((N, 4), bool)), ShapeError, r"params.q must be a float array, got dtype bool"),
        (dict(k=np.full((N, 4), np.nan, np.float32)), InvalidArgumentError, r"params.k must be finite"),
        (dict(bias=np.full(E, np.inf, np.float32)), InvalidArgumentError, r"params.bias must be finite"),
        (dict(tau=0.0), InvalidArgumentError, r"params.tau must be > 0, got 0.0"),
        (dict(tau=-1.0), InvalidArgumentError, r"params.tau must be > 0"),
        (dict(tau=float("nan")), InvalidArgumentError, r"params.tau must be finite"),
        (dict(alpha=float("inf")), InvalidArgumentError, r"params.alpha must be finite"),
        (dict(top_k=-2), InvalidArgumentError, r"params.top_k must be an int >= 0, got -2"),
        (dict(top_k=1.5), InvalidArgumentError, r"params.top_k must be an int >= 0"),
    ],
)
def test_router_params_validation(bad, exc, match):
    with pytest.raises(exc, match=match) as info:
        Router(G, _with(**bad), backend="numpy")
    assert isinstance(info.value, EnergeticError) and isinstance(info.value, ValueError)


def test_router_constructor_type_errors():
    with pytest.raises(InvalidArgumentError, match="graph must be a Graph"):
        Router("graph", params(), backend="numpy")
    with pytest.raises(InvalidArgumentError, match="params must be a RouterParams, got dict"):
        Router(G, {}, backend="numpy")


# --------------------------------------------------------------- forward validation


@pytest.fixture(scope="module")
def router():
    return Router(G, params(top_k=2), backend=NumpyBackend())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (
            dict(energies=np.zeros(N + 1)),
            ShapeError,
            rf"energies must have shape \[N\] or \[B, N\] with N = {N}, got \({N + 1},\)",
        ),
        (dict(energies=np.zeros((2, N - 1))), ShapeError, r"energies must have shape \[N\] or \[B, N\]"),
        (dict(energies=np.zeros((1, 2, N))), ShapeError, r"energies must have shape \[N\] or \[B, N\].*\(1, 2, 32\)"),
        (dict(energies=np.float32(1.0)), ShapeError, r"energies must have shape \[N\] or \[B, N\].*got \(\)"),
        (dict(energies=np.zeros(N, bool)), ShapeError, r"energies must be a float array, got dtype bool"),
        (dict(energies=np.array(["a"] * N)), ShapeError, r"energies must be a float array"),
        (dict(energies=np.full(N, np.nan)), InvalidArgumentError, r"energies must be finite"),
        (dict(energies=np.full((2, N), np.inf, np.float32)), InvalidArgumentError, r"energies must be finite"),
        (
            dict(energies=np.ones((2, N)), active=np.ones((3, N), bool)),
            ShapeError,
            r"active must have shape \[N\] = \(32,\) or \[B, N\] = \(2, 32\), got \(3, 32\)",
        ),
        (dict(energies=np.ones(N), active=np.ones(N - 1, bool)), ShapeError, r"active must have shape"),
        (dict(energies=np.ones(N), active=np.full(N, 0.5)), InvalidArgumentError, r"active must hold only 0 and 1"),
        (dict(energies=np.ones(N), active=np.array(["a"] * N)), ShapeError, r"active must be a bool array or a numeric"),
        (dict(energies=np.ones(N), steps=0), InvalidArgumentError, r"steps must be an int >= 1, got 0"),
        (dict(energies=np.ones(N), steps=2.0), InvalidArgumentError, r"steps must be an int >= 1"),
        (dict(energies=np.ones(N), retain_sinks="yes"), InvalidArgumentError, r"retain_sinks must be a bool"),
    ],
)
def test_forward_validation(router, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        router.forward(**kwargs)
    # the router stays usable
    assert np.isfinite(router.forward(np.ones(N)).next_energies).all()


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda out: (out, np.zeros((2, N))), ShapeError, r"grad_next must have shape \(3, 32\), got \(2, 32\)"),
        (lambda out: (out, np.zeros(N)), ShapeError, r"grad_next must have shape \(3, 32\), got \(32,\)"),
        (lambda out: (out, np.full((3, N), np.nan)), InvalidArgumentError, r"grad_next must be finite"),
        (lambda out: (out, np.zeros((3, N), bool)), ShapeError, r"grad_next must be a float array"),
        (
            lambda out: (out, np.zeros((3, N)), np.zeros(E - 1)),
            ShapeError,
            rf"grad_pi must have shape \({E},\), got \({E - 1},\)",
        ),
        (
            lambda out: ("out", np.zeros((3, N))),
            InvalidArgumentError,
            r"out must be the RouterOutput of this router's forward\(\)",
        ),
    ],
)
def test_backward_validation(router, make, exc, match):
    out = router.forward(energies(3))
    with pytest.raises(exc, match=match):
        router.backward(*make(out))


def test_backward_rejects_output_of_another_router(router):
    other = Router(G, params(top_k=2), backend=NumpyBackend())
    out = other.forward(energies(2))
    with pytest.raises(InvalidArgumentError, match="out must be the RouterOutput of this router"):
        router.backward(out, np.zeros((2, N)))


# ------------------------------------------------------------ numbers and batching


def _ref_forward(p, e, steps, retain, active=None):
    """float64 reference of the full multi-step forward, by loops over edges."""
    g = G
    q, k, bias = (np.asarray(x, np.float64) for x in (p.q, p.k, p.bias))
    z = np.array([q[g.src[i]] @ k[g.col_idx[i]] + bias[i] for i in range(E)]) / p.tau
    pi = np.zeros(E)
    for j in range(N):
        seg = list(range(g.row_ptr[j], g.row_ptr[j + 1]))
        if not seg:
            continue
        kept = sorted(seg, key=lambda i: (-z[i], i))[: p.top_k] if p.top_k and len(seg) > p.top_k else seg
        m = max(z[i] for i in kept)
        s = sum(np.exp(z[i] - m) for i in kept)
        for i in kept:
            pi[i] = np.exp(z[i] - m) / s
    x = np.asarray(e, np.float64)
    act = np.ones(x.shape, bool) if active is None else active
    for _ in range(steps):
        nxt = np.zeros(x.shape)
        for i in range(E):
            nxt[:, g.col_idx[i]] += p.alpha * act[:, g.src[i]] * x[:, g.src[i]] * pi[i]
        if retain:
            nxt[:, g.sink_mask] += x[:, g.sink_mask]
        x = nxt
    return x, pi


@pytest.mark.parametrize("steps, retain", [(1, False), (3, False), (3, True)])
def test_forward_against_reference(backend, steps, retain):
    p = params(top_k=3, tau=0.7, alpha=0.9, noise=0.5)
    r = Router(G, p, backend=backend)
    e = energies(5, seed=steps)
    active = np.random.default_rng(1).random((5, N)) < 0.8
    out = r.forward(e, active=active, steps=steps, retain_sinks=retain)
    ref, ref_pi = _ref_forward(p, e, steps, retain, active)
    assert_parity(to_numpy(out.edge_pi), ref_pi, "pi")
    assert_parity(to_numpy(out.next_energies), ref, "next")


def test_unbatched_equals_batch_of_one(backend):
    r = Router(G, params(top_k=2, noise=0.3), backend=backend)
    e = energies(1)[0]
    a = r.forward(e, steps=2, retain_sinks=True)
    b = r.forward(e[None, :], steps=2, retain_sinks=True)
    assert tuple(a.next_energies.shape) == (N,)
    assert tuple(b.next_energies.shape) == (1, N)
    assert tuple(a.edge_flow.shape) == (E,) and tuple(b.edge_flow.shape) == (1, E)
    assert np.array_equal(to_numpy(a.next_energies), to_numpy(b.next_energies)[0])
    assert np.array_equal(to_numpy(a.edge_flow), to_numpy(b.edge_flow)[0])
    assert a.metrics == b.metrics


def test_active_1d_broadcasts_over_batch(router):
    e = energies(3)
    act = np.random.default_rng(2).random(N) < 0.5
    a = router.forward(e, active=act)
    b = router.forward(e, active=np.broadcast_to(act, (3, N)).copy())
    assert np.array_equal(a.next_energies, b.next_energies)
    c = router.forward(e)
    assert not np.array_equal(a.next_energies, c.next_energies)


def test_float64_and_int_inputs_accepted_on_float32_backend(router):
    e64 = energies(2).astype(np.float64)
    a = router.forward(e64)
    b = router.forward(e64.astype(np.float32))
    assert a.next_energies.dtype == np.float32
    assert np.array_equal(a.next_energies, b.next_energies)
    c = router.forward(np.ones(N, dtype=np.int64))
    d = router.forward(np.ones(N, dtype=np.float32))
    assert np.array_equal(c.next_energies, d.next_energies)
    out = router.forward(energies(2))
    g1 = router.backward(out, np.ones((2, N), np.float64))
    g2 = router.backward(out, np.ones((2, N), np.float32))
    assert g1.q.dtype == np.float32 and np.array_equal(g1.q, g2.q)


def test_batch_zero(backend):
    r = Router(G, params(top_k=2), backend=backend)
    out = r.forward(np.zeros((0, N), np.float32), steps=2)
    assert tuple(out.next_energies.shape) == (0, N)
    assert tuple(out.edge_flow.shape) == (0, E)
    m = out.metrics
    assert [m[n] for n in METRIC_NAMES[:4]] == [0.0, 0.0, 0.0, 0.0]
    assert np.isfinite(m["avg_entropy"])
    g = r.backward(out, np.zeros((0, N), np.float32))
    assert tuple(g.energies.shape) == (0, N)
    assert g.norm == 0.0


def test_metrics_of_last_step(router):
    e = energies(4)
    out = router.forward(e, steps=2)
    m = out.metrics
    assert list(m) == list(METRIC_NAMES)
    nxt = np.asarray(out.next_energies, np.float64)
    assert abs(m["total_energy"] - nxt.sum(axis=1).mean()) < 1e-5
    mid = router.forward(e, steps=1).next_energies
    assert m["active_nodes"] == float(np.mean(np.count_nonzero(mid, axis=1)))
    flow = router.backend.edge_flow(G, mid, out.edge_pi, router.alpha)
    assert np.array_equal(out.edge_flow, flow)
    assert m["max_edge_flow"] == pytest.approx(float(flow.max()), rel=1e-6)


def test_retain_sinks_collects_energy_in_last_layer():
    r = Router(G, params(noise=0.5), backend=NumpyBackend("float64"))
    e = np.zeros((2, N))
    e[:, :8] = np.random.default_rng(3).random((2, 8))
    out = r.forward(e, steps=CFG.layers - 1, retain_sinks=True)
    nxt = np.asarray(out.next_energies)
    assert np.allclose(nxt.sum(axis=1), e.sum(axis=1), rtol=1e-12)
    assert np.allclose(nxt[:, :-8], 0.0, atol=1e-15)
    lost = np.asarray(r.forward(e, steps=CFG.layers - 1, retain_sinks=False).next_energies)
    assert (lost.sum(axis=1) < e.sum(axis=1) - 1e-6).all()  # jumps reach the sinks early and vanish


# ------------------------------------------------------------------ round trips


def test_params_round_trip(router):
    p = router.params()
    assert isinstance(p, RouterParams) and isinstance(p.q, np.ndarray)
    assert (p.tau, p.alpha, p.top_k) == (router.tau, router.alpha, router.top_k)
    r2 = Router(G, p, backend=NumpyBackend())
    e = energies(3)
    assert np.array_equal(router.forward(e, steps=2).next_energies, r2.forward(e, steps=2).next_energies)
    p.q[:] = 0  # a copy: the router is unaffected
    assert np.abs(router.q).max() > 0


def test_to_numpy_backend_keeps_numbers(backend):
    p = params(top_k=2, noise=0.2)
    r = Router(G, p, backend=backend)
    e = energies(2)
    before = to_numpy(r.forward(e, steps=2).next_energies)
    assert r.to("numpy") is r
    assert r.backend is get_backend("numpy")
    after = r.forward(e, steps=2).next_energies
    assert_parity(after, before, "next")
    for name in ("q", "k", "bias"):
        assert np.array_equal(getattr(r.params(), name), getattr(p, name))


def test_to_float64_backend():
    p = params(top_k=2, noise=0.2)
    r = Router(G, p, backend="numpy")
    r.to(get_backend("numpy", dtype="float64"))
    assert r.q.dtype == np.float64
    assert np.array_equal(r.q, p.q.astype(np.float64))
    assert r.forward(energies(1)).next_energies.dtype == np.float64


def test_energy_scatter_return_flow_on_every_backend(backend):
    """energy_scatter(..., return_flow=True) gives (next, flow) with flow equal to edge_flow and
    next equal to the flow summed per target (checked with an independent numpy scatter)."""
    g = ew.Graph.from_edges([0, 0, 1, 2, 2, 2], [1, 2, 2, 0, 1, 1], num_nodes=4)
    rng = np.random.default_rng(0)
    e = rng.random((3, 4)).astype(np.float32)
    pi = np.array([0.25, 0.75, 1.0, 0.5, 0.2, 0.3], dtype=np.float32)
    act = np.array([[True, True, False, True]] * 3)
    nxt, flow = backend.energy_scatter(g, backend.asarray(e), backend.asarray(pi), 0.5, backend.asarray(act),
                                       return_flow=True)
    flow_np = backend.to_numpy(flow)
    expected_flow = 0.5 * (e * act)[:, g.src] * pi
    np.testing.assert_allclose(flow_np, expected_flow, rtol=1e-6, atol=1e-7)
    expected_next = np.zeros((3, 4))
    np.add.at(expected_next, (slice(None), g.col_idx), expected_flow)
    np.testing.assert_allclose(backend.to_numpy(nxt), expected_next, rtol=1e-6, atol=1e-7)


def test_integer_parameter_arrays_become_floats(backend):
    """q, k, bias given as integer arrays are values: they are stored as the backend's float
    dtype (not int32), and the forward matches the same parameters given as floats."""
    g = build_lattice(GraphConfig(3, 8, 2, 1))
    n, e = g.num_nodes, g.num_edges
    rng = np.random.default_rng(0)
    qi = rng.integers(-2, 3, size=(n, 2))
    ki = rng.integers(-2, 3, size=(n, 2))
    bi = rng.integers(-1, 2, size=e)
    r_int = Router(g, RouterParams(qi, ki, bi), backend)
    r_flt = Router(g, RouterParams(qi.astype(np.float32), ki.astype(np.float32), bi.astype(np.float32)), backend)
    assert np.dtype(r_int.q.dtype) == np.float32 and np.dtype(r_int.bias.dtype) == np.float32
    x = rng.random((2, n)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(r_int.forward(x).next_energies), to_numpy(r_flt.forward(x).next_energies))
