"""The one parity case table, shared by ``energetic-wgpu check`` and ``check --dawn``.

Each case is (name, make inputs, run the op on a backend, exact outputs).
A case's ``run(backend, inputs) -> {output name: backend array}`` is called on the NumPy
backend (expected values) and on the target: twice on each wgpu adapter by
:mod:`energetic_wgpu.check`, once on a recorded :class:`WgpuBackend` replayed under Dawn by
:mod:`energetic_wgpu.dawn`. ``make(seed)`` builds fresh inputs (a fresh Graph object) for each
call. New ops are added by appending a :class:`Case`; an op the wgpu backend does not implement
yet raises NotImplementedError (``check`` reports it as a FAIL, ``check --dawn`` as
"not on wgpu yet").

The small test graph covers out-degrees 0, 1, k, k+1, 64, 65 and 300 (k = top_k = 3), an
in-degree above 256 (the workgroup-per-node scatter path), in-degree 0 and self-loops. The
forward's bins graph (``bins_graph``) puts a segment on each side of every degree-bin edge of
the fused forward (thread per segment up to 16, a 32-lane group up to 256, a workgroup above).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .graph import Graph

__all__ = ["Case", "CASES", "TOP_K", "DEGREES", "degree_graph", "BATCHES", "BIN_DEGREES", "bins_graph"]

TOP_K = 3
#: out-degrees of the test graph's nodes (then a few more small nodes)
DEGREES = (0, 1, TOP_K, TOP_K + 1, 64, 65, 300, 0, 2, 5, 1, 0)
BATCHES = (0, 1, 33)
D = 4
#: out-degrees of the forward's bins graph: 1 and 16 | 17, 32, 33 and 256 | 257 and 600
BIN_DEGREES = (0, 1, 16, 17, 32, 33, 256, 257, 3, 0, 600)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[int], dict[str, Any]]
    run: Callable[[Any, dict[str, Any]], dict[str, Any]]
    #: outputs compared exactly (bool/int) instead of at tolerance
    exact: tuple[str, ...] = ()


def degree_graph(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    n = len(DEGREES)
    row_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(DEGREES, out=row_ptr[1:])
    cols = []
    for j, deg in enumerate(DEGREES):
        c = rng.integers(1, n, size=deg)  # node 0 gets no incoming edge (in-degree 0)
        if deg == 300:
            c[:280] = n - 1  # in-degree > 256: the workgroup-per-node scatter path
        if deg == 64:
            c[0] = j  # a self-loop
        cols.append(c)
    return Graph.from_csr(row_ptr, np.concatenate(cols), num_nodes=n)


def bins_graph(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    n = len(BIN_DEGREES)
    row_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(BIN_DEGREES, out=row_ptr[1:])
    return Graph.from_csr(row_ptr, rng.integers(0, n, size=int(row_ptr[-1])), num_nodes=n)


def _bins(seed: int, dim: int, grid: bool = False) -> dict[str, Any]:
    """Inputs on the bins graph with q, k [N, dim]. ``grid``: q, k in {-1, 0, 1} and bias in
    {0, 0.5}, so the logits are exact and tie often (the top-k tie rule decides)."""
    g = bins_graph(0)
    rng = np.random.default_rng(seed)
    n, e = g.num_nodes, g.num_edges
    if grid:
        q, k = (rng.integers(-1, 2, (n, dim)).astype(np.float32) for _ in range(2))
        bias = (0.5 * rng.integers(0, 2, e)).astype(np.float32)
    else:
        q, k = (rng.standard_normal((n, dim)).astype(np.float32) for _ in range(2))
        bias = (0.5 * rng.standard_normal(e)).astype(np.float32)
    return {"graph": g, "q": q, "k": k, "bias": bias}


def _softmax_np(graph: Graph, logits: np.ndarray) -> np.ndarray:
    pi = np.zeros_like(logits)
    for j in range(graph.num_nodes):
        a, b = graph.row_ptr[j], graph.row_ptr[j + 1]
        if b > a:
            z = logits[a:b] - logits[a:b].max()
            pi[a:b] = np.exp(z) / np.exp(z).sum()
    return pi.astype(np.float32)


def _base(seed: int, batch: int | None = None) -> dict[str, Any]:
    g = degree_graph(0)
    rng = np.random.default_rng(seed)
    n, e = g.num_nodes, g.num_edges
    inp: dict[str, Any] = {
        "graph": g,
        "q": rng.standard_normal((n, D)).astype(np.float32),
        "k": rng.standard_normal((n, D)).astype(np.float32),
        "bias": (0.5 * rng.standard_normal(e)).astype(np.float32),
        "logits": (2.0 * rng.standard_normal(e)).astype(np.float32),
    }
    inp["pi"] = _softmax_np(g, inp["logits"])
    shape = (n,) if batch is None else (batch, n)
    inp["energies"] = rng.random(shape).astype(np.float32)
    inp["active"] = rng.random(shape) > 0.25
    inp["grad_next"] = rng.standard_normal(shape).astype(np.float32)
    inp["grad_pi"] = rng.standard_normal(e).astype(np.float32)
    inp["target"] = rng.random(shape).astype(np.float32)
    inp["mask"] = rng.random(shape) > 0.5
    return inp


def _arr(backend: Any, inp: dict[str, Any], *names: str) -> list[Any]:
    return [backend.asarray(inp[n]) for n in names]


def _cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    add(Case("edge_logits", lambda s: _base(s),
             lambda b, i: {"logits": b.edge_logits(i["graph"], *_arr(b, i, "q", "k", "bias"))}))
    add(Case("segment_softmax", lambda s: _base(s),
             lambda b, i: {"pi": b.segment_softmax(i["graph"], b.asarray(i["logits"]), tau=0.7, top_k=0)}))
    add(Case("segment_softmax_topk", lambda s: _base(s),
             lambda b, i: {"pi": b.segment_softmax(i["graph"], b.asarray(i["logits"]), tau=1.3, top_k=TOP_K)}))
    add(Case("segment_topk", lambda s: _base(s),
             lambda b, i: {"kept": b.segment_topk(i["graph"], b.asarray(i["logits"]), TOP_K)}, exact=("kept",)))
    # the fused forward over every degree bin (d = 5: rows not vec4 aligned)
    add(Case("edge_probs_bins_d5", lambda s: _bins(s, 5), lambda b, i: {
        "pi": b.edge_probs(i["graph"], *_arr(b, i, "q", "k", "bias"), tau=0.8, top_k=0)}))
    add(Case("edge_probs_bins_d16_topk3", lambda s: _bins(s, 16), lambda b, i: {
        "pi": b.edge_probs(i["graph"], *_arr(b, i, "q", "k", "bias"), tau=1.2, top_k=TOP_K)}))
    add(Case("edge_probs_bins_ties_topk17", lambda s: _bins(s, 3, grid=True), lambda b, i: {
        "pi": b.edge_probs(i["graph"], *_arr(b, i, "q", "k", "bias"), tau=1.0, top_k=17),
        "kept": b.segment_topk(i["graph"], b.edge_logits(i["graph"], *_arr(b, i, "q", "k", "bias")), 17)},
        exact=("kept",)))
    add(Case("add", lambda s: _base(s),
             lambda b, i: {"sum": b.add(*_arr(b, i, "logits", "bias"))}))
    add(Case("sum_squares", lambda s: _base(s),
             lambda b, i: {"sumsq": b.sum_squares(_arr(b, i, "q", "k", "bias"))}))

    for batch in (None,) + BATCHES:
        tag = "single" if batch is None else f"b{batch}"

        def mk(s: int, batch: int | None = batch) -> dict[str, Any]:
            return _base(s, batch)

        if batch is not None:  # energy ops take [B, N] energies (Backend contract; the Router reshapes [N])
            add(Case(f"energy_scatter_{tag}", mk, lambda b, i: {
                "next": b.energy_scatter(i["graph"], b.asarray(i["energies"]), b.asarray(i["pi"]), alpha=0.9)}))
            add(Case(f"energy_scatter_active_sinks_{tag}", mk, lambda b, i: {
                "next": b.energy_scatter(i["graph"], b.asarray(i["energies"]), b.asarray(i["pi"]), alpha=1.1,
                                         active=b.asarray(i["active"]), retain_sinks=True)}))
            add(Case(f"edge_flow_{tag}", mk, lambda b, i: {
                "flow": b.edge_flow(i["graph"], b.asarray(i["energies"]), b.asarray(i["pi"]), alpha=0.8,
                                    active=b.asarray(i["active"]))}))
        if batch is None:  # step_metrics and energy_scatter_backward take [B, N] energies
            add(Case(f"mse_{tag}", mk, lambda b, i: dict(zip(("loss", "grad"),
                b.mse(*_arr(b, i, "energies", "target", "mask"))))))
            continue
        add(Case(f"step_metrics_{tag}", mk, lambda b, i: {
            "metrics": b.step_metrics(i["graph"], *_arr(b, i, "energies", "target", "pi"), alpha=1.0,
                                      active=b.asarray(i["active"]))}))
        add(Case(f"energy_scatter_backward_{tag}", mk, lambda b, i: dict(zip(("grad_energies", "grad_pi"),
            b.energy_scatter_backward(i["graph"], b.asarray(i["energies"]), b.asarray(i["pi"]),
                                      b.asarray(i["grad_next"]), alpha=0.9, active=b.asarray(i["active"]),
                                      retain_sinks=True)))))
        add(Case(f"mse_{tag}", mk, lambda b, i: dict(zip(("loss", "grad"),
            b.mse(*_arr(b, i, "energies", "target", "mask"))))))
        add(Case(f"cross_entropy_{tag}", mk, lambda b, i: dict(zip(("loss", "grad"),
            b.cross_entropy(*_arr(b, i, "energies", "target"))))))
        if batch:  # zero predictions exercise the eps clamp
            add(Case(f"cross_entropy_eps_{tag}", mk, lambda b, i: dict(zip(("loss", "grad"),
                b.cross_entropy(b.asarray(i["energies"] * i["mask"]), b.asarray(i["target"]), 1e-12)))))

    add(Case("segment_softmax_backward", lambda s: _base(s), lambda b, i: {
        "grad_logits": b.segment_softmax_backward(i["graph"], *_arr(b, i, "pi", "grad_pi"), tau=0.7)}))
    add(Case("edge_logits_backward", lambda s: _base(s), lambda b, i: dict(zip(("grad_q", "grad_k", "grad_bias"),
        b.edge_logits_backward(i["graph"], *_arr(b, i, "q", "k", "grad_pi"))))))
    add(Case("softmax_logits_backward", lambda s: _base(s), lambda b, i: dict(zip(("grad_q", "grad_k", "grad_bias"),
        b.softmax_logits_backward(i["graph"], *_arr(b, i, "pi", "grad_pi"), 0.7, *_arr(b, i, "q", "k"))))))
    add(Case("entropy_regularization", lambda s: _base(s), lambda b, i: dict(zip(("loss", "grad_pi"),
        b.entropy_regularization(i["graph"], b.asarray(i["pi"]), 0.05)))))

    def adamw(b: Any, i: dict[str, Any]) -> dict[str, Any]:
        params = _arr(b, i, "q", "k", "bias")
        grads = [b.asarray(0.3 * i["k"]), b.asarray(-0.2 * i["q"]), b.asarray(i["logits"])]
        m = [b.zeros(p.shape) for p in params]
        v = [b.zeros(p.shape) for p in params]
        step = b.zeros((1,))
        norm = None
        for _ in range(3):
            norm = b.adamw_step(params, grads, m, v, step, 1e-2, 0.9, 0.99, 1e-8, 0.01, 1.0)
        out = {"q": params[0], "k": params[1], "bias": params[2], "m_q": m[0], "v_bias": v[2], "step": step,
               "grad_norm": norm}
        return out

    add(Case("adamw_step_clipped_x3", lambda s: _base(s), adamw))

    def adamw_packed(b: Any, i: dict[str, Any]) -> dict[str, Any]:
        # parameters, m and v as views into one flat buffer each (wgpu: the one-dispatch
        # update; the plan binds, writes, clears and reads regions at non-zero offsets)
        params = b.pack([i["q"], i["k"], i["bias"]])
        grads = [b.asarray(0.3 * i["k"]), b.asarray(-0.2 * i["q"]), b.asarray(i["logits"])]
        m = b.zeros_like_packed(params)
        v = b.zeros_like_packed(params)
        step = b.zeros((1,))
        norm = None
        for _ in range(3):
            norm = b.adamw_step(params, grads, m, v, step, 1e-2, 0.9, 0.99, 1e-8, 0.01, 1.0)
        # an op binding views at non-zero offsets
        qk = b.add(params[0], params[1])
        return {"q": params[0], "k": params[1], "bias": params[2], "m_k": m[1], "v_bias": v[2], "step": step,
                "grad_norm": norm, "q_plus_k": qk}

    add(Case("adamw_step_packed_x3", lambda s: _base(s), adamw_packed))

    def router(b: Any, i: dict[str, Any], steps: int = 3) -> dict[str, Any]:
        # the Router end to end: forward steps (top-k softmax, active mask, retained sinks;
        # on wgpu the state between steps is node-major) and the backward pass through all
        # of them; the last step's edge flow reads the state before it in the [B, N] layout
        from .router import Router, RouterParams

        params = RouterParams(i["q"], i["k"], i["bias"], tau=0.7, alpha=0.9, top_k=TOP_K)
        r = Router(i["graph"], params, b)
        out = r.forward(b.asarray(i["energies"]), active=b.asarray(i["active"]), steps=steps, retain_sinks=True)
        grads = r.backward(out, b.asarray(i["grad_next"]))
        return {"next": out.next_energies, "pi": out.edge_pi, "metrics": out.metrics_array, "flow": out.edge_flow,
                "grad_q": grads.q, "grad_k": grads.k, "grad_bias": grads.bias, "grad_energies": grads.energies}

    add(Case("router_steps3_b33", lambda s: _base(s, 33), router))
    add(Case("router_steps2_b5", lambda s: _base(s, 5), lambda b, i: router(b, i, steps=2)))
    # B * N = 6,144 elements (24 KiB): past the smallest binding the losses allow (16 KiB), so
    # the split parity run (tests/test_parity_split.py) chunks the batch
    add(Case("router_steps2_b512", lambda s: _base(s, 512), lambda b, i: router(b, i, steps=2)))

    def train(b: Any, i: dict[str, Any], masked: bool) -> dict[str, Any]:
        # Router.train_step with clipped AdamW, twice: on wgpu the mse loss is finished by the
        # optimizer's prepare kernel and the gradient norm comes from the backward's partials
        from .optim import AdamW
        from .router import Router, RouterParams

        params = RouterParams(i["q"], i["k"], i["bias"], tau=0.7, alpha=0.9, top_k=TOP_K)
        r = Router(i["graph"], params, b)
        # eps well above the float32 noise of (near-)zero gradients: Adam would blow that noise
        # up to +-lr
        opt = AdamW(r, lr=1e-2, eps=1e-2, max_grad_norm=0.5)
        mask = b.asarray(i["mask"]) if masked else None
        res = None
        for _ in range(2):
            res = r.train_step(b.asarray(i["energies"]), b.asarray(i["target"]), opt, mask=mask, steps=2)
        assert res is not None
        return {"loss": res.loss_array, "grad_norm": res.grad_norm_array, "q": r.q, "k": r.k, "bias": r.bias}

    add(Case("train_step_mse_b33", lambda s: _base(s, 33), lambda b, i: train(b, i, False)))
    add(Case("train_step_mse_masked_b33", lambda s: _base(s, 33), lambda b, i: train(b, i, True)))
    add(Case("train_step_mse_masked_b512", lambda s: _base(s, 512), lambda b, i: train(b, i, True)))
    return cases


CASES: list[Case] = _cases()
