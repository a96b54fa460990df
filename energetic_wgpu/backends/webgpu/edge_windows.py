"""Edge windows: a graph whose [E] arrays are past one storage binding.

When 4·E bytes exceed the binding limit in use (E > 33.5 M on WebGPU's default limits), or
the backward's segment bins (u32 [2N + 1]: N > 16.7 M) do, the graph's edges are cut into
*windows*: consecutive source ranges [n0, n1) of at most :func:`max_window_nodes` nodes whose
out-edges [row_ptr[n0], row_ptr[n1]) fit one binding (a window never cuts a segment; a source
with more out-edges than a window holds gets windows of its own, below). Every [E] array of such a graph (col_idx, src, and the outputs of
the ops below) is an array of several buffers cut at window starts
(``BufferPool.new_split_array``; one buffer while it fits the buffer size limit), and each
window binds its range of them from the aligned offset before it
(``arrays.range_view``: the same element offset ``e0`` in every [E] array, whatever its layout).

The ops that run over windows, one dispatch (or two, with hubs) per window:

* ``edge_logits``: edge t of a window's dispatch is element e0 + t of its ranges;
* ``edge_probs``, ``segment_softmax``, ``segment_topk``: the window's own degree bins
  (``seg_list``), and ``row_ptr[j] - ebase`` (``ebase`` = the window's first edge - e0)
  indexes its ranges;
* ``energy_scatter``: the reverse index is cut the same way into *windows of targets* (target
  ranges whose in-edges fit one binding), kept split (sources and edges by target,
  reverse_index.py) in their layout. pi goes into reverse-index order first
  (:func:`to_reverse_order`: per window of targets, one ``gather_window`` dispatch per
  source window, exact copies), then ``scatter_small`` / ``scatter_large`` run per window of
  targets (``node0``, ``n_count``; ``rev_ptr[k] - rbase`` indexes its ranges);
* ``edge_flow``: one dispatch per (batch row, window), the [B, E] flow cut at every row's
  window starts;
* ``energy_scatter_backward``: ``scatter_bwd_small`` / ``scatter_bwd_large`` per window of
  sources (``node0``, ``n_count``, ``ebase``) and ``scatter_bwd_pi(_nm)`` per window of edges
  (``eoff``), batch chunks handing grad_pi's running sums on as without windows;
* ``softmax_logits_backward`` (the Router's backward): ``segment_bwd`` over the graph's global
  degree bins per window (source windows for grad_q and grad_logits, target windows for
  grad_k over grad_logits in reverse-index order), only the window's nodes computed, over the
  runs of workgroups that hold them (ops_backward.window_runs), each window binding its own
  pieces of the bins (its pointers and those runs' list places, ops_backward.window_pieces); each
  lane stores its sum of squares (in ranges of workgroups) and ``segment_bwd_lanes`` reduces
  them by the same tree, so the gradient norm's partials keep their bits;
* ``step_metrics``: the entropy over ranges of whole 4096-edge blocks and the [B, E] grid per
  batch row and window, each block across two windows on copies of its src and pi;
* the Router's parameters: the bias (and AdamW's moments of it, and its gradient) in the
  windows' layout (``backend.edge_input``), updated by ``adamw_update`` in ranges.

Each segment, and each target's sum, is computed exactly as in one dispatch over the whole
graph: the results are bit-identical. An [E] input whose buffers are cut elsewhere (an array
uploaded before the graph) is first copied (exact bytes) into the windows' layout. Every op
of the Backend API that takes a graph runs over windows (``segment_softmax_backward`` and
``edge_logits_backward`` too, as the backward above without its sum of squares; entropy
regularization over ranges of whole 4096-edge blocks). A target with more in-edges than a
window holds (a big in-hub) gets windows of its own, pieces of its range that start at
multiples of BIG_STRIDE entries from its first (:func:`hub_groups` runs them as one):
``scatter_large_piece`` and ``hub_columns`` (hub_pieces.wgsl) carry their lanes' sums from piece
to piece, the same bits. A source with more out-edges than a window holds (a big source hub)
likewise gets source windows of its own (``big``, no degree bins): the ops that run per edge run
over them as over any window, and the three that reduce over its segment carry their lanes
across them: ``edge_probs_piece`` (edge_probs.wgsl: the z, the radix select's histograms, the
max and the sum, then pi or the mask), ``scatter_bwd_large_piece`` (the input-energy gradient) and
``hub_dot`` / ``hub_dl`` (hub_pieces.wgsl: the softmax backward's dot and dl). Refused, with
``DeviceLimitError`` before any work: a segment larger than a window where a window holds fewer
than 256 edges, or a source's under a binding below :data:`BIG_SOURCE_BINDING` (when the graph
is uploaded), a target's where a window holds fewer than 256 edges (the ops that read the
reverse index), the 4096-edge reductions
under a binding limit below 16 KiB (``add`` and ``sum_squares`` of the split [E] arrays run in
ranges). q and k past one binding: node_rows.py cuts these windows finer. The graph's pointers
(u32 [N + 1]) past one binding go into node blocks (graph_data.ptr_block): no window crosses one,
and each binds its block (GraphData.node_ptr, ``p_shift``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import DeviceLimitError
from .arrays import DeviceArray, parts_of, range_view

__all__ = ["EdgeWindow", "BIG_STRIDE", "BIG_SOURCE_BINDING", "max_window_edges", "max_window_nodes", "plan", "hub_groups", "span_of", "new_edge_array", "window_view", "in_windows",
           "to_reverse_order", "edge_array", "copy_elements", "new_split_1d"]


@dataclass(frozen=True)
class EdgeWindow:
    """Sources ``n0 .. n1`` and their out-edges ``e0 .. e1``; ``bins`` (graph_data.DegreeBins,
    global node ids) and ``seg_list`` (its nodes on the device, None without edges). A window
    of targets (the reverse index) has ``n0 .. n1`` targets and entries ``e0 .. e1`` of the
    reverse index, and ``large`` (u32, None when empty) lists its ``n_large`` targets of
    in-degree over SMALL_DEGREE_MAX (``scatter_large``). ``big``: one piece of a big hub, a
    hub whose entries are more than one window holds (a target window's in-edges, or a row
    window's gathered rows, node_rows.py): its consecutive pieces, each a window of that node
    starting a multiple of BIG_STRIDE entries from its first, run as one (:func:`hub_groups`)."""

    n0: int
    n1: int
    e0: int
    e1: int
    bins: Any = None
    seg_list: DeviceArray | None = None
    large: DeviceArray | None = None
    n_large: int = 0
    big: bool = False


#: a big hub's pieces start at multiples of this many entries from its first (the widest
#: strided sum over a segment: scatter_large's, logits_bwd_large's and edge_probs_hub's 256 lanes)
BIG_STRIDE = 256
#: the smallest binding (bytes) under which a source of more out-edges than a window holds runs in
#: pieces (edge_probs_piece's lanes' carry, 4 KiB, is one binding); below it such a source is refused
BIG_SOURCE_BINDING = 4096


def max_window_edges(binding_bytes: int, align: int) -> int:
    """The most edges of a window: its range of a 4-byte [E] array, bound from the aligned offset
    before it (up to ``align`` - 4 bytes earlier) as a multiple of 16 bytes, fits the binding."""
    return max(0, (binding_bytes // 16 * 16 - align) // 4)


def max_window_nodes(binding_bytes: int) -> int:
    """The most nodes of a window: the backward's copy of a window's segment bins (its node
    pointers, then its part of the binned node list, ops_backward.window_pieces) is one u32
    buffer bound whole, and a third of a binding for the pointers leaves the list room for the
    window's nodes and as many others in the same workgroups (11.2 M nodes on default limits)."""
    return max(1, (binding_bytes // 4 - 1) // 3)


def plan(row_ptr: np.ndarray, max_edges: int, limit_desc: str, what: str = "out-edges", lo: int = 0,
         hi: int | None = None, block: int = 0, max_nodes: int = 0, big_above: int = 0) -> list[tuple[int, int]]:
    """The (n0, n1) node ranges of the windows of a CSR ``row_ptr`` [N+1] (or the reverse
    index's pointers, ``what`` = "in-edges") over the nodes ``lo .. hi`` (default: all): greedy,
    each holding as many whole segments as fit ``max_edges`` edges and at most ``max_nodes``
    nodes (0: any number) and, with ``block``, never crossing a multiple of ``block`` nodes
    (node_rows.py: a node range of q or k in one binding). With ``big_above``, a segment larger
    than ``max_edges`` and than ``big_above`` edges gets a window of its own (node_rows.py runs
    it in pieces).

    Raises:
        DeviceLimitError: a segment larger than ``max_edges`` (named with its node and degree),
            unless ``big_above`` admits it.
    """
    ptr = np.asarray(row_ptr, dtype=np.int64)
    n = ptr.size - 1 if hi is None else hi
    out: list[tuple[int, int]] = []
    n0 = lo
    while n0 < n:
        n1 = int(np.searchsorted(ptr, ptr[n0] + max_edges, side="right")) - 1
        n1 = min(max(n1, n0), n, (n0 // block + 1) * block if block else n, n0 + max_nodes if max_nodes else n)
        if n1 == n0 and big_above and ptr[n0 + 1] - ptr[n0] > big_above:
            n1 = n0 + 1
        if n1 == n0:
            raise DeviceLimitError(
                f"node {n0} has {int(ptr[n0 + 1] - ptr[n0])} {what}, more than one storage binding holds "
                f"({max_edges} edges of 4 bytes, {limit_desc}): a segment past one binding is not supported; "
                f"use limits='adapter' where the adapter binds more"
            )
        out.append((n0, n1))
        n0 = n1
    return out


def hub_groups(windows: list[EdgeWindow]) -> list[EdgeWindow | list[EdgeWindow]]:
    """``windows`` with each run of a big hub's pieces (consecutive ``big`` windows of one node)
    gathered into a list, in order."""
    out: list[EdgeWindow | list[EdgeWindow]] = []
    for w in windows:
        last = out[-1] if out else None
        if w.big and isinstance(last, list) and last[0].n0 == w.n0:
            last.append(w)
        else:
            out.append([w] if w.big else w)
    return out


def span_of(pieces: list[EdgeWindow]) -> EdgeWindow:
    """The window of a big hub's whole range (its pieces' first and last ends)."""
    return dataclasses.replace(pieces[0], e1=pieces[-1].e1)


def edge_array(be: Any, gd: Any, what: str) -> DeviceArray:
    """An uninitialized float [E] array of ``gd``'s graph: one binding, or the windows' layout."""
    if gd.windows is None:
        return be.empty((gd.num_edges,))
    return new_edge_array(be, gd, np.float32, what)


def new_split_1d(be: Any, n: int, quantum: int, what: str) -> DeviceArray:
    """An uninitialized float [n] array: one buffer up to the buffer size limit, else split
    over buffers at multiples of ``quantum`` elements (bound in ranges by its users)."""
    rt = be.runtime
    if 4 * n <= rt.max_binding_size:
        return be.empty((n,))
    return rt.pool.new_split_array(be, (n,), np.float32, quantum, rt.offset_alignment, what)


def new_edge_array(be: Any, gd: Any, dtype: Any, what: str) -> DeviceArray:
    """An uninitialized [E] array (4-byte elements) in the windows' layout of ``gd``."""
    rt = be.runtime
    return rt.pool.new_split_array(be, (gd.num_edges,), dtype, 1, rt.offset_alignment, what,
                                   cuts=[w.e0 for w in gd.windows])


def in_windows(be: Any, gd: Any, x: DeviceArray, what: str) -> DeviceArray:
    """``x`` (an [E] array) if every window of ``gd`` lies in one of its buffers, else a copy
    of it in the windows' layout (exact bytes, copied on the device)."""
    parts = parts_of(x)
    if parts is None or all(any(s <= w.e0 and w.e1 <= s + c for s, c, *_ in parts) for w in gd.windows):
        return x
    out = new_edge_array(be, gd, x.dtype, what)
    copy_elements(be, x, out)
    return out


def copy_elements(be: Any, src: DeviceArray, dst: DeviceArray) -> None:
    """Copy every element of ``src`` into ``dst`` (the same size; each one buffer or split over
    buffers, in any layout), exact bytes, on the device (outside the compute pass)."""
    sub = be.runtime.submission
    enc = sub.outside_pass()
    for ds, dc, dpool, dpad in parts_of(dst) or [(0, dst.size, dst.pooled, dst.offset)]:
        for s, c, pool, pad in parts_of(src) or [(0, src.size, src.pooled, src.offset)]:
            lo, hi = max(s, ds), min(s + c, ds + dc)
            if hi > lo:
                enc.copy_buffer_to_buffer(pool.buffer, pad + 4 * (lo - s), dpool.buffer, dpad + 4 * (lo - ds),
                                          4 * (hi - lo))
                sub.in_flight.add(pool.uid)
                sub.in_flight.add(dpool.uid)


def window_view(be: Any, x: DeviceArray, w: EdgeWindow) -> tuple[DeviceArray, int]:
    """(bindable range, e0) of window ``w``'s edges in the [E] array ``x``."""
    return range_view(x, w.e0, w.e1 - w.e0, be.runtime.offset_alignment)


def to_reverse_order(be: Any, gd: Any, values: DeviceArray, plan: Any = None) -> DeviceArray:
    """``values`` (float [E], by edge) in reverse-index order, in the target windows' layout
    (``plan``'s, node_rows.RowPlan, when given): per target window one ``gather_window``
    dispatch per source window of the graph (one for an unwindowed graph), each filling the
    entries whose edge lies in it (exact copies; every entry written once)."""
    rt = be.runtime
    if gd.windows is not None:
        values = in_windows(be, gd, values, "per-edge values")
    rwindows, rev_edges = (gd.rwindows, gd.rev_edges) if plan is None else (plan.rwindows, plan.rev_edges)
    out = rt.pool.new_split_array(be, (gd.num_edges,), values.dtype, 1, rt.offset_alignment, "reverse-order values",
                                  cuts=[r.e0 for r in rwindows])
    for r in rwindows:
        if r.e1 == r.e0:
            continue
        idx, off = window_view(be, rev_edges, r)
        dst, _ = window_view(be, out, r)
        for w in gd.windows or [EdgeWindow(0, gd.num_nodes, 0, gd.num_edges)]:
            if w.e1 > w.e0:
                a, e0 = window_view(be, values, w)
                rt.dispatch("gather_window", threads=r.e1 - r.e0, uniform=dict(
                    n=r.e1 - r.e0, lo=w.e0, count=w.e1 - w.e0, base=w.e0 - e0, off=off, dim=0), a=a, index=idx, out=dst)
    return out
