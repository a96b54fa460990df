"""Backward ops of the wgpu backend (docs/definitions.md §4): gathers in a fixed order, no float atomics.

Each function takes the :class:`WgpuBackend` as its first argument and follows the
docstring of the matching method of :class:`energetic_wgpu.backends.base.Backend`.

Degree strategy (SMALL = ``kernels.SMALL_DEGREE_MAX``), as in the forward kernels: a node
whose segment (or reverse-index range) has at most SMALL entries is summed serially by one
thread; a larger one by one workgroup of 256 (strided compensated partials, fixed tree), so
one huge segment never serializes a launch. Every sum runs in one fixed order: results are
bit-identical from run to run.

* ``energy_scatter_backward`` (and ``scatter_step_backward``, its node-major form for the
  router's steps): grad_energies thread per (j, 8 batch rows) over j's CSR segment (workgroup
  per (b, j) for large segments); grad_pi thread per edge over b = 0..B-1 in order (rows loaded 4 at a time),
  plus ``grad_pi_acc`` in the same kernel when given.
* ``segment_softmax_backward``: per segment dot = sum pi * gpi, then pi * (gpi - dot) / tau.
* ``edge_logits_backward``: grad_q thread per (j, c) over j's segment, grad_k thread per
  (n, c) over n's reverse-index range (workgroup per (node, c) for large ones); grad_bias is
  grad_logits itself (the same array: no copy).
* ``softmax_logits_backward`` (what ``Router.backward`` uses): both of the above in two
  degree-binned ``segment_bwd`` dispatches whatever the degrees (segment_backward.wgsl): one
  over source segments writes grad_logits and grad_q, one over the reverse index writes
  grad_k. Nodes are binned by degree in the graph data (thread per node up to
  ``THREAD_DEGREE_MAX``, a 32-lane group up to SMALL, a workgroup per hub). Both dispatches
  also write per-workgroup sums of squares of what they produce; the optimizer's gradient
  norm reduces those (sumsq.py) instead of a separate pass. When every node of a direction is
  in the thread bin, its dispatch is the barrier-free ``segment_bwd_serial`` (one partial per
  node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import DeviceLimitError
from . import batch_chunks, edge_windows, hub_pieces, loop_cap, node_major, node_rows, sumsq, wide_rows
from .arrays import DeviceArray, binding_ranges, range_view
from .kernels import BIN_WG, GROUP_DEGREE_MAX, SMALL_DEGREE_MAX
from .graph_data import binned_segments
from .node_major import NodeMajor, new_state
from .reverse_index import reverse_inputs

__all__ = ["energy_scatter_backward", "scatter_step_backward", "segment_softmax_backward", "edge_logits_backward",
           "softmax_logits_backward"]


def energy_scatter_backward(
    backend: Any,
    graph: Any,
    energies: Any,
    pi: Any,
    grad_next: Any,
    alpha: float = 1.0,
    active: Any = None,
    retain_sinks: bool = False,
    grad_energies: bool = True,
    grad_pi_acc: Any = None,
) -> tuple[Any, Any]:
    be = backend
    gd = be.graph_data(graph)
    if gd.ptr_block:  # one batch row past one binding: row by row (wide_rows.py)
        n = gd.num_nodes
        grad_next = wide_rows.in_rows(be, be._dev(grad_next), n)
        batch = 1 if grad_next.ndim == 1 else int(grad_next.shape[0])
        return wide_rows.scatter_backward(be, gd, wide_rows.in_rows(be, be._dev(energies), n),
                                          None if active is None else wide_rows.in_rows(be, be._dev(active), n),
                                          be._dev(pi), grad_next, alpha, retain_sinks, grad_energies, grad_pi_acc,
                                          batch, grad_next.shape)
    grad_next = be._dev(grad_next)
    chunks = None
    if grad_next.ndim == 2 and grad_next.nbytes > be.runtime.max_binding_size:
        chunks = batch_chunks.plan(be, int(grad_next.shape[0]), gd.num_nodes)
    if chunks is not None:  # [B, N] over one binding: per batch chunk (batch_chunks.py)
        return batch_chunks.scatter_step_backward(be, gd, be._dev(energies), be._dev(pi), grad_next, alpha,
                                                  None if active is None else be._dev(active), retain_sinks,
                                                  grad_energies, grad_pi_acc, True, _scatter_backward, chunks)
    return _scatter_backward(
        be, gd, be._dev(energies), None if active is None else be._dev(active), False, pi,
        grad_next, alpha, retain_sinks, grad_energies, grad_pi_acc, out_shape=grad_next.shape,
    )


def scatter_step_backward(
    backend: Any, graph: Any, state: NodeMajor, pi: Any, grad_next: Any, alpha: float, active: NodeMajor | None,
    retain_sinks: bool, grad_energies: bool, grad_pi_acc: Any, last: bool,
) -> tuple[Any, Any]:
    """The backward of one :func:`node_major.scatter` step: ``state`` and ``active`` node-major,
    ``grad_next`` a :class:`NodeMajor` or float [B, N] (the loss gradient); grad_energies comes
    back node-major, or [B, N] when ``last`` (the forward's first step)."""
    be = backend
    gd = be.graph_data(graph)
    if gd.ptr_block:  # RowChunks states of one-row spans (wide_rows.py)
        g = grad_next.rows if isinstance(grad_next, batch_chunks.RowChunks) else wide_rows.in_rows(
            be, be._dev(grad_next), gd.num_nodes)
        grad_e, grad_pi = wide_rows.scatter_backward(be, gd, state.rows, None if active is None else active.rows,
                                                     be._dev(pi), g, alpha, retain_sinks, grad_energies, grad_pi_acc,
                                                     state.batch, state.rows.shape)
        if grad_e is not None and not last:
            grad_e = batch_chunks.RowChunks(grad_e, list(state.spans), state.batch, gd.num_nodes)
        return grad_e, grad_pi
    if isinstance(state, (batch_chunks.Chunked, batch_chunks.RowChunks)):  # batch chunks (batch_chunks.py)
        return batch_chunks.scatter_step_backward(be, gd, state, be._dev(pi), grad_next, alpha,
                                                  active, retain_sinks, grad_energies, grad_pi_acc, last,
                                                  _scatter_backward)
    return _scatter_backward(be, gd, state.data, None if active is None else active.data, True,
                             pi, grad_next, alpha, retain_sinks, grad_energies, grad_pi_acc,
                             out_shape=state.shape if last else None)


def _scatter_backward(
    be: Any, gd: Any, energies: Any, active: Any, state_nm: bool, pi: Any, grad_next: Any, alpha: float,
    retain_sinks: bool, grad_energies: bool, grad_pi_acc: Any, out_shape: tuple[int, ...] | None,
    chunk: Any = None,
) -> tuple[Any, Any]:
    """Both backward kernels. ``energies`` / ``active``: node-major data when ``state_nm``, else
    [B, N]; ``grad_next``: a NodeMajor or [B, N]; the input-energy gradient is written with
    ``out_shape`` in the public layout, node-major when ``out_shape`` is None.

    ``chunk`` (batch_chunks.py, one batch chunk of a split batch): a
    :class:`~.batch_chunks.ChunkCall` giving the chunk's rows, the element ``e0`` where they
    start in the bound [B, N] ranges, the [B, N] output range (or None), and grad_pi's running
    sums and compensations (two float [E]) with the carry flags."""
    rt = be.runtime
    n, e = gd.num_nodes, gd.num_edges
    pi = be._dev(pi)
    grad_nm = isinstance(grad_next, NodeMajor)
    if not grad_nm:
        grad_next = be._dev(grad_next)
    if chunk is not None:
        batch = chunk.rows
    else:
        batch = grad_next.batch if grad_nm else (1 if grad_next.ndim == 1 else int(grad_next.shape[0]))
    if e:
        loop_cap.check(be, 2 * -(-batch // 4) + 8, f"the energy scatter's backward (dL/dpi) over a batch of {batch:,} rows")
    g = grad_next.data if grad_nm else grad_next
    flags = ((1 if active is not None else 0) | (2 if retain_sinks else 0) | (4 if grad_pi_acc is not None else 0)
             | (8 if state_nm else 0) | (16 if grad_nm else 0) | (32 if out_shape is None else 0))
    grad_pi = edge_windows.edge_array(be, gd, "grad_pi") if chunk is None else chunk.grad_pi
    u = dict(batch=batch, n_nodes=n, flags=flags, n_large=gd.n_large_out, alpha=np.float32(alpha),
             small_max=SMALL_DEGREE_MAX, n_edges=e, e0=0 if chunk is None else chunk.e0, node0=0, n_count=n, ebase=0,
             eoff=0, b0=0, ps=0, pt=0, piece=0, p_shift=0)
    act = be._opt(active)
    windowed = gd.windows is not None
    if windowed:
        pi = edge_windows.in_windows(be, gd, pi, "pi")
        if grad_pi_acc is not None:
            grad_pi_acc = edge_windows.in_windows(be, gd, be._dev(grad_pi_acc), "grad_pi_acc")
    grad_e = None
    if grad_energies:  # the input-energy gradient: skipped when nothing reads it
        if out_shape is None:
            grad_e = new_state(be, batch, n)
            out = grad_e.data
        elif chunk is not None:
            grad_e = out = chunk.out
        else:
            grad_e = out = be.empty(out_shape)
        common = dict(row_ptr=gd.row_ptr, col_idx=gd.col_idx, pi=pi, grad_next=g, act_mask=act, sink=gd.sink,
                      out=out)
        if windowed:  # per window of sources (edge_windows.py)
            for w in edge_windows.hub_groups(gd.windows):
                if isinstance(w, list):
                    _scatter_bwd_big(be, gd, w, batch, u, common)
                    continue
                (c, e0w), pv = (edge_windows.window_view(be, x, w) for x in (gd.col_idx, pi))
                uw = {**u, "n_large": w.n_large, "node0": w.n0, "n_count": w.n1 - w.n0, "ebase": w.e0 - e0w}
                cw = {**common, "col_idx": c, "pi": pv[0]}
                rt.dispatch("scatter_bwd_small", threads=-(-batch // 8) * (w.n1 - w.n0), uniform=uw, **cw)
                if w.n_large and batch:
                    rt.dispatch("scatter_bwd_large", workgroups=w.n_large * batch, uniform=uw, large_nodes=w.large,
                                **cw)
        else:
            rt.dispatch("scatter_bwd_small", threads=-(-batch // 8) * n, uniform=u, **common)
            if gd.n_large_out and batch:
                rt.dispatch("scatter_bwd_large", workgroups=gd.n_large_out * batch, uniform=u,
                            large_nodes=gd.large_out, **common)
    if chunk is not None:
        u = {**u, "flags": flags | chunk.carry}
    # B = 0: the kernel writes zeros (an empty sum) for every edge
    acc_in = be._opt(grad_pi_acc)
    # the compensations a batch chunk hands on; else a never-written scratch buffer
    comp = node_major.unused_output(be) if chunk is None else chunk.comp
    name = "scatter_bwd_pi_nm" if state_nm else "scatter_bwd_pi"  # _nm: the source's rows as vec4 loads
    names = ("act_mask4", "energies4") if state_nm else ("act_mask", "energies")
    b = dict(col_idx=gd.col_idx, grad_next=g, out=grad_pi, src=gd.src, acc_in=acc_in, carry_comp=comp,
             **dict(zip(names, (act, energies))))
    if not windowed:
        rt.dispatch(name, threads=e, uniform=u, **b)
        return grad_e, grad_pi
    # the [E] arrays bound as each window's ranges: acc_in only when given, carry_comp only in
    # batch chunks (else a never-indexed scratch, bound whole)
    ranged = ("col_idx", "out", "src") + ("acc_in",) * (grad_pi_acc is not None) + (
        ("carry_comp",) * (chunk is not None))
    for w in gd.windows:
        if w.e1 == w.e0:
            continue
        views = {k: edge_windows.window_view(be, b[k], w) for k in ranged}
        eoff = views["src"][1]
        rt.dispatch(name, threads=w.e1 - w.e0, uniform={**u, "n_edges": w.e1 - w.e0, "eoff": eoff},
                    **{**b, **{k: v[0] for k, v in views.items()}})
    return grad_e, grad_pi


def _scatter_bwd_big(be: Any, gd: Any, pieces: list[Any], batch: int, u: dict[str, Any], common: dict[str, Any]) -> None:
    """The input-energy gradient of a big source hub j (more out-edges than an edge window
    holds; ``pieces``, its windows, edge_windows.hub_groups): ``scatter_bwd_small`` over its
    first piece only zeroes a node-major output's padding rows, then per piece
    ``scatter_bwd_large_piece`` per group of batch rows whose lanes' carry (8 bytes per lane and
    row) fits one binding, each lane's sum carried from piece to piece: ``scatter_bwd_large``'s
    sum, the same bits. ``u`` / ``common``: the op's uniform fields and bindings."""
    rt = be.runtime
    j = pieces[0].n0
    per = max(1, rt.max_binding_size // (8 * 256))
    carry = edge_windows.new_split_1d(be, max(1, batch) * 256 * 2, per * 256 * 2, "scatter backward carry")
    for i, pw in enumerate(pieces):
        (c, e0), pv = (edge_windows.window_view(be, x, pw) for x in (gd.col_idx, common["pi"]))
        uw = {**u, "n_large": 0, "node0": j, "n_count": 1, "ebase": pw.e0 - e0}
        cw = {**common, "col_idx": c, "pi": pv[0]}
        if i == 0:
            rt.dispatch("scatter_bwd_small", threads=-(-batch // 8), uniform=uw, **cw)
        uw.update(ps=e0, pt=e0 + pw.e1 - pw.e0, piece=int(i == 0) | 2 * int(i == len(pieces) - 1))
        for b0 in range(0, batch, per):
            nb = min(per, batch - b0)
            lv = range_view(carry, b0 * 512, nb * 512, rt.offset_alignment)[0]
            rt.dispatch("scatter_bwd_large_piece", workgroups=nb, uniform={**uw, "b0": b0, "n_large": nb},
                        lanes=lv, **{k: v for k, v in cw.items() if k != "row_ptr"})


def segment_softmax_backward(backend: Any, graph: Any, pi: Any, grad_pi: Any, tau: float = 1.0) -> Any:
    be, rt = backend, backend.runtime
    gd = be.graph_data(graph)
    pi, grad_pi = be._dev(pi), be._dev(grad_pi)
    n = gd.num_nodes
    u = dict(n_nodes=n, n_large=gd.n_large_out, small_max=SMALL_DEGREE_MAX, tau=np.float32(tau), node0=0, n_count=n,
             ebase=0, p_shift=0)
    if gd.windows is None:
        out = be.empty((gd.num_edges,))
        common = dict(row_ptr=gd.row_ptr, pi=pi, gpi=grad_pi, out=out)
        rt.dispatch("softmax_bwd_small", threads=n, uniform=u, **common)
        if gd.n_large_out:
            rt.dispatch("softmax_bwd_large", workgroups=gd.n_large_out, uniform=u, large_nodes=gd.large_out, **common)
        return out
    # per window of sources (edge_windows.py)
    pi, grad_pi = (edge_windows.in_windows(be, gd, x, "pi") for x in (pi, grad_pi))
    out = edge_windows.edge_array(be, gd, "grad_logits")
    for w in edge_windows.hub_groups(gd.windows):
        if isinstance(w, list):  # a big source hub: in pieces, as softmax_bwd_large's 256 lanes
            hub_pieces.hub_dl(be, w, pi, grad_pi, out, tau, 256)
            continue
        (pv, e0), gv, ov = (edge_windows.window_view(be, x, w) for x in (pi, grad_pi, out))
        ptr, p_shift = gd.node_ptr(False, w.n0)
        uw = {**u, "n_large": w.n_large, "node0": w.n0, "n_count": w.n1 - w.n0, "ebase": w.e0 - e0, "p_shift": p_shift}
        common = dict(row_ptr=ptr, pi=pv, gpi=gv[0], out=ov[0])
        rt.dispatch("softmax_bwd_small", threads=w.n1 - w.n0, uniform=uw, **common)
        if w.n_large:
            rt.dispatch("softmax_bwd_large", workgroups=w.n_large, uniform=uw, large_nodes=w.large, **common)
    return out


def edge_logits_backward(backend: Any, graph: Any, q: Any, k: Any, grad_logits: Any) -> tuple[Any, Any, Any]:
    be, rt = backend, backend.runtime
    gd = be.graph_data(graph)
    q, k, gl = be._dev(q), be._dev(k), be._dev(grad_logits)
    n = gd.num_nodes
    dim = int(q.shape[1])
    base = dict(n_nodes=n, dim=dim, small_max=SMALL_DEGREE_MAX, node0=0, n_count=n, ebase=0, gathered=0, o_shift=0,
                p_shift=0)
    if node_rows.needs_rows(rt, n, dim):  # q, k past one binding: mode 0 per row window (node_rows.py)
        plan = node_rows.row_plan(be, graph, gd, dim)
        rwindows = plan.reverse("edge_logits_backward")
        q, k = node_rows.in_node_rows(be, q, "q"), node_rows.in_node_rows(be, k, "k")
        grad_q, grad_k = (node_rows.new_node_rows(be, n, dim, what) for what in ("grad_q", "grad_k"))
        if gd.windows is not None:
            gl = edge_windows.in_windows(be, gd, gl, "grad_logits")
        rev_gl = edge_windows.to_reverse_order(be, gd, gl, plan)
        rows = be.empty((plan.rows * dim,))
        for reverse, idx, values, feat, out in ((False, gd.col_idx, gl, k, grad_q), (True, plan.rev_src, rev_gl, q, grad_k)):
            for w in edge_windows.hub_groups(rwindows if reverse else plan.windows):
                if isinstance(w, list):  # a big hub: its columns in pieces, as logits_bwd_large's 256 lanes sum them
                    hub_pieces.hub_columns(be, w, dim, values, idx, feat, out, rows, 256)
                    continue
                (iv, e0), vv = (edge_windows.window_view(be, x, w) for x in (idx, values))
                node_rows.gather_rows(be, feat, iv, e0, w.e1 - w.e0, rows)
                ov, shift = node_rows.node_range(be, out, w.n0, w.n1)
                ptr, p_shift = gd.node_ptr(reverse, w.n0)
                u = dict(base, mode=0, n_large=w.n_large, node0=w.n0, n_count=w.n1 - w.n0, ebase=w.e0 - e0,
                         gathered=1, o_shift=shift, p_shift=p_shift)
                common = dict(seg_ptr=ptr, idx=iv, grad_logits=vv[0], feat=rows, out=ov)
                rt.dispatch("logits_bwd_small", threads=(w.n1 - w.n0) * dim, uniform=u, **common)
                if w.n_large:
                    rt.dispatch("logits_bwd_large", workgroups=w.n_large * dim, uniform=u, large_nodes=w.large,
                                **common)
        return grad_q, grad_k, gl
    grad_q = be.empty((n, dim))
    grad_k = be.empty((n, dim))
    if gd.windows is not None:  # mode 0 per window: sources (grad_q), targets over gl in reverse order (grad_k)
        rwindows = gd.reverse_windows("edge_logits_backward")
        gl = edge_windows.in_windows(be, gd, gl, "grad_logits")
        rev_gl = edge_windows.to_reverse_order(be, gd, gl)
        for reverse, idx, values, feat, out in ((False, gd.col_idx, gl, k, grad_q), (True, gd.rev_src, rev_gl, q, grad_k)):
            for w in edge_windows.hub_groups(rwindows if reverse else gd.windows):
                if isinstance(w, list):  # a big hub: its columns in pieces (logits_bwd_large's order)
                    hub_pieces.hub_columns(be, w, dim, values, idx, feat, out, None, 256)
                    continue
                (iv, e0), vv = (edge_windows.window_view(be, x, w) for x in (idx, values))
                ptr, p_shift = gd.node_ptr(reverse, w.n0)
                u = dict(base, mode=0, n_large=w.n_large, node0=w.n0, n_count=w.n1 - w.n0, ebase=w.e0 - e0,
                         p_shift=p_shift)
                common = dict(seg_ptr=ptr, idx=iv, grad_logits=vv[0], feat=feat, out=out)
                rt.dispatch("logits_bwd_small", threads=(w.n1 - w.n0) * dim, uniform=u, **common)
                if w.n_large:
                    rt.dispatch("logits_bwd_large", workgroups=w.n_large * dim, uniform=u, large_nodes=w.large,
                                **common)
        return grad_q, grad_k, gl
    # the split reverse index (reverse_index.py): sources by target and grad_logits in
    # reverse-index order, read as mode 0 reads its CSR segments
    rev_idx, rev_gl, split = reverse_inputs(be, gd, gl)
    jobs = (
        (0, gd.row_ptr, gd.col_idx, gl, k, grad_q, gd.large_out, gd.n_large_out),
        (0 if split else 1, gd.rev_ptr, rev_idx, rev_gl, q, grad_k, gd.large_in, gd.n_large_in),
    )
    for mode, seg_ptr, idx, values, feat, out, large, n_large in jobs:
        u = dict(base, mode=mode, n_large=n_large)
        common = dict(seg_ptr=seg_ptr, idx=idx, grad_logits=values, feat=feat, out=out)
        rt.dispatch("logits_bwd_small", threads=n * dim, uniform=u, **common)
        if n_large:
            rt.dispatch("logits_bwd_large", workgroups=n_large * dim, uniform=u, large_nodes=large, **common)
    # grad_bias IS grad_logits (no copy dispatch): no op writes into its inputs, so the two
    # names can share one buffer
    return grad_q, grad_k, gl


def softmax_logits_backward(
    backend: Any, graph: Any, pi: Any, grad_pi: Any, tau: float, q: Any, k: Any
) -> tuple[Any, Any, Any]:
    be, rt = backend, backend.runtime
    gd = be.graph_data(graph)
    rwindows = None if gd.windows is None else gd.reverse_windows("softmax_logits_backward")
    pi, grad_pi, q, k = be._dev(pi), be._dev(grad_pi), be._dev(q), be._dev(k)
    n = gd.num_nodes
    dim = int(q.shape[1])
    plan = None
    if node_rows.needs_rows(rt, n, dim):  # q, k past one binding (node_rows.py)
        plan = node_rows.row_plan(be, graph, gd, dim)
        rwindows = plan.reverse("softmax_logits_backward")
        q, k = node_rows.in_node_rows(be, q, "q"), node_rows.in_node_rows(be, k, "k")
    gl = edge_windows.edge_array(be, gd, "grad_logits")
    grad_q, grad_k = (node_rows.new_node_rows(be, n, dim, what) for what in ("grad_q", "grad_k"))
    hub = max(gd.max_out_degree if gd.bins_out.n_hub else 0, gd.max_in_degree if gd.bins_in.n_hub else 0)
    # one invocation's loop iterations (loop_cap.py): a thread-bin node takes 4 columns per pass
    # over its entries, a 32-lane group's lane d / 32 columns, a hub's lane deg / 64 entries per column
    top = max(gd.max_out_degree, gd.max_in_degree)
    ts = min(top, be.thread_degree_max) if gd.bins_out.n_small or gd.bins_in.n_small else 0
    ms = min(top, GROUP_DEGREE_MAX) if gd.bins_out.n_mid or gd.bins_in.n_mid else 0
    per_thread = max(-(-b.n_small // b.serial_threads) if b.serial and b.n_small else 1
                     for b in (gd.bins_out, gd.bins_in))  # segment_bwd_serial's nodes per thread
    cost = max((-(-dim // 4) + 5) * (ts + 1) * per_thread, (-(-dim // 32) + 3) * (ms + 1)) + 64
    if hub:
        cost = max(cost, -(-hub // 64) * (dim + 3) + 10 * dim + 64)
    loop_cap.check(be, cost, "the softmax + logits backward" + (f" over a hub of {hub:,} entries" if hub else "")
                   + f" with d = {dim}")
    w_out, w_in = gd.bins_out.partials, gd.bins_in.partials
    partials = be.empty((max(1, w_out + w_in),))
    dummy = rt.dummy()
    if rwindows is not None:  # per edge window (edge_windows.py), or per row window (node_rows.py)
        if gd.windows is not None:
            pi = edge_windows.in_windows(be, gd, pi, "pi")
            grad_pi = edge_windows.in_windows(be, gd, grad_pi, "grad_pi")
        rows = rows_of = None
        if plan is not None:
            rows = be.empty((plan.rows * dim,))

            def rows_of(table: Any, out: Any) -> Any:
                def bind(w: Any, views: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
                    iv, e0 = views["idx"]
                    ov, shift = node_rows.node_range(be, out, w.n0, w.n1)
                    node_rows.gather_rows(be, table, iv, e0, w.e1 - w.e0, rows)
                    return dict(feat=rows, out=ov), dict(gathered=1, o_shift=shift)
                return bind

        def big_of(table: Any, out: Any, index: Any, values: Any, mode: int) -> Any:
            def big_hub(pieces: Any, slot: Any) -> None:
                if mode == 0:  # the dot and dl first, the lanes' squares of dl into the slot
                    hub_pieces.hub_dl(be, pieces, pi, grad_pi, values, tau, 64, slot)
                # mode 2: no dl, the lanes' squares from zero
                hub_pieces.hub_columns(be, pieces, dim, values, index, table, out, rows, 64, slot, zero_sq=mode != 0)
            return big_hub

        windows = gd.windows if plan is None else plan.windows
        _windowed_segment_bwd(be, gd.bins_out, windows,
                              dict(n_nodes=n, dim=dim, mode=0, tau=np.float32(tau)), 0,
                              partials, dict(feat=k, out=grad_q),
                              dict(idx=gd.col_idx, pi=pi, gpi=grad_pi, dl=gl), rows_of and rows_of(k, grad_q),
                              window_pieces(be, gd, gd.bins_out, graph.row_ptr, windows),
                              big_of(k, grad_q, gd.col_idx, gl, 0))
        rev_gl = edge_windows.to_reverse_order(be, gd, gl, plan)
        rev_src = gd.rev_src if plan is None else plan.rev_src
        _windowed_segment_bwd(be, gd.bins_in, rwindows, dict(n_nodes=n, dim=dim, mode=2, tau=np.float32(1.0)), w_out,
                              partials, dict(feat=q, out=grad_k, pi=dummy, gpi=dummy),
                              dict(idx=rev_src, dl=rev_gl),
                              rows_of and rows_of(q, grad_k), window_pieces(be, gd, gd.bins_in, graph.rev_ptr, rwindows),
                              big_of(q, grad_k, rev_src, rev_gl, 2))
        sumsq.remember(be, (grad_q, grad_k, gl), partials, w_out + w_in)
        return grad_q, grad_k, gl
    _segment_bwd(rt, gd.bins_out, dict(n_nodes=n, dim=dim, mode=0, out_offset=0, tau=np.float32(tau)),
                 seg=gd.bins_out.seg, idx=gd.col_idx, pi=pi, gpi=grad_pi, dl=gl, feat=k, out=grad_q, partials=partials)
    rev_idx, rev_gl, split = reverse_inputs(be, gd, gl)  # mode 2: the split reverse index
    _segment_bwd(rt, gd.bins_in, dict(n_nodes=n, dim=dim, mode=2 if split else 1, out_offset=w_out,
                                      tau=np.float32(1.0)),
                 seg=gd.bins_in.seg, idx=rev_idx, pi=dummy, gpi=dummy, dl=rev_gl, feat=q, out=grad_k,
                 partials=partials)
    sumsq.remember(be, (grad_q, grad_k, gl), partials, w_out + w_in)
    return grad_q, grad_k, gl


#: the most dispatches (runs of units) per window and span in :func:`window_runs`
MAX_WINDOW_RUNS = 16
#: the runs of a window are merged only while their list places stay within this many places
#: (or twice the window's nodes, if more) outside the window: bounds the window's piece
MERGE_SLACK = 1 << 16
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class SegPiece:
    """One copy of a window's part of the segment bins, bound as ``seg`` by its dispatches:
    the window's node pointers (``ptr[n0 .. n1]``: node j's at ``j - n0``), then for each run
    ``(first unit, count, bins_off)`` of ``runs`` the list places of those units (place m at
    ``bins_off + m``, mod 2^32). ``seg``: u32 on the device, at most one binding."""

    seg: DeviceArray
    runs: tuple[tuple[int, int, int], ...]


def _unit_starts(bins: Any) -> np.ndarray:
    """The first list place of every unit of ``bins`` (int64 [units + 1], the last = N): a place
    for the serial kernel, else a ``segment_bwd`` workgroup (64 small-bin places, 2 mid-bin
    places or one hub)."""
    ns, nm, nh = bins.n_small, bins.n_mid, bins.n_hub
    if bins.serial:
        return np.arange(ns + 1, dtype=np.int64)
    ws, wm = -(-ns // BIN_WG), -(-nm // 2)
    u = np.arange(ws + wm + nh + 1, dtype=np.int64)
    return np.where(u <= ws, np.minimum(BIN_WG * u, ns),
                    np.where(u <= ws + wm, ns + np.minimum(2 * (u - ws), nm), ns + nm + (u - ws - wm)))


def _merge_runs(starts: np.ndarray, ends: np.ndarray, first: np.ndarray, allowance: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge the runs [starts, ends) of units across their narrowest gaps (in units; ties: the
    earlier gap first) until MAX_WINDOW_RUNS remain, skipping a gap whose list places
    (``first``: the units' first places) would take the places outside the window past
    ``allowance``."""
    if starts.size <= MAX_WINDOW_RUNS:
        return starts, ends
    gaps = starts[1:] - ends[:-1]
    places = first[starts[1:]] - first[ends[:-1]]
    merged = np.zeros(gaps.size, bool)
    left, extra = starts.size, 0
    for g in np.argsort(gaps, kind="stable"):
        if left <= MAX_WINDOW_RUNS:
            break
        if extra + places[g] <= allowance:
            merged[g] = True
            extra += int(places[g])
            left -= 1
    keep = np.flatnonzero(~merged)  # the gaps that stay breaks
    return np.concatenate([starts[:1], starts[keep + 1]]), np.concatenate([ends[keep], ends[-1:]])


def _runs_of(be: Any, gd: Any, bins: Any, ptr: np.ndarray, windows: Any) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """(the host bins ``seg`` [2N + 1], :func:`window_runs`' runs), the runs cached on ``gd``."""
    seg, *counts = binned_segments(ptr, be.thread_degree_max)
    if tuple(counts) != (bins.n_small, bins.n_mid, bins.n_hub):  # not the bins on the device
        raise RuntimeError(f"window_runs: bins {tuple(counts)} from ptr, {(bins.n_small, bins.n_mid, bins.n_hub)} "
                           f"uploaded")
    key = ("runs", id(bins), id(windows))
    hit = gd.segment_runs.get(key)
    if hit is not None and hit[0] is windows:
        return seg, hit[1]
    n = gd.num_nodes
    place = np.empty(n, np.int64)
    place[seg[n + 1:].astype(np.int64)] = np.arange(n)
    first = _unit_starts(bins)
    unit = np.searchsorted(first, place, side="right") - 1  # the unit holding each node's place
    out = []
    for w in windows:
        units = np.unique(unit[w.n0:w.n1])
        if units.size == 0:
            out.append([])
            continue
        cut = np.flatnonzero(np.diff(units) > 1)  # a run ends after each cut
        starts = np.concatenate([units[:1], units[cut + 1]])
        ends = np.concatenate([units[cut], units[-1:]]) + 1
        starts, ends = _merge_runs(starts, ends, first, max(MERGE_SLACK, 2 * (w.n1 - w.n0)))
        out.append([(int(s), int(e - s)) for s, e in zip(starts, ends)])
    gd.segment_runs[key] = (windows, out)
    return seg, out


def window_runs(be: Any, gd: Any, bins: Any, ptr: np.ndarray, windows: Any) -> list[list[tuple[int, int]]]:
    """Per window of ``windows`` (node ranges n0 .. n1), the (first, count) runs of the units of
    ``bins`` that hold its nodes, in order: list places for the serial kernel (a thread per
    place), else workgroups of ``segment_bwd`` (64 small-bin places, 2 mid-bin nodes or one hub
    each). The bins sort nodes by degree, ties in node order, so a window's nodes are one run
    per degree: at most MAX_WINDOW_RUNS runs are kept, the closest merged (their gaps run idle
    units) while the merged gaps hold at most MERGE_SLACK list places (or twice the window's
    nodes); past that the runs stay apart. ``ptr``: the host pointers the bins were built from
    (graph.row_ptr or rev_ptr). Cached per (bins, windows) on ``gd``."""
    key = ("runs", id(bins), id(windows))
    hit = gd.segment_runs.get(key)
    if hit is not None and hit[0] is windows:
        return hit[1]
    return _runs_of(be, gd, bins, ptr, windows)[1]


def window_pieces(be: Any, gd: Any, bins: Any, ptr: np.ndarray, windows: Any) -> list[list[SegPiece]]:
    """Per window of ``windows``, the :class:`SegPiece` s its ``segment_bwd`` dispatches bind as
    ``seg``: its :func:`window_runs` packed greedily into pieces of at most one binding (a run
    cut between units where it does not fit), so no dispatch binds the graph's whole bins
    (u32 [2N + 1], past one binding from N = 16.7 M on default limits). Uploaded on first use
    and cached per (bins, windows) on ``gd`` (device memory tagged "graph").

    Raises:
        DeviceLimitError: a binding too small for a window's pointers and one unit of places.
    """
    key = ("pieces", id(bins), id(windows))
    hit = gd.segment_runs.get(key)
    if hit is not None and hit[0] is windows:
        return hit[1]
    rt = be.runtime
    seg, runs = _runs_of(be, gd, bins, ptr, windows)
    n = gd.num_nodes
    listed = seg[n + 1:]
    first = _unit_starts(bins)
    cap = rt.max_binding_bytes // 16 * 16 // 4  # u32 of one piece, bound whole
    made: list[DeviceArray] = []

    def flush(parts: list[np.ndarray], pruns: list[tuple[int, int, int]], out: list[SegPiece]) -> None:
        arr = be.asarray(np.concatenate(parts).astype(np.uint32), np.uint32)
        made.append(arr)
        out.append(SegPiece(arr, tuple(pruns)))

    result = []
    for w, wruns in zip(windows, runs):
        head = seg[w.n0:w.n1 + 1]
        room = cap - head.size
        pieces: list[SegPiece] = []
        parts, pruns, used = [head], [], 0
        for a, count in wruns:
            while count:
                pa = int(first[a])
                fit = int(np.searchsorted(first, pa + room - used, side="right")) - 1 - a
                take = min(count, fit)
                if take <= 0:
                    if not pruns:
                        desc, where = rt.pool.limit_desc
                        raise DeviceLimitError(
                            f"the backward's segment bins of nodes {w.n0} .. {w.n1}: their {head.size} pointers and "
                            f"one workgroup's {int(first[a + 1]) - pa} nodes do not fit one storage binding ({desc} = "
                            f"{rt.max_binding_bytes} bytes, {where}): use a larger binding limit")
                    flush(parts, pruns, pieces)
                    parts, pruns, used = [head], [], 0
                    continue
                width = int(first[a + take]) - pa
                pruns.append((a, take, (head.size + used - pa) & _MASK))
                parts.append(listed[pa:pa + width])
                used += width
                a, count = a + take, count - take
        if pruns:
            flush(parts, pruns, pieces)
        result.append(pieces)
    be.tag_memory(made, "graph")
    gd.segment_runs[key] = (windows, result)
    return result


def _windowed_segment_bwd(be: Any, bins: Any, windows: Any, u: dict[str, Any], out_offset: int, partials: Any,
                          fixed: dict[str, Any], per_entry: dict[str, Any], rows: Any = None,
                          pieces: Any = None, big: Any = None) -> None:
    """``segment_bwd`` over ``bins`` per window (only its nodes, over the runs of units that hold
    them, bound with the window's own part of the bins: ``pieces`` from :func:`window_pieces`;
    the ``per_entry`` arrays bound as its ranges), each
    lane's sum of squares stored (``lanes``), then one ``segment_bwd_lanes`` (or
    ``_serial_lanes``) dispatch reducing them into ``partials`` from ``out_offset``: the partials
    one dispatch over the whole graph writes. ``rows``: for q and k past one binding,
    ``rows(w, views)`` -> (bindings, uniform fields) of window ``w`` (its gathered feat rows and
    its node range of out, node_rows.py); ``big(pieces, slot)`` runs a big hub (its consecutive
    ``big`` windows, edge_windows.hub_groups) given its lanes' slot of the scratch (in mode 0
    its dot, dl and their squares in pieces too, hub_pieces.hub_dl)."""
    rt = be.runtime
    ur = {**u, **bins.uniform(u["n_nodes"]), "out_offset": out_offset, "node0": 0, "node1": 0, "ebase": 0, "lanes": 0,
          "w_first": 0, "gathered": 0, "o_shift": 0, "p_shift": 0}
    if bins.serial:  # one value per node in the list, in ranges that fit one binding
        scratch = edge_windows.new_split_1d(be, max(1, bins.n_small), 1, "segment_bwd_serial values")
        spans = binding_ranges([scratch], rt.max_binding_bytes, rt.offset_alignment)
    else:  # 128 floats per workgroup, in ranges of workgroups that fit one binding
        scratch = edge_windows.new_split_1d(be, bins.workgroups * 128, 128, "segment_bwd lanes")
        per = max(1, rt.max_binding_size // 512)
        spans = [(w0, min(per, bins.workgroups - w0)) for w0 in range(0, bins.workgroups, per)]
    by_window = dict(zip(map(id, windows), pieces))
    for w in edge_windows.hub_groups(windows):
        if isinstance(w, list):  # a big hub's pieces (one hub, one workgroup): into its lanes' slot
            wpieces = by_window[id(w[0])]
            big(w, range_view(scratch, wpieces[0].runs[0][0] * 128, 128, rt.offset_alignment)[0])
            continue
        wpieces = by_window[id(w)]
        if not wpieces:  # no node in the window
            continue
        views = {name: edge_windows.window_view(be, arr, w) for name, arr in per_entry.items()}
        e0 = next(iter(views.values()))[1]
        uw = {**u, "out_offset": 0, "node0": w.n0, "node1": w.n1, "ebase": w.e0 - e0, "lanes": 1, "gathered": 0,
              "o_shift": 0}
        bound = {**fixed, **{name: v[0] for name, v in views.items()}}
        if rows is not None:
            more, fields = rows(w, views)
            bound.update(more)
            uw.update(fields)
        uw.update(bins.uniform(u["n_nodes"]))
        uw["p_shift"] = w.n0
        for piece in wpieces:
            if bins.serial:  # a thread per list place of each run, in each range of the values' scratch
                for m0, count, off in piece.runs:
                    for r0, span in spans:
                        lo, hi = max(m0, r0), min(m0 + count, r0 + span)
                        if lo < hi:
                            values, e0 = (scratch, lo) if len(spans) == 1 else range_view(
                                scratch, lo, hi - lo, rt.offset_alignment)
                            rt.dispatch("segment_bwd_serial", threads=hi - lo, uniform={
                                **uw, "n_threads": hi - lo, "w_first": lo, "bins_off": off,
                                "out_offset": (lo - e0) & _MASK}, partials=values, seg=piece.seg, **bound)
                continue
            for a, count, off in piece.runs:
                for w0, span in spans:  # each run's workgroups in each span of the lanes' scratch
                    lo, hi = max(a, w0), min(a + count, w0 + span)
                    if lo < hi:
                        lanes = range_view(scratch, lo * 128, (hi - lo) * 128, rt.offset_alignment)[0]
                        rt.dispatch("segment_bwd", workgroups=hi - lo, uniform={
                            **uw, "n_threads": 0, "w_first": lo, "bins_off": off}, partials=lanes, seg=piece.seg,
                            **bound)
    if bins.serial:
        if len(spans) == 1:  # the values in one binding: one dispatch
            rt.dispatch("segment_bwd_serial_lanes", threads=bins.serial_threads, uniform={**ur, "n_threads":
                        bins.serial_threads}, feat=scratch, partials=partials)
        else:
            _serial_lanes_in_ranges(be, bins, ur, scratch, spans, partials)
        return
    for w0, count in spans:
        lanes = range_view(scratch, w0 * 128, count * 128, rt.offset_alignment)[0]
        rt.dispatch("segment_bwd_lanes", workgroups=count, uniform={**ur, "n_threads": 0, "w_first": w0}, feat=lanes,
                    partials=partials)


def _serial_lanes_in_ranges(be: Any, bins: Any, ur: dict[str, Any], scratch: DeviceArray, spans: list[tuple[int, int]],
                            partials: DeviceArray) -> None:
    """``segment_bwd_serial_lanes`` over node values past one binding (``scratch``, bound in
    ``spans``): thread t sums the places t, t + T, ... (T = the serial threads) in order, so
    ``segment_bwd_serial_carry`` runs over consecutive places cut where a range of the scratch
    or of the threads' carry ends or a new round of T places starts, each thread carrying its
    compensated sum from round to round: the same partials, bit for bit."""
    rt = be.runtime
    n, t = bins.n_small, bins.serial_threads
    carry = edge_windows.new_split_1d(be, 2 * t, 2, "segment_bwd_serial carry")
    tcuts = [c // 2 for c, _ in binding_ranges([carry], rt.max_binding_bytes, rt.offset_alignment)] + [t]
    cuts = sorted({r0 for r0, _ in spans} | {r * t + c for r in range(-(-n // t)) for c in tcuts} | {n})
    for m0, m1 in zip(cuts, cuts[1:]):
        if m1 > n:
            break
        r, t0 = divmod(m0, t)
        values, e0 = range_view(scratch, m0, m1 - m0, rt.offset_alignment)
        lanes, c0 = range_view(carry, 2 * t0, 2 * (m1 - m0), rt.offset_alignment)
        rt.dispatch("segment_bwd_serial_carry", threads=m1 - m0, uniform={
            **ur, "n_threads": t, "node0": r, "node1": m1 - m0, "w_first": t0, "ebase": e0, "o_shift": c0},
            feat=values, partials=partials, lanes_carry=lanes)


def _segment_bwd(rt: Any, bins: Any, u: dict[str, Any], **bindings: Any) -> None:
    """One ``segment_bwd`` dispatch over ``bins`` (a SegmentBins): the barrier-free
    ``segment_bwd_serial`` (thread and partial per node) when every node is in the thread bin."""
    u.update(bins.uniform(u["n_nodes"]))
    for key in ("node0", "node1", "ebase", "lanes", "w_first", "gathered", "o_shift", "p_shift"):
        u.setdefault(key, 0)
    if bins.serial:
        u["n_threads"] = bins.serial_threads
        rt.dispatch("segment_bwd_serial", threads=bins.serial_threads, uniform=u, **bindings)
    else:
        u["n_threads"] = 0
        rt.dispatch("segment_bwd", workgroups=bins.workgroups, uniform=u, **bindings)
