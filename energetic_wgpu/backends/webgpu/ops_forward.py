"""Forward ops of the wgpu backend: the fused logits/softmax/top-k, the energy scatter and the
router's node-major scatter state, the edge flow and the step metrics.

Each function takes the :class:`WgpuBackend` as its first argument and follows the docstring of
the matching method of :class:`energetic_wgpu.backends.base.Backend`; the degree strategies are
in backend.py's module docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import DeviceLimitError
from ...graph import Graph
from ...validation import check_int
from . import batch_chunks, edge_windows, loop_cap, node_major, node_rows, wide_rows
from .arrays import DeviceArray, parts_of, range_view
from .kernels import GROUP_DEGREE_MAX, REDUCE_ITEMS

_REDUCE_SPAN = 256 * REDUCE_ITEMS  # elements covered by one reduction workgroup
_FLOW_WG = 64  # edge_flow's workgroup size (kernels.py): edges per workgroup


def edge_logits(be: Any, graph: Graph, q: Any, k: Any, bias: Any) -> DeviceArray:
    gd = be.graph_data(graph)
    q, k, bias = be._dev(q), be._dev(k), be._dev(bias)
    dim = q.shape[1] if q.ndim == 2 else 0
    if node_rows.needs_rows(be.runtime, gd.num_nodes, dim):  # q, k past one binding: per row window
        plan = node_rows.row_plan(be, graph, gd, dim)
        q, k = node_rows.in_node_rows(be, q, "q"), node_rows.in_node_rows(be, k, "k")
        if gd.windows is not None:
            bias = edge_windows.in_windows(be, gd, bias, "bias")
        out = edge_windows.edge_array(be, gd, "edge_logits")
        rows = be.empty((plan.rows * dim,))
        for w in plan.windows:
            _plan_logits(be, gd, plan, w, q, k, bias, out, rows)
        return out
    if gd.windows is not None:  # one dispatch per edge window (edge_windows.py)
        bias = edge_windows.in_windows(be, gd, bias, "bias")
        out = edge_windows.new_edge_array(be, gd, np.float32, "edge_logits")
        for w in gd.windows:
            (s, e0), c, b, o = (edge_windows.window_view(be, x, w) for x in (gd.src, gd.col_idx, bias, out))
            be.runtime.dispatch("edge_logits", threads=w.e1 - w.e0, uniform=dict(n_edges=w.e1 - w.e0, dim=dim, e0=e0, gathered=0, q_shift=0),
                                src=s, col_idx=c[0], q=q, k=k, bias=b[0], logits=o[0])
        return out
    out = be.empty((gd.num_edges,))
    be.runtime.dispatch(
        "edge_logits", threads=gd.num_edges, uniform=dict(n_edges=gd.num_edges, dim=dim, e0=0, gathered=0, q_shift=0),
        src=gd.src, col_idx=gd.col_idx, q=q, k=k, bias=bias, logits=out,
    )
    return out

def _plan_logits(be: Any, gd: Any, plan: Any, w: Any, q: Any, k: Any, bias: Any, out: Any, rows: Any) -> None:
    """``edge_logits`` of row window ``w`` (node_rows.py; one piece of a big hub too) into ``out``."""
    if w.e1 > w.e0:
        (s, e0), c, b, o = (edge_windows.window_view(be, x, w) for x in (gd.src, gd.col_idx, bias, out))
        node_rows.gather_rows(be, k, c[0], e0, w.e1 - w.e0, rows)
        qv, shift = node_rows.node_range(be, q, w.n0, w.n1)
        be.runtime.dispatch("edge_logits", threads=w.e1 - w.e0, uniform=dict(
            n_edges=w.e1 - w.e0, dim=plan.dim, e0=e0, gathered=1, q_shift=shift), src=s, col_idx=c[0], q=qv,
            k=rows, bias=b[0], logits=o[0])


def _probs(be: Any, graph: Graph, q: Any, k: Any, bias: Any, dim: int, tau: float, top_k: Any,
           mode: int) -> DeviceArray:
    """The ``edge_probs`` dispatch (edge_probs.wgsl; hubs add ``edge_probs_hub``): pi (mode 0)
    or the kept mask (mode 1) of the z = (dot(q, k) + bias) / tau; dim = 0 takes ``bias``
    as the logits."""
    top_k = check_int(top_k, "top_k", 0)
    gd = be.graph_data(graph)
    bins = gd.bins
    # one invocation's loop iterations (loop_cap.py): a z costs `row` (row_dot); a thread-bin
    # segment ranks its z pairwise, a 32-lane group's lane ranks its (<= 8) edges against the segment
    row = -(-dim // 4) + 2
    ts = min(gd.max_out_degree, be.thread_degree_max) if bins.n_small else 0
    ms = min(gd.max_out_degree, GROUP_DEGREE_MAX) if bins.n_mid else 0
    cost = max(ts * (row + ts + 1), -(-ms // 32) * (row + ms + 1)) + 64
    if bins.n_hub:
        cost = max(cost, -(-gd.max_out_degree // 256) * (row + 14) + 2200)
    loop_cap.check(be, cost, "the segment softmax / top-k" + (f" with a segment of {gd.max_out_degree:,} edges"
                                                               if bins.n_hub else "") + (f" with d = {dim}" if dim else ""))
    dt = np.bool_ if mode == 1 else np.float32
    if node_rows.needs_rows(be.runtime, gd.num_nodes, dim):  # q, k past one binding (node_rows.py)
        plan = node_rows.row_plan(be, graph, gd, dim)
        q, k = node_rows.in_node_rows(be, q, "q"), node_rows.in_node_rows(be, k, "k")
        if gd.windows is not None:
            bias = edge_windows.in_windows(be, gd, bias, "bias")
            out = edge_windows.new_edge_array(be, gd, dt, "edge_probs")
        else:
            out = be.empty((gd.num_edges,), dt)
        rows = be.empty((plan.rows * dim,))
        logits = None
        for w in edge_windows.hub_groups(plan.windows):
            if isinstance(w, list):  # a big hub: its logits stored per piece, then its softmax from them (d = 0)
                if logits is None:
                    logits = edge_windows.edge_array(be, gd, "big hub logits")
                for pw in w:
                    _plan_logits(be, gd, plan, pw, q, k, bias, logits, rows)
                _probs_pieces(be, gd, w, 0, top_k, mode, tau, rows, rows, logits, out)
            elif w.seg_list is not None:
                (c, e0), bv, o = (edge_windows.window_view(be, x, w) for x in (gd.col_idx, bias, out))
                node_rows.gather_rows(be, k, c, e0, w.e1 - w.e0, rows)
                qv, shift = node_rows.node_range(be, q, w.n0, w.n1)
                ptr, p_shift = gd.node_ptr(False, w.n0)
                _probs_dispatch(be, w.bins, w.seg_list, w.e0 - e0, dim, top_k, mode, tau, dict(
                    row_ptr=ptr, col_idx=c, q=qv, k=rows, bias=bv[0], result=o[0]), shift, p_shift)
        return out
    if gd.windows is not None:  # per edge window, its own bins (edge_windows.py)
        bias = edge_windows.in_windows(be, gd, bias, "bias" if dim else "logits")
        out = edge_windows.new_edge_array(be, gd, dt, "edge_probs")
        for w in edge_windows.hub_groups(gd.windows):
            if isinstance(w, list):  # a big source hub: in pieces (edge_probs_piece)
                _probs_pieces(be, gd, w, dim, top_k, mode, tau, q, k, bias, out)
            elif w.seg_list is not None:
                (c, e0), bv, o = (edge_windows.window_view(be, x, w) for x in (gd.col_idx, bias, out))
                ptr, p_shift = gd.node_ptr(False, w.n0)
                _probs_dispatch(be, w.bins, w.seg_list, w.e0 - e0, dim, top_k, mode, tau, dict(
                    row_ptr=ptr, col_idx=c, q=q, k=k, bias=bv[0], result=o[0]), p_shift=p_shift)
        return out
    out = be.empty((gd.num_edges,), dt)
    if gd.seg_list is None:
        return out  # no edges
    _probs_dispatch(be, bins, gd.seg_list, 0, dim, top_k, mode, tau, dict(
        row_ptr=gd.row_ptr, col_idx=gd.col_idx, q=q, k=k, bias=bias, result=out))
    return out


def _probs_dispatch(be: Any, bins: Any, seg_list: Any, ebase: int, dim: int, top_k: int, mode: int, tau: float,
                    b: dict[str, Any], q_shift: int | None = None, p_shift: int = 0) -> None:
    """The ``edge_probs`` dispatch over ``bins`` (and ``edge_probs_hub`` with hubs); with
    ``q_shift``, q is a node range and k the window's gathered rows (node_rows.py); ``p_shift``:
    row_ptr is a node block of the pointers (GraphData.node_ptr)."""
    u = dict(n_small=bins.n_small, n_mid=bins.n_mid, n_hub=bins.n_hub, small_wg=bins.small_wg,
             mid_wg=bins.mid_wg, dim=dim, top_k=top_k, mode=mode, tau=np.float32(tau), ebase=ebase,
             gathered=int(q_shift is not None), q_shift=q_shift or 0, **_NO_PIECE, p_shift=p_shift)
    if bins.workgroups:  # without mid segments: the barrier-free pipeline
        name = "edge_probs" if bins.n_mid else "edge_probs_small"
        be.runtime.dispatch(name, workgroups=bins.workgroups, uniform=u, seg_list=seg_list, **b)
    if bins.n_hub:
        be.runtime.dispatch("edge_probs_hub", workgroups=bins.n_hub, uniform=u, seg_list=seg_list, **b)

_NO_PIECE = dict(phase=0, round=0, ps=0, pt=0, pos=0, deg=0, node=0, first=0, last=0)
#: u32 of edge_probs_piece's carry and carry_lanes (edge_probs.wgsl)
_PIECE_CARRY = (528, 1024)


def _probs_pieces(be: Any, gd: Any, pieces: list[Any], dim: int, top_k: int, mode: int, tau: float, q: Any, k: Any,
                  bias: Any, out: Any) -> None:
    """The softmax / top-k (mode 0 / 1) of one big hub, its consecutive windows ``pieces`` (each
    starting a multiple of 256 entries from its first; edge_windows.hub_groups), as
    ``edge_probs_hub`` computes it, in ``edge_probs_piece`` dispatches: per piece the z; with a
    top-k below the degree 8 radix rounds (the last 4 no-ops unless the k-th key ties), each
    over every piece; then the mask (mode 1), or the max, the sum and pi. ``q``, ``k`` bound
    whole (dim = 0: ``bias`` holds the logits); ``bias``, ``out``: [E] arrays in the windows'
    layout. The same bits as one workgroup over the whole hub."""
    rt = be.runtime
    span = edge_windows.span_of(pieces)
    deg = span.e1 - span.e0
    use_k = top_k != 0 and deg > top_k
    carry, lanes = (be.empty((n,), np.uint32) for n in _PIECE_CARRY)
    views = [tuple(edge_windows.window_view(be, x, pw) for x in (gd.col_idx, bias, out)) for pw in pieces]
    steps = [(0, 0)] + [(1, r) for r in range(8 if use_k else 0)] + ([(2, 0)] if mode == 1 else [(3, 0), (4, 0), (5, 0)])
    for phase, rnd in steps:
        for i, (pw, ((c, e0), bv, o)) in enumerate(zip(pieces, views)):
            u = dict(n_small=0, n_mid=0, n_hub=0, small_wg=0, mid_wg=0, dim=dim, top_k=top_k if use_k else 0,
                     mode=mode, tau=np.float32(tau), ebase=0, gathered=0, q_shift=0, phase=phase, round=rnd, ps=e0,
                     pt=e0 + pw.e1 - pw.e0, pos=pw.e0 - span.e0, deg=deg, node=span.n0, first=int(i == 0),
                     last=int(i == len(pieces) - 1), p_shift=0)
            rt.dispatch("edge_probs_piece", workgroups=1, uniform=u, col_idx=c, q=q, k=k, bias=bv[0], result=o[0],
                        carry=carry, carry_lanes=lanes)


def edge_probs(be: Any, graph: Graph, q: Any, k: Any, bias: Any, tau: float = 1.0, top_k: int = 0) -> DeviceArray:
    """float32 [E]: segment_softmax(edge_logits(q, k, bias), tau, top_k) in ONE dispatch (hubs,
    segments of more than 256 edges, add one); the logits are never stored (q, k float
    [N, d]; bias float [E])."""
    q, k, bias = be._dev(q), be._dev(k), be._dev(bias)
    dim = q.shape[1] if q.ndim == 2 else 0
    return _probs(be, graph, q, k, bias, dim, float(tau), top_k, 0)

def _softmax(be: Any, graph: Graph, logits: Any, tau: float, top_k: Any, mode: int) -> DeviceArray:
    dummy = be.runtime.dummy()
    return _probs(be, graph, dummy, dummy, be._dev(logits), 0, tau, top_k, mode)

def segment_softmax(be: Any, graph: Graph, logits: Any, tau: float = 1.0, top_k: int = 0) -> DeviceArray:
    return _softmax(be, graph, logits, float(tau), top_k, 0)

def segment_topk(be: Any, graph: Graph, values: Any, k: int) -> DeviceArray:
    return _softmax(be, graph, values, 1.0, k, 1)

def _batch(energies: DeviceArray, n: int) -> tuple[int, bool]:
    if energies.ndim == 1:
        return 1, True
    return energies.shape[0], False

def energy_scatter(be: Any,
    graph: Graph,
    energies: Any,
    pi: Any,
    alpha: float = 1.0,
    active: Any = None,
    retain_sinks: bool = False,
    return_flow: bool = False,
) -> Any:
    gd = be.graph_data(graph)
    if gd.ptr_block:  # one batch row past one binding: row by row (wide_rows.py)
        return _scatter_wide(be, gd, graph, energies, pi, alpha, active, retain_sinks, return_flow)
    if gd.windows is not None:
        gd.reverse_windows("energy_scatter")
    energies, pi = be._dev(energies), be._dev(pi)
    # node-major copy of the energies (and mask), then the gather writes [B, N] (per batch
    # chunk when the state is over one binding)
    state, act = scatter_state(be, graph, energies, active)
    if isinstance(state, (batch_chunks.Chunked, batch_chunks.RowChunks)):
        out = batch_chunks.scatter_step(be, gd, state, pi, alpha, act, retain_sinks, True)
    else:
        out = node_major.scatter(be, gd, state, pi, alpha, act, retain_sinks, False, energies.shape)
    if return_flow:
        return out, edge_flow(be, graph, energies, pi, alpha, active)
    return out

def _scatter_wide(be: Any, gd: Any, graph: Graph, energies: Any, pi: Any, alpha: float, active: Any,
                  retain_sinks: bool, return_flow: bool) -> Any:
    """:func:`energy_scatter` when one batch row of N is past one binding (wide_rows.py)."""
    gd.reverse_windows("energy_scatter")  # refusals before any work
    n = gd.num_nodes
    energies, pi = wide_rows.in_rows(be, be._dev(energies), n), be._dev(pi)
    act = None if active is None else wide_rows.in_rows(be, be._dev(active), n)
    batch, _ = _batch(energies, gd.num_nodes)
    out = wide_rows.new_wide(be, energies.shape, "energy_scatter") if batch else be.empty(energies.shape)
    if batch and gd.num_nodes:
        wide_rows.scatter(be, gd, energies, act, pi, alpha, retain_sinks, out, batch)
    if return_flow:
        return out, edge_flow(be, graph, energies, pi, alpha, act)
    return out


def scatter_state(be: Any, graph: Graph, energies: Any, active: Any) -> tuple[Any, Any]:
    """Node-major copies of ``energies`` float [B, N] and ``active`` (node_major.py): one
    ``scatter_transpose`` dispatch; per batch chunk when the state is over one binding
    (batch_chunks.py: then :class:`~.batch_chunks.Chunked` states), or the [B, N] arrays
    themselves as :class:`~.batch_chunks.RowChunks` when not even 4 node-major rows of N fit
    one binding."""
    gd = be.graph_data(graph)
    energies = be._dev(energies)
    active = None if active is None else be._dev(active)
    if gd.ptr_block:  # one batch row past one binding: the state stays in its rows (wide_rows.py)
        gd.reverse_windows("the scatter's state")
        energies, active = (wide_rows.in_rows(be, x, gd.num_nodes) for x in (energies, active))
        b = 1 if energies.ndim == 1 else int(energies.shape[0])
        spans = [(r, 1) for r in range(b)]
        return (batch_chunks.RowChunks(energies, spans, b, gd.num_nodes),
                None if active is None else batch_chunks.RowChunks(active, list(spans), b, gd.num_nodes))
    chunks = batch_chunks.plan(be, int(energies.shape[0]), gd.num_nodes) if energies.ndim == 2 else None
    if chunks is not None:
        return batch_chunks.scatter_state(be, gd, energies, active, chunks)
    return node_major.to_node_major(be, gd, energies, active)

def scatter_step(be: Any, graph: Graph, state: Any, pi: Any, alpha: float, active_state: Any, retain_sinks: bool,
                 last: bool) -> Any:
    """One step from a node-major state: node-major next state, or float [B, N] when ``last``."""
    gd = be.graph_data(graph)
    if gd.ptr_block:  # a RowChunks state of one-row spans (wide_rows.py)
        out = wide_rows.new_wide(be, state.rows.shape, "batched energies")
        if state.batch and gd.num_nodes:
            wide_rows.scatter(be, gd, state.rows, None if active_state is None else active_state.rows, be._dev(pi),
                              alpha, retain_sinks, out, state.batch)
        return out if last else batch_chunks.RowChunks(out, list(state.spans), state.batch, gd.num_nodes)
    if isinstance(state, (batch_chunks.Chunked, batch_chunks.RowChunks)):
        return batch_chunks.scatter_step(be, gd, state, be._dev(pi), alpha, active_state, retain_sinks, last)
    return node_major.scatter(be, gd, state, be._dev(pi), alpha, active_state, retain_sinks, not last)

def public_state(be: Any, state: Any) -> Any:
    """``state`` as float [B, N] (one ``scatter_rows`` dispatch, per batch chunk when split,
    for a node-major state whose [B, N] form is not known yet)."""
    if isinstance(state, (batch_chunks.Chunked, batch_chunks.RowChunks)):
        return batch_chunks.to_rows(be, state)
    return node_major.to_rows(be, state)

def edge_flow(be: Any, graph: Graph, energies: Any, pi: Any, alpha: float = 1.0, active: Any = None) -> DeviceArray:
    """As :meth:`Backend.edge_flow`. A [B, E] flow larger than the binding limit lives in one
    buffer (up to the buffer size limit; split over buffers past it: batch_chunks.new_rows)
    written in chunks of whole rows, each bound as its own range (bit-identical to one
    dispatch: every element is computed alone); it can be read back but not passed whole to
    another op. [B, N] energies (and mask) over one binding are bound in the same row ranges
    (batch_chunks.rows_view); no chunk crosses a buffer of a split array."""
    gd = be.graph_data(graph)
    energies, pi = be._dev(energies), be._dev(pi)
    batch, flat = _batch(energies, gd.num_nodes)
    act = be._opt(active)
    shape = (gd.num_edges,) if flat else (batch, gd.num_edges)
    if gd.windows is not None:
        return _edge_flow_windowed(be, gd, energies, pi, alpha, active, act, batch, shape)
    out = batch_chunks.new_rows(be, shape, np.float32, "edge_flow")
    edge_blocks = -(-gd.num_edges // _FLOW_WG)
    u = dict(batch=batch, n_nodes=gd.num_nodes, n_edges=gd.num_edges, has_active=1 if active is not None else 0,
             alpha=np.float32(alpha), edge_blocks=edge_blocks, row0=0, out0=0, e0=0, eoff=0)
    b = dict(src=gd.src, pi=pi, energies=energies, act_mask=act)
    ranged = energies.nbytes > be.runtime.max_binding_size  # energies in row ranges too
    max_rows = batch_chunks.rows_per_range(be, gd.num_nodes) if ranged else None
    breaks = _row_breaks(out, gd.num_edges) | _row_breaks(energies, gd.num_nodes)
    if active is not None:
        breaks |= _row_breaks(act, gd.num_nodes)
    # one workgroup per (batch row, WG edges): the shader never forms b * E before the bounds check
    for row0, rows, view, out0 in _row_chunks(be, out, batch, gd.num_edges, max_rows, breaks):
        uc = {**u, "batch": rows, "row0": row0, "out0": out0}
        if ranged:
            ev, e0 = batch_chunks.rows_view(be, energies, row0, rows, gd.num_nodes)
            av = act if active is None else batch_chunks.rows_view(be, act, row0, rows, gd.num_nodes)[0]
            uc.update(row0=0, e0=e0)
            bc = {**b, "energies": ev, "act_mask": av}
        else:
            bc = b
        be.runtime.dispatch("edge_flow", workgroups=rows * edge_blocks, uniform=uc, flow=view, **bc)
    return out


def _edge_flow_windowed(be: Any, gd: Any, energies: DeviceArray, pi: DeviceArray, alpha: float, active: Any,
                        act: Any, batch: int, shape: tuple[int, ...]) -> DeviceArray:
    """:func:`edge_flow` on a graph cut into edge windows (edge_windows.py): one dispatch per
    (batch row, window), the flow [B, E] cut at every row's window starts; energies (and
    mask) over one binding bound one row at a time. Every element is computed alone, as in
    one dispatch: bit-identical."""
    rt, n, e = be.runtime, gd.num_nodes, gd.num_edges
    pi = edge_windows.in_windows(be, gd, pi, "pi")
    out = rt.pool.new_split_array(be, shape, np.float32, 1, rt.offset_alignment, "edge_flow",
                                  cuts=[b * e + w.e0 for b in range(batch) for w in gd.windows])
    ranged = energies.nbytes > rt.max_binding_size
    wide = bool(gd.ptr_block)  # one row past one binding: each window's sources' range of it (wide_rows.py)
    if wide:  # every node block of a row in one buffer
        energies, act = wide_rows.in_rows(be, energies, n), act if active is None else wide_rows.in_rows(be, act, n)
    for b in range(batch):
        if wide:
            ev, av, e0, row0 = energies, act, 0, 0
        elif ranged:
            ev, e0 = batch_chunks.rows_view(be, energies, b, 1, n)
            av = act if active is None else batch_chunks.rows_view(be, act, b, 1, n)[0]
            row0 = 0
        else:
            ev, av, e0, row0 = energies, act, 0, b
        for w in gd.windows:
            if w.e1 == w.e0:
                continue
            (sv, eoff), pv = (edge_windows.window_view(be, x, w) for x in (gd.src, pi))
            ov, out0 = range_view(out, b * e + w.e0, w.e1 - w.e0, rt.offset_alignment)
            if wide:
                ev, e0 = wide_rows.own(be, energies, b, n, w.n0, w.n1)
                av = act if active is None else wide_rows.own(be, act, b, n, w.n0, w.n1)[0]
            u = dict(batch=1, n_nodes=n, n_edges=w.e1 - w.e0, has_active=1 if active is not None else 0,
                     alpha=np.float32(alpha), edge_blocks=-(-(w.e1 - w.e0) // _FLOW_WG), row0=row0, out0=out0, e0=e0,
                     eoff=eoff)
            rt.dispatch("edge_flow", workgroups=u["edge_blocks"], uniform=u, src=sv, pi=pv[0], energies=ev,
                        act_mask=av, flow=ov)
    return out


def _row_breaks(x: DeviceArray, row_len: int) -> set[int]:
    """The rows where a split array (arrays.parts_of) changes buffers (its parts hold whole rows)."""
    return {start // row_len for start, *_ in (parts_of(x) or [])[1:]}


def _row_chunks(be: Any, out: DeviceArray, batch: int, row_len: int, max_rows: int | None = None,
                breaks: set[int] = frozenset()) -> Any:
    """(first row, rows, bindable range, element offset of the first row in it) covering the
    [batch, row_len] float ``out`` in chunks of whole rows (at most ``max_rows``) that fit the
    binding limit and end at each row of ``breaks``: the whole array when it fits (and no
    ``max_rows`` or breaks), else ranges from an aligned offset before each chunk's row."""
    rt = be.runtime
    limit, align = rt.max_binding_size // 16 * 16, rt.offset_alignment  # views bind multiples of 16
    if batch * row_len * 4 <= limit and max_rows is None and not breaks:
        yield 0, batch, out, 0
        return
    per = (limit - align) // (row_len * 4)  # the aligned start adds < align bytes
    if per < 1:
        raise DeviceLimitError(
            f"one row of {row_len * 4} bytes (and its {align}-byte alignment) does not fit the binding limit "
            f"of {limit} bytes"
        )
    per = per if max_rows is None else min(per, max_rows)
    stops = sorted(b for b in breaks if 0 < b < batch) + [batch]
    row0 = 0
    while row0 < batch:
        rows = min(per, next(b for b in stops if b > row0) - row0)
        view, out0 = range_view(out, row0 * row_len, rows * row_len, align)
        yield row0, rows, view, out0
        row0 += rows

def step_metrics(be: Any,
    graph: Graph,
    energies: Any,
    next_energies: Any,
    pi: Any,
    alpha: float = 1.0,
    active: Any = None,
) -> DeviceArray:
    gd = be.graph_data(graph)
    energies, next_energies, pi = be._dev(energies), be._dev(next_energies), be._dev(pi)
    batch, _ = _batch(energies, gd.num_nodes)
    if energies.ndim == 2 and energies.shape[0] == 0:
        batch = 0
    act = be._opt(active)
    if gd.ptr_block:  # wide rows: every node block of a row in one buffer (wide_rows.py)
        energies, act = wide_rows.in_rows(be, energies, gd.num_nodes), act if active is None else wide_rows.in_rows(
            be, act, gd.num_nodes)
    # workgroups: flat ranges over B*N and E, and a [B, E] grid of edge_blocks per row taken
    # with a stride of n_parts (metrics.wgsl; B*E is never formed on the device, it can pass
    # 2^32), as many as the partials' binding holds (8 floats each, at most 2^20)
    edge_blocks = -(-gd.num_edges // _REDUCE_SPAN)
    grid = batch * edge_blocks
    cap = max(1, min(2**20, be.runtime.max_binding_size // 32))
    n_parts = max(-(-batch * gd.num_nodes // _REDUCE_SPAN), edge_blocks, min(grid, cap))
    if grid + n_parts >= 2**32:
        raise DeviceLimitError(f"step_metrics: B = {batch} x {edge_blocks} edge blocks of 4096 is past 2^32 blocks")
    ranged = energies.nbytes > be.runtime.max_binding_size
    windowed = gd.windows is not None
    if (ranged or windowed) and grid > n_parts:  # one [B, E] block per slot (metrics.wgsl)
        n_parts = grid
        if n_parts * 32 > be.runtime.max_binding_size:
            raise DeviceLimitError(
                f"step_metrics: a batch split into chunks needs {n_parts} partials of 32 bytes, over the binding "
                f"limit of {be.runtime.max_binding_size} bytes"
            )
    partials = be.empty((max(1, n_parts) * 8,))
    out = be.empty((5,))
    has_act = 1 if active is not None else 0
    u = dict(batch=batch, n_nodes=gd.num_nodes, n_edges=gd.num_edges, has_active=has_act, alpha=np.float32(alpha),
             n_total=n_parts, n_nonempty=gd.n_nonempty, edge_blocks=edge_blocks, grid_blocks=grid, w0=0, fields=7,
             row0=0, e0=0, pbase=0)
    b = dict(src=gd.src, pi=pi, energies=energies, next_e=next_energies, act_mask=act, partials=partials)
    if windowed:
        if 4 * _REDUCE_SPAN > be.runtime.max_binding_size:
            raise DeviceLimitError(
                f"step_metrics: a graph cut into edge windows reduces its [E] arrays in blocks of {_REDUCE_SPAN} "
                f"edges ({4 * _REDUCE_SPAN} bytes), over the binding limit of {be.runtime.max_binding_size} bytes"
            )
        b["pi"] = edge_windows.in_windows(be, gd, pi, "pi")
        _metrics_windowed(be, gd, u, b, active is not None, ranged)
    elif ranged:
        _metrics_ranged(be, gd, u, b, active is not None)
    else:
        be.runtime.dispatch("metrics_partials", workgroups=n_parts, uniform=u, **b)
    be.runtime.dispatch("metrics_final", workgroups=1, uniform={**u, "n_total": n_parts}, partials=partials,
                          metrics_out=out)
    return out

def _metrics_ranged(be: Any, gd: Any, u: dict[str, Any], b: dict[str, Any], masked: bool) -> None:
    """metrics_partials of [B, N] arrays over one binding (metrics.wgsl): the flat fields over
    ranges of whole blocks of B*N, the grid fields per chunk of rows, and the slots past
    either written with their empty values; every slot gets what the unsplit dispatch writes."""
    rt, n = be.runtime, gd.num_nodes
    batch, n_parts, eb, grid = u["batch"], u["n_total"], u["edge_blocks"], u["grid_blocks"]
    dummy = rt.dummy()
    bn_blocks = 0
    keys = ("energies", "next_e") + (("act_mask",) * masked)
    for w0, m, views in batch_chunks.flat_pieces(be, batch * n, _REDUCE_SPAN, [b[k] for k in keys]):
        blocks = -(-m // _REDUCE_SPAN)
        rt.dispatch("metrics_partials", workgroups=blocks, uniform={**u, "w0": w0, "fields": 5},
                    **{**b, **dict(zip(keys, views))})
        bn_blocks = w0 + blocks
    per = batch_chunks.rows_per_range(be, n)
    for r0 in range(0, batch, per):
        rows = min(per, batch - r0)
        ev, e0 = batch_chunks.rows_view(be, b["energies"], r0, rows, n)
        av = batch_chunks.rows_view(be, b["act_mask"], r0, rows, n)[0] if masked else dummy
        rt.dispatch("metrics_partials", workgroups=rows * eb, uniform={
            **u, "w0": r0 * eb, "fields": 2, "grid_blocks": (r0 + rows) * eb, "row0": r0, "e0": e0,
        }, **{**b, "energies": ev, "act_mask": av, "next_e": dummy})
    tails = ((bn_blocks, 5), (grid, 2))  # slots past the flat blocks / the grid: empty values
    for first, fields in tails:
        if first < n_parts:
            rt.dispatch("metrics_partials", workgroups=n_parts - first, uniform={
                **u, "w0": first, "fields": fields, "grid_blocks": 0,
            }, **{**b, "energies": dummy, "next_e": dummy, "act_mask": dummy})


def _seam_gathered(be: Any, b: dict[str, Any], masked: bool, row: int, n: int, src: DeviceArray,
                   count: int) -> tuple[DeviceArray, Any, DeviceArray]:
    """(energies, act_mask, src) for the metrics of one block of edges across two windows of a
    wide row (wide_rows.py): the sources' energies (and mask) of batch row ``row`` gathered
    in edge order, and the identity as their indices (so entry t reads element t)."""
    rt = be.runtime
    span = _REDUCE_SPAN
    ev = be.empty((span,))
    wide_rows.gather(be, b["energies"], None, row, n, src, 0, count, ev)
    av = rt.dummy()
    if masked:
        av = be.empty((span,), np.uint32)
        wide_rows.gather(be, b["act_mask"], None, row, n, src, 0, count, av, mask=True)
    return ev, av, wide_rows.identity(be, span)


def _metrics_windowed(be: Any, gd: Any, u: dict[str, Any], b: dict[str, Any], masked: bool, ranged: bool) -> None:
    """metrics_partials on a graph cut into edge windows (edge_windows.py): every slot gets
    what one dispatch over the whole graph writes there (one grid block per slot):

    * te, an (fields bit 0) over B*N: one dispatch, or ranges of whole blocks when the [B, N]
      arrays are over one binding;
    * h (bit 2) over E: ranges of whole blocks of 4096 edges inside a window, the block across
      two windows on copies of its pi (batch_chunks.flat_pieces; ``pbase`` its first edge);
    * ae, mf (bit 1): per batch row and window, the blocks inside the window, then each block
      across two windows on copies of its src and pi;
    * the slots past each range, their empty values.
    """
    rt, n, e = be.runtime, gd.num_nodes, gd.num_edges
    batch, n_parts, eb, span = u["batch"], u["n_total"], u["edge_blocks"], _REDUCE_SPAN
    dummy = rt.dummy()
    bn_blocks = -(-batch * n // span)
    keys = ("energies", "next_e") + (("act_mask",) * masked)
    if ranged:
        for w0, m, views in batch_chunks.flat_pieces(be, batch * n, span, [b[k] for k in keys]):
            rt.dispatch("metrics_partials", workgroups=-(-m // span), uniform={**u, "w0": w0, "fields": 1},
                        **{**b, **dict(zip(keys, views)), "pi": dummy, "src": dummy})
    elif bn_blocks:
        rt.dispatch("metrics_partials", workgroups=bn_blocks, uniform={**u, "fields": 1}, **{**b, "pi": dummy,
                                                                                           "src": dummy})
    for w0, m, (pv,) in batch_chunks.flat_pieces(be, e, span, [b["pi"]]):
        rt.dispatch("metrics_partials", workgroups=-(-m // span), uniform={**u, "w0": w0, "fields": 4,
                    "pbase": w0 * span}, **{**b, "pi": pv, "src": dummy, "energies": dummy, "next_e": dummy,
                                               "act_mask": dummy})
    wide = bool(gd.ptr_block)  # one row past one binding: each window's sources' range of it (wide_rows.py)
    rows_per = 1 if wide else batch_chunks.rows_per_range(be, n) if ranged else max(batch, 1)
    seams = [j for j in range(eb) if not any(w.e0 <= j * span and min(e, (j + 1) * span) <= w.e1
                                             for w in gd.windows)]
    seam_arrays = {}
    for j in seams:  # copies of the src and pi of each block across two windows
        lo, hi = j * span, min(e, (j + 1) * span)
        temps = []
        for name in ("src", "pi"):
            t = be.empty((span,), b[name].dtype)
            batch_chunks.copy_elements_range(rt, b[name], lo, hi, t)
            temps.append(t)
        seam_arrays[j] = temps
    for r0 in range(0, batch, rows_per):
        rows = min(rows_per, batch - r0)
        if wide:
            ev, e0, av = b["energies"], 0, b["act_mask"]  # per window below
        elif ranged:
            ev, e0 = batch_chunks.rows_view(be, b["energies"], r0, rows, n)
            av = batch_chunks.rows_view(be, b["act_mask"], r0, rows, n)[0] if masked else dummy
        else:
            ev, e0, av = b["energies"], 0, b["act_mask"]
        for row in range(r0, r0 + rows):
            base = dict(u, fields=2, row0=r0 if ranged or wide else 0, e0=e0)
            for w in gd.windows:
                ja, jb = -(-w.e0 // span), min(eb, w.e1 // span + (1 if w.e1 == e and e % span else 0))
                if jb <= ja:
                    continue
                (sv, pe0), pv = (edge_windows.window_view(be, b[name], w) for name in ("src", "pi"))
                if wide:  # the window's sources' range of the row: node j at e0 + j
                    (ev, av), e0w = wide_rows.own_all(be, [b["energies"], b["act_mask"] if masked else None], row, n,
                                                      w.n0, w.n1)
                    base["e0"], av = e0w, dummy if av is None else av
                rt.dispatch("metrics_partials", workgroups=jb - ja, uniform={
                    **base, "w0": row * eb + ja, "grid_blocks": row * eb + jb, "pbase": w.e0 - pe0,
                }, **{**b, "src": sv, "pi": pv[0], "energies": ev, "act_mask": av, "next_e": dummy})
            for j, (st, pt) in seam_arrays.items():
                if wide:  # the block's sources span two windows: their values gathered, read at 0 .. span - 1
                    ev, av, st = _seam_gathered(be, b, masked, row, n, st, min(e, (j + 1) * span) - j * span)
                    base["e0"] = 0
                rt.dispatch("metrics_partials", workgroups=1, uniform={
                    **base, "w0": row * eb + j, "grid_blocks": row * eb + j + 1, "pbase": j * span,
                }, **{**b, "src": st, "pi": pt, "energies": ev, "act_mask": av, "next_e": dummy})
    empties = {**b, "energies": dummy, "next_e": dummy, "act_mask": dummy, "pi": dummy, "src": dummy}
    for first, fields in ((bn_blocks, 1), (eb, 4), (batch * eb, 2)):  # slots past each range: empty values
        if first < n_parts:
            rt.dispatch("metrics_partials", workgroups=n_parts - first, uniform={
                **u, "w0": first, "fields": fields, "grid_blocks": 0}, **empties)
