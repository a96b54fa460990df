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
from . import loop_cap, node_major
from .arrays import DeviceArray
from .kernels import GROUP_DEGREE_MAX, REDUCE_ITEMS

_REDUCE_SPAN = 256 * REDUCE_ITEMS  # elements covered by one reduction workgroup
_FLOW_WG = 64  # edge_flow's workgroup size (kernels.py): edges per workgroup


def edge_logits(be: Any, graph: Graph, q: Any, k: Any, bias: Any) -> DeviceArray:
    gd = be.graph_data(graph)
    q, k, bias = be._dev(q), be._dev(k), be._dev(bias)
    dim = q.shape[1] if q.ndim == 2 else 0
    out = be.empty((gd.num_edges,))
    be.runtime.dispatch(
        "edge_logits", threads=gd.num_edges, uniform=dict(n_edges=gd.num_edges, dim=dim),
        src=gd.src, col_idx=gd.col_idx, q=q, k=k, bias=bias, logits=out,
    )
    return out

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
    out = be.empty((gd.num_edges,), np.bool_ if mode == 1 else np.float32)
    if gd.seg_list is None:
        return out  # no edges
    u = dict(n_small=bins.n_small, n_mid=bins.n_mid, n_hub=bins.n_hub, small_wg=bins.small_wg,
             mid_wg=bins.mid_wg, dim=dim, top_k=top_k, mode=mode, tau=np.float32(tau))
    b = dict(row_ptr=gd.row_ptr, col_idx=gd.col_idx, q=q, k=k, bias=bias, result=out, seg_list=gd.seg_list)
    if bins.workgroups:  # without mid segments: the barrier-free pipeline
        name = "edge_probs" if bins.n_mid else "edge_probs_small"
        be.runtime.dispatch(name, workgroups=bins.workgroups, uniform=u, **b)
    if bins.n_hub:
        be.runtime.dispatch("edge_probs_hub", workgroups=bins.n_hub, uniform=u, **b)
    return out

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
    energies, pi = be._dev(energies), be._dev(pi)
    # node-major copy of the energies (and mask), then the gather writes [B, N]
    state, act = node_major.to_node_major(be, gd, energies, None if active is None else be._dev(active))
    out = node_major.scatter(be, gd, state, pi, alpha, act, retain_sinks, False, energies.shape)
    if return_flow:
        return out, edge_flow(be, graph, energies, pi, alpha, active)
    return out

def scatter_state(be: Any, graph: Graph, energies: Any, active: Any) -> tuple[Any, Any]:
    """Node-major copies of ``energies`` float [B, N] and ``active`` (node_major.py): one
    ``scatter_transpose`` dispatch."""
    gd = be.graph_data(graph)
    return node_major.to_node_major(be, gd, be._dev(energies), None if active is None else be._dev(active))

def scatter_step(be: Any, graph: Graph, state: Any, pi: Any, alpha: float, active_state: Any, retain_sinks: bool,
                 last: bool) -> Any:
    """One step from a node-major state: node-major next state, or float [B, N] when ``last``."""
    return node_major.scatter(be, be.graph_data(graph), state, be._dev(pi), alpha, active_state,
                              retain_sinks, not last)

def public_state(be: Any, state: Any) -> Any:
    """``state`` as float [B, N] (one ``scatter_rows`` dispatch for a node-major state
    whose [B, N] form is not known yet)."""
    return node_major.to_rows(be, state)

def edge_flow(be: Any, graph: Graph, energies: Any, pi: Any, alpha: float = 1.0, active: Any = None) -> DeviceArray:
    """As :meth:`Backend.edge_flow`. A [B, E] flow larger than the binding limit lives in one
    buffer (up to the device's maxBufferSize) written in batch chunks of whole rows, each
    bound as its own range (bit-identical to one dispatch: every element is computed alone);
    it can be read back but not passed whole to another op."""
    gd = be.graph_data(graph)
    energies, pi = be._dev(energies), be._dev(pi)
    batch, flat = _batch(energies, gd.num_nodes)
    act = be._opt(active)
    shape = (gd.num_edges,) if flat else (batch, gd.num_edges)
    out = be.runtime.pool.new_large_array(be, shape, np.float32, "edge_flow")
    edge_blocks = -(-gd.num_edges // _FLOW_WG)
    u = dict(batch=batch, n_nodes=gd.num_nodes, n_edges=gd.num_edges, has_active=1 if active is not None else 0,
             alpha=np.float32(alpha), edge_blocks=edge_blocks, row0=0, out0=0)
    b = dict(src=gd.src, pi=pi, energies=energies, act_mask=act)
    # one workgroup per (batch row, WG edges): the shader never forms b * E before the bounds check
    for row0, rows, view, out0 in _row_chunks(be, out, batch, gd.num_edges):
        be.runtime.dispatch("edge_flow", workgroups=rows * edge_blocks,
                              uniform={**u, "batch": rows, "row0": row0, "out0": out0}, flow=view, **b)
    return out

def _row_chunks(be: Any, out: DeviceArray, batch: int, row_len: int) -> Any:
    """(first row, rows, bindable range, element offset of the first row in it) covering the
    [batch, row_len] float ``out`` in chunks of whole rows that fit the binding limit: the
    whole array when it fits, else ranges from an aligned offset before each chunk's row."""
    rt = be.runtime
    limit, align = rt.max_binding_size // 16 * 16, rt.offset_alignment  # views bind multiples of 16
    if batch * row_len * 4 <= limit:
        yield 0, batch, out, 0
        return
    per = (limit - align) // (row_len * 4)  # the aligned start adds < align bytes
    if per < 1:
        raise DeviceLimitError(
            f"one row of {row_len * 4} bytes (and its {align}-byte alignment) does not fit the binding limit "
            f"of {limit} bytes"
        )
    for row0 in range(0, batch, per):
        rows = min(per, batch - row0)
        start = row0 * row_len * 4
        base = start // align * align
        out0 = (start - base) // 4
        yield row0, rows, rt.view(out, base, (out0 + rows * row_len,)), out0

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
    # workgroups: flat ranges over B*N and E, and a [B, E] grid of edge_blocks per row taken
    # with a stride of n_parts (metrics.wgsl; B*E is never formed on the device, it can pass
    # 2^32), as many as the partials' binding holds (8 floats each, at most 2^20)
    edge_blocks = -(-gd.num_edges // _REDUCE_SPAN)
    grid = batch * edge_blocks
    cap = max(1, min(2**20, be.runtime.max_binding_size // 32))
    n_parts = max(-(-batch * gd.num_nodes // _REDUCE_SPAN), edge_blocks, min(grid, cap))
    if grid + n_parts >= 2**32:
        raise DeviceLimitError(f"step_metrics: B = {batch} x {edge_blocks} edge blocks of 4096 is past 2^32 blocks")
    partials = be.empty((max(1, n_parts) * 8,))
    out = be.empty((5,))
    has_act = 1 if active is not None else 0
    u = dict(batch=batch, n_nodes=gd.num_nodes, n_edges=gd.num_edges, has_active=has_act, alpha=np.float32(alpha),
             n_total=n_parts, n_nonempty=gd.n_nonempty, edge_blocks=edge_blocks, grid_blocks=grid)
    be.runtime.dispatch("metrics_partials", workgroups=n_parts, uniform=u, src=gd.src, pi=pi, energies=energies,
                          next_e=next_energies, act_mask=act, partials=partials)
    be.runtime.dispatch("metrics_final", workgroups=1, uniform={**u, "n_total": n_parts}, partials=partials,
                          metrics_out=out)
    return out
