"""The scatter's state in rows: not even 4 node-major rows of N fit one binding (batch_chunks.py).

The node-major scatter state pads a batch to 4 rows: 16 N bytes, past one binding for
N > 8.4 M on WebGPU's default limits. Then the state stays in its [B, N] rows
(``batch_chunks.RowChunks``): every step reads the sources' rows from a bound row range of
any number of rows (flags bit 4 of energy_scatter.wgsl) and writes [B, N]; the backward runs
on [B, N] arrays too. Here a forced 16 KiB binding limit puts N = 1,200 there (4 node-major
rows are 19,200 bytes; one row 4,800): B = 7 runs in chunks of 3, 3 and 1 rows, and at the
same time the edge windows (E = 6,000 edges), the row windows of q and k and split packed
parameters. Forward, backward,
the public ops and AdamW steps are bit-identical to the unsplit run, and in parity with NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import assert_parity, forced_limits

from energetic_wgpu import AdamW, Graph, Router, RouterParams
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.backends.webgpu import batch_chunks
from energetic_wgpu.errors import DeviceLimitError

N, E, B = 1200, 6000, 7
LIMIT = 16384  # bytes per binding: 4 node-major rows of N (19,200 bytes) do not fit; 3 rows do


def _graph(hub: int) -> Graph:
    rng = np.random.default_rng(8)
    rest = E - 2 * hub
    # a node of out-degree `hub` and one of in-degree `hub`
    src = np.concatenate([np.full(hub, 5), rng.integers(0, N, hub), rng.integers(0, N, rest)])
    dst = np.concatenate([rng.integers(0, N, hub), np.full(hub, 9), rng.integers(0, N, rest)])
    order = np.argsort(src, kind="stable")
    sinks = np.arange(N) % 37 == 1  # some nodes without out-edges: retained sinks
    keep = ~sinks[src[order]]
    return Graph.from_edges(src[order][keep], dst[order][keep], num_nodes=N)


#: (hub degree, d): both have a node of in-degree and one of out-degree 300 > 256
#: (scatter_large, scatter_bwd_large) and edge windows (24,000 bytes of [E] arrays); with
#: "rows" q and k (19,200 bytes) are past the binding too (row windows of 960 edges at d = 4).
#: A graph is uploaded once, under the limits of its first use: every run builds its own.
CASES = {"hubs": (300, 2), "rows": (300, 4)}
PARAMS = {name: RouterParams.init(_graph(hub), d, tau=0.8, alpha=0.9, top_k=0, seed=4, noise=0.1)
          for name, (hub, d) in CASES.items()}


def _data(seed: int, batch: int = B):
    rng = np.random.default_rng(seed)
    en = (rng.random((batch, N)) * (rng.random((batch, N)) < 0.4)).astype(np.float32)
    act = rng.random((batch, N)) < 0.8
    tgt = (rng.random((batch, N)) * 0.1).astype(np.float32)
    return en, act, tgt


def _limit(be, split: bool):
    return forced_limits(be, LIMIT if split else None)


def test_plan_in_rows(gpu_backend):
    be = gpu_backend
    assert not batch_chunks.state_in_rows(be, N) and batch_chunks.plan(be, B, N) is None
    with be.binding_limit(LIMIT):
        assert batch_chunks.state_in_rows(be, N)
        assert batch_chunks.rows_per_range(be, N) == 3  # (16384 - 256) // 4800
        assert batch_chunks.plan(be, B, N) == [(0, 3), (3, 3), (6, 1)]
        assert batch_chunks.plan(be, 1, N) == [(0, 1)]  # never None: the state lives in rows
        assert batch_chunks.plan(be, 0, N) is None
    with be.binding_limit(4096):
        with pytest.raises(DeviceLimitError, match=r"one batch row of N = 1200 nodes \(4800 bytes, plus 256 bytes of "
                                                   r"alignment\) does not fit the binding limit of 4096 bytes"):
            batch_chunks.plan(be, B, N)
    with be.binding_limit(LIMIT):  # the Router's build-time check accepts it now
        be.check_params(_graph(300), 2)


def _forward_backward(be, split: bool, steps: int, masked: bool, case: str):
    en, act, tgt = _data(1)
    with _limit(be, split):
        r = Router(_graph(CASES[case][0]), PARAMS[case], be)
        out = r.forward(en, active=act if masked else None, steps=steps, retain_sinks=True)
        got = [be.to_numpy(out.energies_at(t)) for t in range(steps + 1)]
        if split:
            assert isinstance(out.history[0], batch_chunks.RowChunks)
        got += [be.to_numpy(out.edge_flow), be.to_numpy(out.metrics_array)]
        g = r.backward(out, tgt, energies_grad=True)
        got += [be.to_numpy(x) for x in (g.q, g.k, g.bias, g.energies)]
    return got


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("steps,masked", [(1, False), (3, True)])
def test_router_in_rows_bit_identical(gpu_backend, np_backend, steps, masked, case):
    split = _forward_backward(gpu_backend, True, steps, masked, case)
    whole = _forward_backward(gpu_backend, False, steps, masked, case)
    ref = _forward_backward(np_backend, False, steps, masked, case)
    names = [f"state {t}" for t in range(steps + 1)] + ["edge_flow", "metrics", "grad q", "grad k", "grad bias",
                                                         "grad energies"]
    for name, a, b, c in zip(names, split, whole, ref):
        assert a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name)


def _public(be, split: bool, batch: int):
    en, act, tgt = _data(2, batch)
    pi = be.to_numpy(Router(_graph(300), PARAMS["hubs"], be).forward(en[:1]).edge_pi)
    g = _graph(300)
    acc = np.linspace(-1, 1, g.num_edges, dtype=np.float32)
    with _limit(be, split):
        nxt = be.energy_scatter(g, en, pi, 0.9, act, retain_sinks=True)
        ge, gpi = be.energy_scatter_backward(g, en, pi, tgt, 0.9, act, retain_sinks=True,
                                             grad_pi_acc=acc)
        return [be.to_numpy(x) for x in (nxt, ge, gpi)]


@pytest.mark.parametrize("batch", [1, B])
def test_public_scatter_ops_in_rows(gpu_backend, np_backend, batch):
    split = _public(gpu_backend, True, batch)
    whole = _public(gpu_backend, False, batch)
    ref = _public(np_backend, False, batch)
    for name, a, b, c in zip(("next", "grad energies", "grad pi"), split, whole, ref):
        assert a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name)


def _train(be, split: bool, case: str, n_steps: int = 3):
    en, act, tgt = _data(3)
    losses, submits = [], []
    with _limit(be, split):
        r = Router(_graph(CASES[case][0]), PARAMS[case], be)
        opt = AdamW(r, lr=0.01, eps=1e-4, weight_decay=0.01, max_grad_norm=0.5)
        for _ in range(n_steps):
            before = be.counters()["submits"]
            res = r.train_step(en, tgt, opt, active=act, steps=2, retain_sinks=True)
            submits.append(be.counters()["submits"] - before)
            losses.append(be.to_numpy(res.loss_array))
        p = r.params()
    return [p.q, p.k, p.bias, np.concatenate(losses)], submits


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_steps_in_rows_bit_identical(gpu_backend, np_backend, case):
    split, submits = _train(gpu_backend, True, case)
    assert submits == [1, 1, 1]
    whole, _ = _train(gpu_backend, False, case)
    ref, _ = _train(np_backend, False, case)
    for name, a, b, c in zip(("q", "k", "bias", "losses"), split, whole, ref):
        assert a.tobytes() == b.tobytes(), name
        assert_parity(a, c, name)
