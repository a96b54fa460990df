"""The node-major batched state of the wgpu scatter and its backward (backends/webgpu/node_major.py).

Router.forward / backward keep the state between steps in the backend's layout
(``Backend.scatter_state``); on wgpu that is node-major with the batch rows padded to a
multiple of 4. These tests run the Router end to end against NumPy over the cases that layout
can get wrong: batch sizes around the padding (0, 1, 3, 4, 5, 8, 9, 64), odd N, sinks and
degree-0 nodes, in- and out-degree hubs (> 256: the workgroup kernels), active masks,
retain_sinks and T = 1, 2, 3; every GPU output twice, bit-identical. Then the padding itself
(zero even in a recycled buffer), the public layout of the lazily converted states, and the
dispatch counts of the forward and backward.
"""

from __future__ import annotations

import numpy as np
import pytest

from energetic_wgpu import Router, RouterParams
from energetic_wgpu.errors import InvalidArgumentError
from energetic_wgpu.backends.webgpu.node_major import NodeMajor

from graphs import degree_graph
from parity import numpy_and_wgpu


def _graph():
    """61 nodes (odd N): out-degrees 0..5 with sinks, node 7 of out-degree 600 into nodes 0..1
    (in-degree ~300 each: the hub kernels both ways), an isolated node."""
    deg = np.random.default_rng(3).integers(0, 6, size=61)
    deg[7], deg[60] = 600, 0
    return degree_graph(deg, seed=1, big_into=2)


GRAPH = _graph()
assert GRAPH.in_degree.max() > 256 and GRAPH.out_degree.max() > 256 and (GRAPH.out_degree == 0).sum() > 2


def _inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    n = GRAPH.num_nodes
    return (rng.random((batch, n)).astype(np.float32), rng.random((batch, n)) > 0.3,
            rng.standard_normal((batch, n)).astype(np.float32))


def _router(backend):
    params = RouterParams.init(GRAPH, 4, tau=0.8, alpha=0.9, top_k=0, seed=2, noise=0.2)
    return Router(GRAPH, params, backend)


# (B, T, active, retain_sinks)
CASES = [(0, 2, True, True), (1, 1, True, True), (3, 3, True, True), (4, 2, False, True), (5, 3, True, False),
         (8, 1, False, False), (9, 2, True, True), (64, 3, True, True)]


@pytest.mark.parametrize("batch,steps,masked,retain", CASES)
@numpy_and_wgpu()
def test_router_forward_backward_parity(backend, batch, steps, masked, retain):
    en, act, gn = _inputs(batch)
    r = _router(backend)
    out = r.forward(backend.asarray(en), active=backend.asarray(act) if masked else None, steps=steps,
                    retain_sinks=retain)
    g = r.backward(out, backend.asarray(gn))
    # edge_flow and metrics read the state before the last step: node-major for T > 1
    return {"next": out.next_energies, "flow": out.edge_flow, "metrics": out.metrics_array, "grad_q": g.q,
            "grad_k": g.k, "grad_bias": g.bias, "grad_energies": g.energies}


@pytest.mark.parametrize("steps", [1, 2])
@numpy_and_wgpu()
def test_unbatched_input(backend, steps):
    en, act, gn = _inputs(1, seed=4)
    r = _router(backend)
    out = r.forward(backend.asarray(en[0]), active=act[0], steps=steps, retain_sinks=True)
    g = r.backward(out, backend.asarray(gn[0]))
    return {"next": out.next_energies, "grad_bias": g.bias, "grad_energies": g.energies}


def _poison(be, n_floats):
    """Return a NaN-filled buffer of ``n_floats`` to the pool, so the next array of that size
    starts as NaN."""
    junk = be.asarray(np.full(n_floats, np.nan, np.float32))
    be.synchronize()
    del junk


@pytest.mark.parametrize("batch", [1, 5, 9])
def test_padding_rows_are_zero(gpu_backend, batch):
    """Every node-major state (forward steps, backward gradients), hubs included, holds 0 in
    its padding rows even when its buffer held NaN before; its values match the [B, N] ones."""
    be = gpu_backend
    en, act, gn = _inputs(batch, seed=7)
    n, padded = GRAPH.num_nodes, 4 * (-(-batch // 4))
    r = _router(be)
    pi = r.backend.segment_softmax(GRAPH, be.edge_logits(GRAPH, r.q, r.k, r.bias), r.tau)
    _poison(be, n * padded)
    state, act_state = be.scatter_state(GRAPH, be.asarray(en), be.asarray(act))
    _poison(be, n * padded)
    nxt = be.scatter_step(GRAPH, state, pi, r.alpha, act_state, True, False)
    _poison(be, n * padded)
    ge, _ = be.scatter_step_backward(GRAPH, state, pi, nxt, r.alpha, act_state, True, True, None, False)
    rows_next = be.energy_scatter(GRAPH, be.asarray(en), pi, r.alpha, be.asarray(act), True)
    rows_ge, _ = be.energy_scatter_backward(GRAPH, be.asarray(en), pi, rows_next, r.alpha, be.asarray(act), True)
    for st, rows in ((state, en), (act_state, act.astype(np.uint32)), (nxt, be.to_numpy(rows_next)),
                     (ge, be.to_numpy(rows_ge))):
        assert isinstance(st, NodeMajor) and st.shape == (batch, n)
        data = be.to_numpy(st.data).reshape(n, padded)
        assert not np.any(data[:, batch:]), f"padding rows not zero: {data[:, batch:]}"
        np.testing.assert_array_equal(data[:, :batch].T, rows)


def test_public_state_is_the_row_layout(gpu_backend):
    """public_state of a node-major state: one scatter_rows dispatch, then cached; the input
    state gives back the input array itself (no dispatch)."""
    be = gpu_backend
    en, _, _ = _inputs(5, seed=2)
    x = be.asarray(en)
    state, act_state = be.scatter_state(GRAPH, x, None)
    assert act_state is None
    assert be.public_state(state) is x
    r = _router(be)
    pi = be.segment_softmax(GRAPH, be.edge_logits(GRAPH, r.q, r.k, r.bias), r.tau)
    nxt = be.scatter_step(GRAPH, state, pi, 0.5, None, False, False)
    d0 = be.counters()["dispatches"]
    rows = be.public_state(nxt)
    assert be.public_state(nxt) is rows
    assert be.counters()["dispatches"] - d0 == 1
    np.testing.assert_array_equal(be.to_numpy(rows), be.to_numpy(be.energy_scatter(GRAPH, x, pi, 0.5)))


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_forward_and_backward_dispatches(gpu_backend, steps):
    """Forward: pi, one transpose in, then one gather per step (+ one hub kernel per step on
    this graph); backward: grad_pi per step, the input-energy gradient (small + hub kernels) per
    step but the first; the softmax + logits backward: two dispatches."""
    be = gpu_backend
    en, _, gn = _inputs(4, seed=1)
    r = _router(be)
    x, g = be.asarray(en), be.asarray(gn)
    d0 = be.counters()["dispatches"]
    be.edge_probs(GRAPH, r.q, r.k, r.bias, r.tau, r.top_k)
    pi_dispatches = be.counters()["dispatches"] - d0
    d0 = be.counters()["dispatches"]
    out = r.forward(x, steps=steps)
    d1 = be.counters()["dispatches"]
    r.backward(out, g, energies_grad=False)
    d2 = be.counters()["dispatches"]
    assert d1 - d0 == pi_dispatches + 1 + 2 * steps
    # per step scatter_bwd_pi, then the two degree-binned segment_bwd (hubs included)
    assert d2 - d1 == steps + 2 * (steps - 1) + 2


@pytest.mark.parametrize("batch,steps", [(5, 3), (64, 2)])
def test_node_major_path_equals_the_row_layout_ops_bitwise(gpu_backend, batch, steps):
    """The Router's node-major forward and backward give the same bits as the public [B, N]
    ops composed step by step: the layout changes where values live, not how they are summed."""
    be = gpu_backend
    en, act, gn = _inputs(batch, seed=9)
    r = _router(be)
    a = be.asarray(act)
    out = r.forward(be.asarray(en), active=a, steps=steps, retain_sinks=True)
    g = r.backward(out, be.asarray(gn))
    pi = out.edge_pi
    xs = [be.asarray(en)]
    for _ in range(steps):
        xs.append(be.energy_scatter(GRAPH, xs[-1], pi, r.alpha, a, True))
    g_next, g_pi = be.asarray(gn), None
    for t in reversed(range(steps)):
        g_next, g_pi = be.energy_scatter_backward(GRAPH, xs[t], pi, g_next, r.alpha, a, True, grad_pi_acc=g_pi)
    gq, gk, gb = be.softmax_logits_backward(GRAPH, pi, g_pi, r.tau, r.q, r.k)  # what Router.backward runs
    pairs = [(out.next_energies, xs[-1]), (out.edge_flow, be.edge_flow(GRAPH, xs[-2], pi, r.alpha, a)),
             (g.energies, g_next), (g.q, gq), (g.k, gk), (g.bias, gb)]
    for got, want in pairs:
        np.testing.assert_array_equal(be.to_numpy(got), be.to_numpy(want))


@pytest.mark.parametrize("batched,keep", [(True, True), (False, True), (True, False)])
@numpy_and_wgpu()
def test_energies_at_gives_every_kept_state_in_the_public_layout(backend, batched, keep):
    en, act, _ = _inputs(5, seed=6)
    x = en if batched else en[0]
    r = _router(backend)
    out = r.forward(backend.asarray(x), steps=3, keep_history=keep)
    kept = range(0, 4) if keep else range(2, 4)
    states = {f"t{t}": out.energies_at(t) for t in kept}
    for t in kept:
        assert tuple(states[f"t{t}"].shape) == x.shape
    np.testing.assert_array_equal(backend.to_numpy(states["t3"]), backend.to_numpy(out.next_energies))
    if keep:
        np.testing.assert_array_equal(backend.to_numpy(states["t0"]), x)
    for bad in (-1, 4, 1.0, True) if keep else (1, 4):
        with pytest.raises(InvalidArgumentError, match=r"t must be an int in \[" + ("0, 3" if keep else "2, 3")):
            out.energies_at(bad)
    return states
