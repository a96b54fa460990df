"""``backend.counters()`` on every backend, and the dispatch budget of a steady-state train step.

On NumPy every counter is 0. On wgpu a steady-state ``Router.train_step`` (every degree <= 32,
device-resident inputs, constant lr) is exactly one submit, no new buffers, no upload or
readback, and a fixed number of dispatches (``STEP_DISPATCHES``: see docs/architecture.md,
"The train step's dispatches").
"""

from __future__ import annotations

import numpy as np
import pytest
from graphs import degree_graph

from energetic_wgpu import AdamW, GraphConfig, Router, RouterParams, build_lattice
from energetic_wgpu.backends.base import COUNTER_NAMES

GRAPH = build_lattice(GraphConfig(layers=3, nodes_per_layer=32, local_neighbors=6, jump_neighbors=2, seed=4))

#: dispatches of a steady-state mse train step, by (steps, masked)
STEP_DISPATCHES = {(1, False): 9, (2, False): 12, (3, False): 15, (1, True): 10}


def _setup(be, batch=5, graph=GRAPH):
    params = RouterParams.init(graph, 8, tau=0.8, top_k=3, seed=1)
    r = Router(graph, params, be)
    opt = AdamW(r, lr=0.01, max_grad_norm=0.5)
    rng = np.random.default_rng(0)
    en = rng.random((batch, graph.num_nodes)).astype(np.float32)
    tgt = (rng.random((batch, graph.num_nodes)) * 0.1).astype(np.float32)
    mask = rng.random((batch, graph.num_nodes)) < 0.7
    return r, opt, be.asarray(en), be.asarray(tgt), be.asarray(mask)


def test_numpy_counters_are_zero():
    from energetic_wgpu.backends.numpy_backend import NumpyBackend

    be = NumpyBackend()
    r, opt, e, t, _ = _setup(be)
    r.train_step(e, t, opt)
    c = be.counters()
    assert set(COUNTER_NAMES) <= set(c)
    assert all(c[k] == 0 for k in COUNTER_NAMES), c


def test_wgpu_counters_is_a_dict_of_live_values(gpu_backend):
    be = gpu_backend
    c0 = be.counters()
    assert set(COUNTER_NAMES) <= set(c0) and all(isinstance(v, int) for v in c0.values())
    x = be.asarray(np.arange(6, dtype=np.float32))
    np.testing.assert_array_equal(be.to_numpy(x), np.arange(6, dtype=np.float32))
    c1 = be.counters()
    assert c1["bytes_uploaded"] - c0["bytes_uploaded"] == 24
    assert c1["bytes_read_back"] - c0["bytes_read_back"] >= 24
    assert c1["submits"] > c0["submits"]


#: out-degrees 0..32 (every bin of the binned backward up to 32: thread per node, 32-lane group)
MID_GRAPH = degree_graph(list(range(33)) * 2, 5)


@pytest.mark.parametrize("steps,masked,graph", [(*k, "lattice") for k in sorted(STEP_DISPATCHES)]
                         + [(1, False, "degrees 0..32"), (1, True, "degrees 0..32")])
def test_train_step_budget(gpu_backend, steps, masked, graph):
    be = gpu_backend
    r, opt, e, t, m = _setup(be, graph=GRAPH if graph == "lattice" else MID_GRAPH)
    mask = m if masked else None
    for _ in range(4):  # warm-up: pipelines, pool, dispatch records, lr slot
        r.train_step(e, t, opt, steps=steps, mask=mask)
    be.synchronize()
    c0 = be.counters()
    n = 3
    for _ in range(n):
        r.train_step(e, t, opt, steps=steps, mask=mask)
    c1 = be.counters()
    d = {k: c1[k] - c0[k] for k in c1}
    assert d["submits"] == n
    assert d["dispatches"] == n * STEP_DISPATCHES[(steps, masked)]
    assert d["buffers_created"] == 0
    assert d["bytes_uploaded"] == 0
    assert d["bytes_read_back"] == 0


@pytest.mark.parametrize("steps", [1, 2])
def test_backward_without_energies_grad(backend, steps):
    """energies_grad=False: Gradients.energies is None, the parameter gradients are the same
    bits as with it, and they match NumPy."""
    from energetic_wgpu.backends.numpy_backend import NumpyBackend

    be = backend
    r, _, e, _, _ = _setup(be)
    rng = np.random.default_rng(5)
    gn = be.asarray(rng.standard_normal((5, GRAPH.num_nodes)).astype(np.float32))
    out = r.forward(e, steps=steps)
    full = r.backward(out, gn)
    lean = r.backward(out, gn, energies_grad=False)
    assert lean.energies is None
    assert be.to_numpy(full.energies).shape == (5, GRAPH.num_nodes)
    for a, b in zip(full.as_list(), lean.as_list()):
        np.testing.assert_array_equal(be.to_numpy(a), be.to_numpy(b))
    ref_be = NumpyBackend()
    rr, _, re_, _, _ = _setup(ref_be)
    ref = rr.backward(rr.forward(re_, steps=steps), be.to_numpy(gn), energies_grad=False)
    assert ref.energies is None
    for a, b in zip(ref.as_list(), lean.as_list()):
        a = np.asarray(a)
        assert np.max(np.abs(a - be.to_numpy(b))) <= 1e-5 * max(1.0, float(np.max(np.abs(a))))


def test_backward_energies_grad_must_be_bool(backend):
    from energetic_wgpu.errors import InvalidArgumentError

    r, _, e, _, _ = _setup(backend)
    out = r.forward(e)
    with pytest.raises(InvalidArgumentError, match="energies_grad must be True or False, got 'no'"):
        r.backward(out, np.zeros((5, GRAPH.num_nodes), np.float32), energies_grad="no")


def test_sum_squares_groups_of_three(gpu_backend):
    """sum_squares over 5 arrays (two sumsq_partials dispatches, one array empty, one spanning
    several workgroups) matches the float64 sum and reruns bit-identically."""
    be = gpu_backend
    rng = np.random.default_rng(2)
    host = [rng.standard_normal(s).astype(np.float32) for s in (7, 0, 9000, 4096, 1)]
    arrs = [be.asarray(h) for h in host]
    d0 = be.counters()["dispatches"]
    got = be.to_numpy(be.sum_squares(arrs))
    assert be.counters()["dispatches"] - d0 == 3  # two partial passes + the final sum
    ref = sum(float(np.sum(h.astype(np.float64) ** 2)) for h in host)
    assert abs(float(got[0]) - ref) <= 1e-5 * max(1.0, ref)
    np.testing.assert_array_equal(be.to_numpy(be.sum_squares(arrs)), got)


def test_scatter_backward_accumulates_grad_pi(gpu_backend):
    """grad_pi_acc is added in the grad_pi kernel: the same bits as add(acc, grad_pi), and
    NumPy parity."""
    from energetic_wgpu.backends.numpy_backend import NumpyBackend

    be, ref_be = gpu_backend, NumpyBackend()
    rng = np.random.default_rng(3)
    en = rng.random((4, GRAPH.num_nodes)).astype(np.float32)
    pi = rng.random(GRAPH.num_edges).astype(np.float32)
    gn = rng.standard_normal((4, GRAPH.num_nodes)).astype(np.float32)
    acc = rng.standard_normal(GRAPH.num_edges).astype(np.float32)
    args = (GRAPH, be.asarray(en), be.asarray(pi), be.asarray(gn), 0.9)
    _, plain = be.energy_scatter_backward(*args)
    ge, fused = be.energy_scatter_backward(*args, grad_pi_acc=be.asarray(acc))
    np.testing.assert_array_equal(be.to_numpy(fused), be.to_numpy(be.add(be.asarray(acc), plain)))
    _, ref = ref_be.energy_scatter_backward(GRAPH, en, pi, gn, 0.9, grad_pi_acc=acc)
    assert np.max(np.abs(be.to_numpy(fused) - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))
    assert ge is not None
