"""AdamW, clipping, schedules and CPU training (SPEC §5; audit §3 CPU training, §7 optimizers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from energetic_wgpu import AdamW, Graph, GraphConfig, Router, RouterParams, build_lattice, losses
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import InvalidArgumentError, ShapeError
from energetic_wgpu.optim import ConstantLR, CosineLR, StepLR, WarmupLR, make_schedule

BE64 = NumpyBackend("float64")


def make_router(seed=0, backend=BE64):
    g = Graph.from_edges([0, 0, 1, 1, 1, 2, 3], [1, 2, 2, 3, 0, 3, 0], num_nodes=5)
    rng = np.random.default_rng(seed)
    p = RouterParams(
        q=rng.standard_normal((5, 3)), k=rng.standard_normal((5, 3)), bias=rng.standard_normal(7), top_k=0
    )
    return Router(g, p, backend=backend)


def grad_seq(router, steps, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [[scale * rng.standard_normal(np.shape(p)) for p in router.parameters()] for _ in range(steps)]


def ref_adamw(params, grads_seq, lr_fn, b1, b2, eps, wd, max_norm):
    """Independent float64 AdamW (torch.optim.AdamW + clip_grad_norm_ conventions)."""
    p = [np.array(x, dtype=np.float64) for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    norms = []
    for t, grads in enumerate(grads_seq, start=1):
        total = math.sqrt(sum(float(np.sum(np.square(g))) for g in grads))
        norms.append(total)
        coef = 1.0 if max_norm is None else min(1.0, max_norm / (total + 1e-6))
        lr = lr_fn(t)
        for i, g in enumerate(grads):
            g = g * coef
            p[i] = p[i] * (1 - lr * wd)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            p[i] = p[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v, norms


def assert_close(a, b, tol=1e-13):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
    assert float(np.abs(a - b).max()) <= tol * scale


# --------------------------------------------------------------------- AdamW formula


@pytest.mark.parametrize(
    "lr, betas, eps, wd, max_norm",
    [
        (1e-2, (0.9, 0.999), 1e-8, 0.0, None),
        (3e-2, (0.8, 0.95), 1e-6, 0.1, None),
        (5e-3, (0.5, 0.9), 1e-3, 0.01, 1.0),
        (1e-1, (0.0, 0.0), 1e-8, 0.5, 100.0),
    ],
)
def test_adamw_matches_closed_form(lr, betas, eps, wd, max_norm):
    r = make_router()
    p0 = [np.array(p) for p in r.parameters()]
    opt = AdamW(r, lr=lr, betas=betas, eps=eps, weight_decay=wd, max_grad_norm=max_norm)
    gs = grad_seq(r, 6, scale=2.0)
    norms = [float(np.asarray(opt.step(g))[0]) for g in gs]
    ref_p, ref_m, ref_v, ref_norms = ref_adamw(p0, gs, lambda t: lr, betas[0], betas[1], eps, wd, max_norm)
    for got, ref in zip(r.parameters(), ref_p):
        assert_close(got, ref)
    st = opt.state()
    assert st["t"] == 6 and opt.t == 6
    for i, name in enumerate(("q", "k", "bias")):
        assert_close(st["m"][name], ref_m[i])
        assert_close(st["v"][name], ref_v[i])
    assert_close(norms, ref_norms)


def test_adamw_float32_backend_close_to_formula():
    r = make_router(backend=NumpyBackend("float32"))
    p0 = [np.array(p, dtype=np.float64) for p in r.parameters()]
    opt = AdamW(r, lr=1e-2, betas=(0.85, 0.99), eps=1e-7, weight_decay=0.05, max_grad_norm=2.0)
    gs = grad_seq(r, 5)
    for g in gs:
        opt.step([x.astype(np.float32) for x in g])
    ref_p, *_ = ref_adamw(p0, gs, lambda t: 1e-2, 0.85, 0.99, 1e-7, 0.05, 2.0)
    for got, ref in zip(r.parameters(), ref_p):
        assert got.dtype == np.float32
        assert_close(got, ref, tol=1e-5)


def test_adamw_accepts_gradients_object():
    r = make_router()
    out = r.forward(np.ones(5), steps=2)
    g = r.backward(out, np.ones(5))
    p0 = [np.array(p) for p in r.parameters()]
    opt = AdamW(r, lr=0.01, weight_decay=0.0)
    norm = float(opt.step(g)[0])
    assert abs(norm - g.norm) < 1e-12
    ref_p, *_ = ref_adamw(p0, [[np.asarray(x) for x in g.as_list()]], lambda t: 0.01, 0.9, 0.999, 1e-8, 0.0, None)
    for got, ref in zip(r.parameters(), ref_p):
        assert_close(got, ref)


# ------------------------------------------------------------------------ clipping


def test_clipping_caps_global_norm():
    r = make_router()
    gs = grad_seq(r, 1, scale=10.0)
    norm = math.sqrt(sum(float(np.sum(g**2)) for g in gs[0]))
    assert norm > 5
    opt = AdamW(r, lr=0.1, betas=(0.9, 0.999), max_grad_norm=0.5)
    returned = float(opt.step(gs[0])[0])
    assert abs(returned - norm) < 1e-12  # the pre-clip norm
    # the applied update equals an unclipped update with grads scaled by max_norm / (norm + 1e-6)
    coef = 0.5 / (norm + 1e-6)
    r2 = make_router()
    opt2 = AdamW(r2, lr=0.1, betas=(0.9, 0.999))
    opt2.step([g * coef for g in gs[0]])
    for a, b in zip(r.parameters(), r2.parameters()):
        assert_close(a, b, 1e-14)
    # the gradient the moments saw has global norm max_norm
    st = opt.state()
    seen = math.sqrt(sum(float(np.sum((st["m"][n] / 0.1) ** 2)) for n in ("q", "k", "bias")))
    assert abs(seen - 0.5 * norm / (norm + 1e-6)) < 1e-12
    # and it differs from the unclipped update
    r3 = make_router()
    AdamW(r3, lr=0.1).step(gs[0])
    st3_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(r.parameters(), r3.parameters()))
    assert st3_diff > 1e-6


def test_clipping_changes_moments_not_only_params():
    r = make_router()
    gs = grad_seq(r, 1, scale=10.0)
    clipped = AdamW(r, lr=0.1, max_grad_norm=0.5)
    clipped.step(gs[0])
    r2 = make_router()
    plain = AdamW(r2, lr=0.1)
    plain.step(gs[0])
    assert not np.allclose(clipped.state()["v"]["q"], plain.state()["v"]["q"])


def test_clipping_inactive_below_max_norm():
    r = make_router()
    gs = grad_seq(r, 3, scale=0.1)
    opt = AdamW(r, lr=0.05, weight_decay=0.01, max_grad_norm=1e3)
    r2 = make_router()
    opt2 = AdamW(r2, lr=0.05, weight_decay=0.01, max_grad_norm=None)
    for g in gs:
        opt.step(g)
        opt2.step(g)
    for a, b in zip(r.parameters(), r2.parameters()):
        assert np.array_equal(a, b)


# ------------------------------------------------------------- weight decay, lr = 0


def test_weight_decay_shrinks_by_formula_with_zero_grads():
    r = make_router()
    p0 = [np.array(p) for p in r.parameters()]
    lr, wd = 0.02, 0.3
    opt = AdamW(r, lr=lr, weight_decay=wd)
    zeros = [np.zeros_like(p) for p in p0]
    for t in range(1, 4):
        opt.step(zeros)
        for got, ref in zip(r.parameters(), p0):
            assert_close(got, ref * (1 - lr * wd) ** t, 1e-15)


def test_lr_zero_leaves_parameters_bit_identical():
    r = make_router()
    p0 = [np.array(p) for p in r.parameters()]
    opt = AdamW(r, lr=0.0, weight_decay=0.5, max_grad_norm=1.0)
    for g in grad_seq(r, 4, scale=3.0):
        opt.step(g)
    for a, b in zip(r.parameters(), p0):
        assert np.array_equal(a, b)
    assert opt.state()["t"] == 4
    assert np.abs(opt.state()["m"]["q"]).max() > 0


# --------------------------------------------------------------------- state


def test_load_state_round_trip_continues_trajectory():
    gs = grad_seq(make_router(), 6)
    kw = dict(lr=0.03, betas=(0.8, 0.97), eps=1e-7, weight_decay=0.02, max_grad_norm=1.5)
    r = make_router()
    opt = AdamW(r, **kw)
    for g in gs[:3]:
        opt.step(g)
    state = opt.state()
    params = r.params()
    for g in gs[3:]:
        opt.step(g)
    r2 = Router(r.graph, params, backend=BE64)
    opt2 = AdamW(r2, **kw)
    opt2.load_state(state)
    assert opt2.t == 3 and opt2.state()["t"] == 3
    for g in gs[3:]:
        opt2.step(g)
    for a, b in zip(r.parameters(), r2.parameters()):
        assert np.array_equal(a, b)
    # state() returns copies
    state["m"]["q"][:] = 123.0
    assert not np.any(opt.state()["m"]["q"] == 123.0)


def test_load_state_errors():
    opt = AdamW(make_router())
    with pytest.raises(InvalidArgumentError, match="state must be a dict with 't', 'm' and 'v'"):
        opt.load_state({"t": 1})
    good = opt.state()
    with pytest.raises(InvalidArgumentError, match=r"state\['t'\] must be >= 0"):
        opt.load_state({**good, "t": -1})
    bad = {"t": 1, "m": dict(good["m"]), "v": good["v"]}
    del bad["m"]["k"]
    with pytest.raises(InvalidArgumentError, match=r"state\['m'\] has no entry 'k'"):
        opt.load_state(bad)
    bad = {"t": 1, "m": good["m"], "v": {**good["v"], "bias": np.zeros(3)}}
    with pytest.raises(ShapeError, match=r"state\['v'\]\['bias'\] must have shape \(7,\), got \(3,\)"):
        opt.load_state(bad)


def test_step_grad_errors():
    r = make_router()
    opt = AdamW(r)
    with pytest.raises(ShapeError, match=r"grads must hold 3 arrays \(q, k, bias\), got 2"):
        opt.step([np.zeros((5, 3)), np.zeros((5, 3))])
    with pytest.raises(ShapeError, match=r"grads.bias must have shape \(7,\), got \(6,\)"):
        opt.step([np.zeros((5, 3)), np.zeros((5, 3)), np.zeros(6)])
    assert opt.t == 0


# ------------------------------------------------------------------- schedules


def test_constant_schedule():
    s = ConstantLR(0.1)
    assert [s(t) for t in (1, 2, 100)] == [0.1, 0.1, 0.1]
    assert make_schedule("constant", 0.1)(7) == 0.1


def test_step_schedule():
    s = StepLR(1.0, step_size=3, gamma=0.5)
    assert [s(t) for t in range(1, 10)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    s2 = make_schedule("step", 0.2, step_size=2, gamma=0.1)
    for t in range(1, 8):
        assert abs(s2(t) - 0.2 * 0.1 ** ((t - 1) // 2)) < 1e-18


def test_cosine_schedule():
    s = CosineLR(1.0, total_steps=10, min_lr=0.1)
    for t in range(1, 15):
        frac = min(t - 1, 10) / 10
        assert abs(s(t) - (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))) < 1e-15
    assert s(1) == 1.0 and abs(s(11) - 0.1) < 1e-15 and abs(s(50) - 0.1) < 1e-15
    assert abs(s(6) - 0.55) < 1e-15


def test_warmup_schedule():
    s = WarmupLR(ConstantLR(0.4), warmup_steps=4)
    assert [s(t) for t in range(1, 7)] == [0.1, 0.2, 0.30000000000000004, 0.4, 0.4, 0.4]
    s2 = make_schedule("cosine", 1.0, total_steps=20, warmup_steps=5)
    for t in range(1, 25):
        base = 0.5 * (1 + math.cos(math.pi * min(t - 1, 20) / 20))
        assert abs(s2(t) - base * min(1.0, t / 5)) < 1e-15


def test_adamw_uses_schedule_lr_per_step():
    sched = make_schedule("step", 0.1, step_size=2, gamma=0.5, warmup_steps=3)
    r = make_router()
    p0 = [np.array(p) for p in r.parameters()]
    opt = AdamW(r, lr=123.0, schedule=sched, weight_decay=0.1)
    gs = grad_seq(r, 6)
    for g in gs:
        opt.step(g)
    assert opt.lr_at(1) == sched(1) and opt.lr_at(5) == sched(5)
    ref_p, *_ = ref_adamw(p0, gs, sched, 0.9, 0.999, 1e-8, 0.1, None)
    for a, b in zip(r.parameters(), ref_p):
        assert_close(a, b)


# ------------------------------------------------------------- invalid arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1.0), r"lr must be >= 0"),
        (dict(lr=float("nan")), r"lr must be >= 0 and finite"),
        (dict(lr="0.1"), r"lr must be a number"),
        (dict(betas=(1.0, 0.9)), r"betas\[0\] must be in \[0, 1\)"),
        (dict(betas=(0.9, -0.1)), r"betas\[1\] must be in \[0, 1\)"),
        (dict(betas=(0.9,)), r"betas must be a pair"),
        (dict(betas=0.9), r"betas must be a pair"),
        (dict(eps=0.0), r"eps must be > 0"),
        (dict(eps=-1e-8), r"eps must be > 0"),
        (dict(weight_decay=-0.1), r"weight_decay must be >= 0"),
        (dict(weight_decay=float("inf")), r"weight_decay must be >= 0 and finite"),
        (dict(max_grad_norm=0.0), r"max_grad_norm must be > 0"),
        (dict(max_grad_norm=-1.0), r"max_grad_norm must be > 0"),
        (dict(schedule="cosine"), r"schedule must be callable"),
    ],
)
def test_adamw_invalid_hyperparameters(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        AdamW(make_router(), **kwargs)


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda: StepLR(0.1, step_size=0), "step_size must be an int >= 1"),
        (lambda: StepLR(0.1, step_size=2, gamma=0.0), "gamma must be > 0"),
        (lambda: CosineLR(0.1, total_steps=0), "total_steps must be an int >= 1"),
        (lambda: CosineLR(0.1, total_steps=5, min_lr=-1.0), "min_lr must be >= 0"),
        (lambda: WarmupLR(ConstantLR(0.1), warmup_steps=0), "warmup_steps must be an int >= 1"),
        (lambda: make_schedule("linear", 0.1), "unknown schedule 'linear'"),
        (lambda: make_schedule("step", 0.1), "schedule 'step' needs step_size"),
        (lambda: make_schedule("cosine", 0.1), "schedule 'cosine' needs total_steps"),
        (lambda: make_schedule("constant", -0.1), "lr must be >= 0"),
    ],
)
def test_schedule_invalid_arguments(fn, match):
    with pytest.raises(InvalidArgumentError, match=match):
        fn()


# ---------------------------------------------------------------------- training


def _task():
    g = build_lattice(GraphConfig(layers=4, nodes_per_layer=8, local_neighbors=3, jump_neighbors=2, seed=5))
    teacher = Router(g, RouterParams.init(g, dim=4, tau=0.5, seed=1, noise=1.0), backend="numpy")
    rng = np.random.default_rng(0)
    en = np.zeros((16, g.num_nodes), np.float32)
    en[:, :8] = rng.random((16, 8))
    target = np.asarray(teacher.forward(en, steps=3, retain_sinks=True).next_energies)
    student = Router(g, RouterParams.init(g, dim=4, tau=0.5, seed=2, noise=0.3), backend="numpy")
    return student, en, target


def test_training_loss_decreases():
    student, en, target = _task()
    opt = AdamW(student, lr=0.05, max_grad_norm=1.0)
    hist = []
    for _ in range(50):
        out = student.forward(en, steps=3, retain_sinks=True)
        loss, grad = losses.mse(out.next_energies, target)
        hist.append(loss)
        opt.step(student.backward(out, grad))
    assert all(np.isfinite(hist))
    assert hist[-1] < 0.05 * hist[0], (hist[0], hist[-1])
    assert np.mean(hist[-5:]) < np.mean(hist[:5])


def test_masked_loss_masked_out_gradient_exactly_zero():
    student, en, target = _task()
    g = student.graph
    mask = np.zeros(target.shape, bool)
    mask[:, -8:] = True  # only the last layer counts
    mask[::2, -3:] = False
    out = student.forward(en, steps=3, retain_sinks=True)
    loss, grad = losses.mse(out.next_energies, target, mask)
    assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()
    grads = student.backward(out, grad)
    # changing the targets of masked-out outputs changes nothing at all
    target2 = target.copy()
    target2[~mask] += 100.0
    loss2, grad2 = losses.mse(out.next_energies, target2, mask)
    assert loss2 == loss and np.array_equal(grad2, grad)
    grads2 = student.backward(out, grad2)
    for name in ("q", "k", "bias", "energies"):
        assert np.array_equal(getattr(grads, name), getattr(grads2, name))
    # a mask that keeps nothing: zero gradients everywhere
    loss0, grad0 = losses.mse(out.next_energies, target, np.zeros(target.shape, bool))
    g0 = student.backward(out, grad0)
    assert loss0 == 0.0 and g0.norm == 0.0 and (np.asarray(g0.energies) == 0).all()
    assert g.num_nodes == 32
