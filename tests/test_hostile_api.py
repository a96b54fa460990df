"""Hostile use of the public API: every reproduction of the reliability issue's API items, on
every backend (NumPy and each wgpu adapter).

Each bad call raises the library's error naming the argument before any backend work, and
leaves the backend usable; a train step never writes a non-finite value into the parameters
or the optimizer state (the non-finite guard skips the update on the device).
"""

from __future__ import annotations

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu import losses
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import InvalidArgumentError, ShapeError
from energetic_wgpu.optim import AdamW
from energetic_wgpu.router import Gradients, Router, RouterParams

from conftest import ADAPTERS, assert_parity, wgpu_backend_for

TINY = float(np.finfo(np.float32).tiny)
NP = NumpyBackend()
# 0 -> {1, 2, 3}, 1 -> {2, 3}, 2 -> 3, 3 -> 0 (4 nodes, 7 edges; node 3 has one edge)
GRAPH = ew.Graph.from_edges([0, 0, 0, 1, 1, 2, 3], [1, 2, 3, 2, 3, 3, 0], 4)
N, E = GRAPH.num_nodes, GRAPH.num_edges


def _params(**kw) -> RouterParams:
    args = dict(tau=0.8, alpha=0.9, seed=1, noise=0.3)
    args.update(kw)
    return RouterParams.init(GRAPH, 3, **args)


def _router(be, **kw) -> Router:
    return Router(GRAPH, _params(**kw), be)


def _energies(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, N)).astype(np.float32)


def _snapshot(router: Router, opt: AdamW) -> list[np.ndarray]:
    p, st = router.params(), opt.state()
    return [p.q, p.k, p.bias] + [st[k][n] for k in ("m", "v") for n in ("q", "k", "bias")]


def _assert_unchanged(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    for a, b in zip(before, after):
        assert np.array_equal(a, b)


def _usable(router: Router) -> None:
    """A normal forward still matches the NumPy backend."""
    e = _energies(3, seed=9)
    ref = Router(GRAPH, router.params(), NP).forward(e, steps=2).next_energies
    assert_parity(router.backend.to_numpy(router.forward(e, steps=2).next_energies), ref, "after the error")


# ----------------------------------------------------------------- 1. eps of train_step


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), float("inf"), 1e-46, "1e-3"])
def test_train_step_validates_eps_before_any_work(backend, eps):
    r = _router(backend)
    opt = AdamW(r, lr=0.1)
    x = np.zeros((2, N), np.float32)
    before = _snapshot(r, opt)
    with pytest.raises(InvalidArgumentError, match=r"^eps must be"):
        r.train_step(x, np.full((2, N), 0.25, np.float32), opt, loss="cross_entropy", eps=eps)
    _assert_unchanged(before, _snapshot(r, opt))
    assert opt.t == 0
    res = r.train_step(x, np.full((2, N), 0.25, np.float32), opt, loss="cross_entropy")  # default eps
    assert np.isfinite(res.loss) and not res.skipped
    assert all(np.isfinite(a).all() for a in _snapshot(r, opt))
    _usable(r)


# ----------------------------------------------------------------- 2. the non-finite guard


def _overflowing_step(r: Router, opt: AdamW):
    """mse of energies 1e20 against -1e20: the loss overflows to inf in float32."""
    x = np.full((1, N), 1e20, np.float32)
    return r.train_step(x, -x, opt)


def test_non_finite_loss_skips_the_update_on_every_backend(backend):
    r = _router(backend)
    opt = AdamW(r, lr=0.05)
    x, tgt = _energies(), _energies(seed=1)
    r.train_step(x, tgt, opt)
    before = _snapshot(r, opt)
    res = _overflowing_step(r, opt)
    assert res.skipped is True
    assert not np.isfinite(res.loss)
    _assert_unchanged(before, _snapshot(r, opt))
    assert opt.state()["t"] == 1 and opt.skip_counts() == (1, 1)
    _overflowing_step(r, opt)
    assert opt.skip_counts() == (2, 2) and opt.state()["t"] == 1
    # the host t counts step() calls: it indexes the schedule (a skipped step moves it on)
    assert opt.t == 3
    res = r.train_step(x, tgt, opt)
    assert res.skipped is False and np.isfinite(res.loss)
    assert opt.skip_counts() == (0, 2) and opt.state()["t"] == 2
    assert all(np.isfinite(a).all() for a in _snapshot(r, opt))
    _usable(r)


def test_skipped_flag_and_state_match_numpy(gpu_backend):
    """The same sequence (good, overflowing, good, good) on NumPy and wgpu: the same skipped
    flags, the same t and skip counts, parameters within the parity tolerance."""
    runs = []
    for be in (NP, gpu_backend):
        r = _router(be)
        opt = AdamW(r, lr=0.05, max_grad_norm=1.0)
        flags = []
        for i in range(4):
            if i == 1:
                flags.append(_overflowing_step(r, opt).skipped)
            else:
                flags.append(r.train_step(_energies(seed=i), _energies(seed=10 + i), opt).skipped)
        runs.append((flags, opt.state(), opt.skip_counts(), r.params()))
    (fa, sa, ca, pa), (fb, sb, cb, pb) = runs
    assert fa == fb == [False, True, False, False]
    assert sa["t"] == sb["t"] == 3 and ca == cb == (0, 1)
    assert sa["skipped_total"] == sb["skipped_total"] == 1
    for name in ("q", "k", "bias"):
        assert_parity(getattr(pb, name), getattr(pa, name), name, rtol=1e-5)


def test_device_gradients_with_nan_or_inf_are_skipped(backend):
    """Backend-array gradients (a Gradients object on NumPy, device arrays on wgpu) go through
    the guard: NaN, inf and squares that overflow float32 are all skipped."""
    r = _router(backend)
    opt = AdamW(r, lr=0.1)
    before = _snapshot(r, opt)
    for bad in (np.nan, np.inf, -np.inf, 3e19):  # (3e19)^2 overflows float32
        g = [np.zeros((N, 3), np.float32), np.zeros((N, 3), np.float32), np.zeros(E, np.float32)]
        g[2][3] = bad
        dev = [backend.asarray(a) for a in g]
        grads = Gradients(q=dev[0], k=dev[1], bias=dev[2], energies=None, backend=backend)
        norm = opt.step(grads)
        assert backend.to_numpy(opt.last_skipped)[0] == 1.0
        assert not np.isfinite(backend.to_numpy(norm)[0])
    _assert_unchanged(before, _snapshot(r, opt))
    assert opt.skip_counts() == (4, 4) and opt.state()["t"] == 0


def test_non_finite_loss_argument_skips(backend):
    r = _router(backend)
    opt = AdamW(r, lr=0.1)
    before = _snapshot(r, opt)
    g = [backend.asarray(np.full(p.shape, 0.1, np.float32)) for p in r.parameters()]
    opt.step(g, loss=backend.asarray(np.array([np.nan], np.float32)))
    assert backend.to_numpy(opt.last_skipped)[0] == 1.0
    _assert_unchanged(before, _snapshot(r, opt))
    opt.step(g, loss=backend.asarray(np.array([1.5], np.float32)))
    assert backend.to_numpy(opt.last_skipped)[0] == 0.0
    assert opt.state()["t"] == 1 and opt.skip_counts() == (0, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])
def test_non_finite_host_gradients_raise_naming_the_array(backend, bad):
    r = _router(backend)
    opt = AdamW(r, lr=0.1)
    before = _snapshot(r, opt)
    g = [np.zeros((N, 3)), np.zeros((N, 3)), np.zeros(E)]
    g[2][1] = bad  # float64 1e39 is inf in float32
    with pytest.raises(InvalidArgumentError, match=r"^grads\.bias must be finite"):
        opt.step(g)
    _assert_unchanged(before, _snapshot(r, opt))
    assert opt.t == 0 and opt.skip_counts() == (0, 0)
    opt.step([np.zeros((N, 3)), np.zeros((N, 3)), np.ones(E)])
    assert opt.state()["t"] == 1
    _usable(r)


def test_skip_counts_survive_state_round_trip_and_resume_the_schedule(backend):
    r = _router(backend)
    sched = ew.optim.make_schedule("step", 0.1, step_size=1, gamma=0.5)
    opt = AdamW(r, schedule=sched)
    r.train_step(_energies(), _energies(seed=1), opt)
    _overflowing_step(r, opt)
    st = opt.state()
    assert (st["t"], st["skipped_consecutive"], st["skipped_total"]) == (1, 1, 1)
    r2 = Router(GRAPH, r.params(), backend)
    opt2 = AdamW(r2, schedule=sched)
    opt2.load_state(st)
    assert opt2.t == opt.t == 2 and opt2.skip_counts() == (1, 1)
    assert opt2.lr_at(opt2.t + 1) == opt.lr_at(opt.t + 1) == 0.1 * 0.5**2
    # a state without the counts (an older checkpoint) still loads, counts 0
    old = {k: v for k, v in st.items() if not k.startswith("skipped")}
    opt2.load_state(old)
    assert opt2.skip_counts() == (0, 0) and opt2.t == 1
    with pytest.raises(InvalidArgumentError, match="skip counts"):
        opt2.load_state({**st, "skipped_consecutive": 5})


def test_skipped_step_is_one_submit_without_readback(gpu_backend):
    """The guard costs no dispatch and no readback: a skipped step has the same counters as
    an applied one."""
    be = gpu_backend
    r = _router(be)
    opt = AdamW(r, lr=0.05)
    good = be.asarray(_energies(1)), be.asarray(_energies(1, seed=1))
    big = be.asarray(np.full((1, N), 1e20, np.float32))
    bad = big, be.asarray(np.full((1, N), -1e20, np.float32))
    for _ in range(3):  # warm-up: pipelines, pool, records
        r.train_step(*good, opt)
        r.train_step(*bad, opt)
    be.synchronize()
    per = {}
    for name, data in (("good", good), ("bad", bad)):
        before = be.counters.snapshot()
        r.train_step(*data, opt)
        after = be.counters.snapshot()
        per[name] = {k: after[k] - before[k] for k in ("submits", "dispatches", "readbacks", "buffers_created")}
    assert per["good"] == per["bad"]
    assert per["bad"]["submits"] == 1 and per["bad"]["readbacks"] == 0 and per["bad"]["buffers_created"] == 0
    assert opt.skip_counts() == (1, 4)


# ----------------------------------------------------------------- 3. float32 overflow


def test_float32_overflow_of_inputs_is_refused(backend):
    r = _router(backend)
    opt = AdamW(r)
    e = _energies().astype(np.float64)
    big = e.copy()
    big[0, 1] = 1e39
    with pytest.raises(InvalidArgumentError, match=r"^energies must be finite in float32"):
        r.forward(big)
    with pytest.raises(InvalidArgumentError, match=r"^energies must be finite in float32"):
        r.train_step(big, e, opt)
    with pytest.raises(InvalidArgumentError, match=r"^target must be finite in float32"):
        r.train_step(e, big, opt)
    out = r.forward(e)
    with pytest.raises(InvalidArgumentError, match=r"^grad_next must be finite in float32"):
        r.backward(out, big)
    gpi = np.zeros(E)
    gpi[2] = -1e39
    with pytest.raises(InvalidArgumentError, match=r"^grad_pi must be finite in float32"):
        r.backward(out, e, gpi)
    assert opt.t == 0
    _usable(r)


def test_float32_overflow_of_parameters_is_refused(backend):
    for name in ("q", "k", "bias"):
        p = _params()
        arr = np.array(getattr(p, name), dtype=np.float64)
        arr.reshape(-1)[0] = 1e300
        setattr(p, name, arr)
        with pytest.raises(InvalidArgumentError, match=rf"^params\.{name} must be finite in float32"):
            Router(GRAPH, p, backend)
    heavy = ew.Graph.from_edges([0, 1], [1, 0], 2, weights=[1.0, 1e39])  # bias starts at the weights
    with pytest.raises(InvalidArgumentError, match=r"^graph\.weights must be finite in float32"):
        RouterParams.init(heavy, 2)
    for kw, match in ((dict(alpha=1e39), r"^alpha must be finite in float32"),
                      (dict(noise=1e39), r"^noise must be finite in float32")):
        with pytest.raises(InvalidArgumentError, match=match):
            _params(**kw)
    r = _router(backend)
    with pytest.raises(InvalidArgumentError, match=r"^alpha must be finite in float32"):
        r.alpha = 1e39
    with pytest.raises(InvalidArgumentError, match=r"^params\.alpha must be finite in float32"):
        r.set_params(RouterParams(*(getattr(_params(), n) for n in ("q", "k", "bias")), alpha=-1e39))
    assert r.alpha == pytest.approx(0.9)
    _usable(r)


def test_float64_backend_keeps_float64_range():
    """Finiteness is checked in the backend's dtype: 1e300 is fine in float64."""
    be = NumpyBackend("float64")
    p = _params()
    p.bias = np.full(E, 1e300)
    r = Router(GRAPH, p, be)
    assert r.params().bias.dtype == np.float64 and np.isfinite(r.forward(_energies()).next_energies).all()
    with pytest.raises(InvalidArgumentError, match=r"^alpha must be finite in float32"):
        r.alpha = 1e39  # scalars reach float32 uniforms on wgpu: float32 everywhere


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lr=1e39), r"^lr must be finite in float32"),
        (dict(eps=1e-46), r"^eps must be > 0, got 1e-46 \(0 in float32\)"),
        (dict(eps=1e39), r"^eps must be finite in float32"),
        (dict(max_grad_norm=1e39), r"^max_grad_norm must be finite in float32"),
        (dict(weight_decay=1e39), r"^weight_decay must be finite in float32"),
    ],
)
def test_optimizer_hyperparameters_checked_in_float32(kw, match):
    with pytest.raises(InvalidArgumentError, match=match):
        AdamW(_router(NP), **kw)


def test_schedule_lr_checked_in_float32_at_each_step(backend):
    r = _router(backend)
    opt = AdamW(r, schedule=lambda t: 1e39 if t == 2 else 0.01)
    g = [np.zeros((N, 3)), np.zeros((N, 3)), np.ones(E)]
    opt.step(g)
    before = _snapshot(r, opt)
    with pytest.raises(InvalidArgumentError, match=r"^lr of update 2 \(from the schedule\)"):
        opt.step(g)
    _assert_unchanged(before, _snapshot(r, opt))
    assert opt.t == 1


def test_loss_front_ends_check_float32(backend):
    pred = _energies()
    big = pred.astype(np.float64)
    big[1, 2] = 1e39
    dev = backend.asarray(pred)
    if backend.name == "numpy":  # numpy inputs: a NumPy backend of their precision (float64 here)
        assert np.isfinite(losses.mse(dev, big)[0])
        dev = backend.asarray(pred)
        with pytest.raises(InvalidArgumentError, match=r"^target must be finite \(no NaN or inf\)"), \
                np.errstate(over="ignore"):
            losses.mse(dev, big.astype(np.float32))
    else:
        with pytest.raises(InvalidArgumentError, match=r"^target must be finite in float32"):
            losses.mse(dev, big)
        with pytest.raises(InvalidArgumentError, match=r"^target must be finite in float32"):
            losses.cross_entropy(dev, big)
    with pytest.raises(InvalidArgumentError, match=r"^lam must be finite in float32"):
        losses.entropy_regularization(backend.asarray(np.full(E, 0.5, np.float32)), 1e39, GRAPH)
    with pytest.raises(InvalidArgumentError, match=r"^eps must be > 0, got 1e-50 \(0 in float32\)"):
        losses.cross_entropy(dev, pred, eps=1e-50)


# ----------------------------------------------------------------- 4. tau


def _refused_everywhere(backend, name: str, value, match: str) -> Router:
    """``value`` for hyper-parameter ``name`` is refused by RouterParams.init, by the Router
    (RouterParams.validate) and by the router's attribute; returns that (intact) router."""
    with pytest.raises(InvalidArgumentError, match=rf"^{name} {match}"):
        _params(**{name: value})
    p = _params()
    setattr(p, name, value)
    with pytest.raises(InvalidArgumentError, match=rf"^params\.{name} {match}"):
        Router(GRAPH, p, backend)
    r = _router(backend)
    with pytest.raises(InvalidArgumentError, match=rf"^{name} {match}"):
        setattr(r, name, value)
    return r


@pytest.mark.parametrize("tau", [1e-46, 1e-40, 0.0, -1.0, float("inf"), 1e39, float("nan")])
def test_tau_must_be_a_normal_float32(backend, tau):
    r = _refused_everywhere(backend, "tau", tau, "must be")
    assert r.tau == pytest.approx(0.8)
    _usable(r)


def test_smallest_accepted_tau_matches_numpy(backend):
    """tau = the smallest normal float32 with large and tied logits: forward, backward and a
    train step agree with NumPy on every backend, and nothing non-finite is written."""
    p = _params(tau=TINY)
    assert p.tau == TINY
    p.bias = np.array([1e30, 1e30, -1e30, 3.0, 2.0, 0.0, -5.0], np.float32)  # a tie on node 0
    e = _energies()
    rn, rb = Router(GRAPH, p, NP), Router(GRAPH, p, backend)
    on, ob = rn.forward(e, steps=2), rb.forward(e, steps=2)
    pi = backend.to_numpy(ob.edge_pi)
    assert_parity(pi, on.edge_pi, "pi")
    np.testing.assert_array_equal(on.edge_pi, [0.5, 0.5, 0.0, 1.0, 0.0, 1.0, 1.0])
    assert_parity(backend.to_numpy(ob.next_energies), on.next_energies, "next")
    gn = np.ones_like(e)
    a, b = rn.backward(on, gn), rb.backward(ob, gn)
    for name in ("q", "k", "bias"):
        ga, gb = getattr(a, name), backend.to_numpy(getattr(b, name))
        assert np.array_equal(np.isfinite(ga), np.isfinite(gb)), name
        fin = np.isfinite(ga)
        assert_parity(gb[fin], ga[fin], name)
    flags = []
    for r in (rn, rb):
        opt = AdamW(r, lr=0.01)
        res = r.train_step(e, _energies(seed=3), opt)
        flags.append(res.skipped)
        assert all(np.isfinite(x).all() for x in _snapshot(r, opt))
    assert flags[0] == flags[1]


@pytest.mark.parametrize("scale", [1.0, 1e30, 3e38])
def test_softmax_op_at_the_smallest_tau_matches_numpy_on_every_path(backend, scale):
    """segment_softmax at tau = float32 tiny (z = logit / tau overflows to +-inf and is clamped
    to the float32 range on both backends): segments of degree 2 (one-pass online), 20 (the
    serial loop) and 300 (a workgroup per segment), with and without top-k, ties included."""
    degs = (2, 20, 300)
    src = np.repeat(np.arange(len(degs)), degs)
    g = ew.Graph.from_edges(src, (np.arange(src.size) % 5) + len(degs), len(degs) + 5)
    rng = np.random.default_rng(int(scale) % 97)
    with np.errstate(over="ignore"):
        logits = (rng.standard_normal(g.num_edges) * scale).astype(np.float32)
    logits[np.isinf(logits)] = np.float32(3e38)
    logits[[0, 1, 2, 3, 22, 23]] = logits.max()  # ties at the top of each segment
    dev = backend.asarray(logits)
    for k in (0, 1, 3, 7):
        ref = NP.segment_softmax(g, logits, TINY, k)
        got = backend.to_numpy(backend.segment_softmax(g, dev, TINY, k))
        assert np.isfinite(got).all()
        assert_parity(got, ref, f"pi (top_k={k})")


# ----------------------------------------------------------------- 14. foreign arrays, ragged, top_k


def _two_adapters():
    if len(ADAPTERS) < 2:
        pytest.skip(f"needs two wgpu adapters, found {len(ADAPTERS)}")
    return wgpu_backend_for(ADAPTERS[0]["index"]), wgpu_backend_for(ADAPTERS[1]["index"])


@pytest.mark.parametrize("target_kind", ["numpy", "other-adapter"])
def test_arrays_of_another_adapter_are_refused_by_name(target_kind):
    a0, a1 = _two_adapters()
    be = NP if target_kind == "numpy" else a1
    r = _router(be)
    opt = AdamW(r)
    e = _energies()
    foreign = {
        "energies": a0.asarray(e),
        "grad_next": a0.asarray(e),
        "active": a0.asarray(np.ones((2, N), bool)),
        "target": a0.asarray(e),
        "mask": a0.asarray(np.ones((2, N), bool)),
    }
    msg = r"is an array of another backend"
    with pytest.raises(InvalidArgumentError, match=r"^energies " + msg):
        r.forward(foreign["energies"])
    with pytest.raises(InvalidArgumentError, match=r"^active " + msg):
        r.forward(e, active=foreign["active"])
    out = r.forward(e)
    with pytest.raises(InvalidArgumentError, match=r"^grad_next " + msg):
        r.backward(out, foreign["grad_next"])
    with pytest.raises(InvalidArgumentError, match=r"^target " + msg):
        r.train_step(e, foreign["target"], opt)
    with pytest.raises(InvalidArgumentError, match=r"^mask " + msg):
        r.train_step(e, e, opt, mask=foreign["mask"])
    with pytest.raises(InvalidArgumentError, match=r"^grads\.q " + msg):
        opt.step([a0.asarray(np.zeros((N, 3), np.float32)), np.zeros((N, 3)), np.zeros(E)])
    assert opt.t == 0
    _usable(r)


def test_ragged_energies_are_a_shape_error(backend):
    r = _router(backend)
    with pytest.raises(ShapeError, match=r"^energies must be a rectangular numeric array"):
        r.forward([[1.0, 2.0, 3.0, 4.0], [1.0]])
    with pytest.raises(ShapeError, match=r"^pred must be a rectangular numeric array"):
        losses.mse([[1.0, 2.0], [1.0]], np.zeros((2, 2)))
    _usable(r)


@pytest.mark.parametrize("top_k", [2**32, 2**40, 2**64])
def test_top_k_must_fit_u32(backend, top_k):
    r = _refused_everywhere(backend, "top_k", top_k, "must be an int <= 4294967295")
    r.top_k = 2**32 - 1  # the largest accepted: every segment keeps every edge
    assert_parity(backend.to_numpy(r.forward(_energies()).edge_pi), _router(NP).forward(_energies()).edge_pi, "pi")


# ----------------------------------------------------------------- 15. keep_history


def test_keep_history_false_keeps_the_last_states_and_backward_refuses(backend):
    r = _router(backend)
    e = _energies()
    full = r.forward(e, steps=5, retain_sinks=True)
    light = r.forward(e, steps=5, retain_sinks=True, keep_history=False)
    assert len(full.history) == 6 and len(light.history) == 2
    to = backend.to_numpy
    np.testing.assert_array_equal(to(light.next_energies), to(full.next_energies))
    np.testing.assert_array_equal(to(light.edge_flow), to(full.edge_flow))
    assert light.metrics == full.metrics
    with pytest.raises(InvalidArgumentError, match=r"keep_history=False"):
        r.backward(light, np.ones_like(e))
    with pytest.raises(InvalidArgumentError, match=r"^keep_history must be a bool"):
        r.forward(e, keep_history=1)
    _usable(r)


def test_long_forward_without_history_does_not_grow_memory(backend):
    r = _router(backend)
    e = _energies(3)
    steps = 600
    if backend.name != "numpy":  # NumPy: the dropped states are freed at once (history length below)
        # the states dropped along the way go back to the device pool (their commands are
        # submitted every 128 steps): after a short warm-up, a long forward creates no buffer
        # (without the periodic submit each of its 600 states would need a new one)
        r.forward(e, steps=150, keep_history=False)
        backend.synchronize()
        before = backend.counters.buffers_created
        out = r.forward(e, steps=steps, keep_history=False)
        backend.synchronize()
        assert backend.counters.buffers_created - before <= 4
    out = r.forward(e, steps=steps, keep_history=False)
    assert len(out.history) == 2
    ref = r.forward(e, steps=steps).next_energies
    np.testing.assert_array_equal(backend.to_numpy(out.next_energies), backend.to_numpy(ref))
    # the size check lets a long forward without history through (the 50000 steps)
    r._check_history(50000, 3, False)


def test_forward_whose_history_cannot_fit_is_refused_before_any_work(backend):
    r = _router(backend)
    e = _energies(3)
    counters = getattr(backend, "counters", None)
    d0 = counters.dispatches if counters else 0
    with pytest.raises(InvalidArgumentError, match=r"^steps = 1000000000000 needs 48000000000048 bytes"):
        r.forward(e, steps=10**12)
    if counters:
        assert counters.dispatches == d0
    _usable(r)


# ----------------------------------------------------------------- 16. masks


def test_numeric_zero_one_masks_equal_bool_masks(backend):
    pred, tgt = _energies(), _energies(seed=1)
    dp = backend.asarray(pred)
    bmask = np.array([[True, False, True, True], [False, False, True, False]])
    ref = losses.mse(dp, tgt, bmask)
    for mask in (bmask.astype(np.float32), bmask.astype(np.int64), bmask.astype(np.uint8)):
        got = losses.mse(dp, tgt, mask)
        assert got[0] == ref[0]
        np.testing.assert_array_equal(backend.to_numpy(got[1]), backend.to_numpy(ref[1]))
    loss, grad = losses.mse(dp, tgt, np.zeros_like(pred))  # the reproduction
    assert loss == 0.0 and not backend.to_numpy(grad).any()
    for bad in (np.full(pred.shape, 0.5), np.full(pred.shape, 2), np.full(pred.shape, np.nan), np.full(pred.shape, -1)):
        with pytest.raises(InvalidArgumentError, match=r"^mask must hold only 0 and 1"):
            losses.mse(dp, tgt, bad)


def test_train_step_mask_and_active_accept_zero_one_numbers(backend):
    e, tgt = _energies(), _energies(seed=1)
    bmask = np.array([[True, False, True, True], [False, True, True, False]])
    active = np.array([1, 1, 0, 1])
    runs = []
    for mask, act in ((bmask, active.astype(bool)), (bmask.astype(np.float64), active)):
        r = _router(backend)
        opt = AdamW(r, lr=0.05)
        res = r.train_step(e, tgt, opt, mask=mask, active=act)
        runs.append((res.loss, r.params().bias))
    assert runs[0][0] == runs[1][0] and np.array_equal(runs[0][1], runs[1][1])
    r = _router(backend)
    opt = AdamW(r)
    with pytest.raises(InvalidArgumentError, match=r"^mask must hold only 0 and 1"):
        r.train_step(e, tgt, opt, mask=np.full(e.shape, 0.3))
    with pytest.raises(InvalidArgumentError, match=r"^active must hold only 0 and 1"):
        r.forward(e, active=np.array([1, 2, 0, 1]))
    assert opt.t == 0
    _usable(r)


# ----------------------------------------------------------------- 17. AdamW defaults


def test_adamw_defaults_follow_torch():
    opt = AdamW(_router(NP))
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay, opt.max_grad_norm) == (1e-3, (0.9, 0.999), 1e-8, 0.01, None)
    # one step with the defaults: p = p (1 - lr wd) - lr * sign-ish(g) (m_hat / (sqrt(v_hat) + eps))
    r = Router(GRAPH, _params(), NumpyBackend("float64"))
    opt = AdamW(r)
    p0 = r.params().bias.copy()
    g = np.linspace(-1.0, 1.0, E)
    opt.step([np.zeros((N, 3)), np.zeros((N, 3)), g])
    expected = p0 * (1 - 1e-3 * 0.01) - 1e-3 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(r.params().bias, expected, rtol=0, atol=1e-15)

