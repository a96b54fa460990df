"""Node rows: q and k [N, d] (and their gradients and AdamW moments) past one storage binding.

The logits' kernels read q's row at each edge's source and k's row at its target, and the
backward writes grad_q by source and grad_k by target. When 4·N·d bytes exceed the binding
limit in use (N·d > 33.5 M on WebGPU's default limits) no kernel can bind q or k whole, so the
ops that read them (``edge_logits``, ``edge_probs``, ``edge_logits_backward``,
``softmax_logits_backward``) run over a :class:`RowPlan` of the graph for that d:

* **node blocks**: an [N, d] array past one binding is split at multiples of
  :func:`block_rows` nodes (``BufferPool.new_split_array``; parts merge up to the buffer size
  limit), so any node range inside one block binds (:func:`node_range`, from the aligned offset
  before it). An [N, d] array in any other layout is first copied (exact bytes) into this one;
* **windows**: the graph's source windows and target windows (edge_windows.py) cut finer, so
  a window's nodes lie in one block and its gathered rows (below) fit one binding. A windowed
  graph's windows are cut further, never merged: every [E] array keeps its layout;
* per window, the *other* end's rows (k at the targets of the window's edges, q at the
  sources of the window's reverse-index entries) are gathered into a scratch array, row
  e0 + t for the window's entry t (``gather_rows``: one dispatch per node block, each entry
  copied once, exact bytes), and the kernels read them there (``gathered``); the window's own
  end (q or grad_q at the sources, grad_k at the targets) is bound as its node range
  (``q_shift`` / ``o_shift``: row j starts at float j·d - shift);
* **big hubs**: a hub (more than GROUP_DEGREE_MAX entries) with more entries than one window's
  gathered rows hold runs in *pieces*, windows of their own (``EdgeWindow.big``) of
  ``RowPlan.piece`` entries (a multiple of 256, so each lane of a strided sum keeps its
  entries; cut also where a big hub's edge windows cut it): its logits by ``edge_logits`` per
  piece, then the softmax / top-k from those stored logits in pieces (``edge_probs_piece``,
  d = 0); in the backward the dot and dl, then each column's lanes carried across the pieces
  (hub_pieces.py) and the hub's sum of squares finished in column order.

Every dot product and column sum is computed exactly as without the plan (the same floats in
the same order): the results, and the gradient norm's partials, keep their bits. Only
problems whose q or k is past one binding pay the gathers (E·d floats per op and direction).
Refused, with ``DeviceLimitError`` before any work: a node of at most GROUP_DEGREE_MAX
out-edges (or in-edges, for the backward) that one window's gathered rows do not hold (only
under binding limits below 256 gathered rows), and a d whose one row is past a binding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import DeviceLimitError
from . import edge_windows
from .arrays import DeviceArray, parts_of, range_view
from .edge_windows import BIG_STRIDE, EdgeWindow
from .kernels import GROUP_DEGREE_MAX

__all__ = ["RowPlan", "needs_rows", "block_rows", "window_edges", "new_node_rows", "in_node_rows", "node_range", "row_plan",
           "gather_rows"]

_MASK = 0xFFFFFFFF


def needs_rows(rt: Any, n: int, dim: int) -> bool:
    """True when an [n, dim] float array cannot be bound whole (the row plan is needed)."""
    return dim > 0 and n > 0 and -(-4 * n * dim // 16) * 16 > rt.max_binding_bytes


def block_rows(rt: Any, dim: int) -> int:
    """Nodes per block of an [N, dim] array past one binding: any node range inside one block,
    bound from the aligned offset before it, fits one binding.

    Raises:
        DeviceLimitError: one row (with the alignment) does not fit a binding.
    """
    rows = (rt.max_binding_bytes // 16 * 16 - rt.offset_alignment) // (4 * dim)
    if rows < 1:
        desc, where = rt.pool.limit_desc
        raise DeviceLimitError(f"one row of d = {dim} floats does not fit one storage binding ({desc} = "
                               f"{rt.max_binding_bytes} bytes, {where}): use a smaller dimension")
    return rows


def new_node_rows(be: Any, n: int, dim: int, what: str) -> DeviceArray:
    """An uninitialized float [n, dim] array: one binding, or split at node blocks."""
    rt = be.runtime
    if not needs_rows(rt, n, dim):
        return be.empty((n, dim))
    per = block_rows(rt, dim)
    return rt.pool.new_split_array(be, (n, dim), np.float32, 1, rt.offset_alignment, what,
                                   cuts=[b * dim for b in range(per, n, per)])


def in_node_rows(be: Any, x: DeviceArray, what: str) -> DeviceArray:
    """``x`` (float [n, dim] past one binding) if each node block lies in one of its buffers,
    else a copy of it split at node blocks (exact bytes, copied on the device)."""
    parts = parts_of(x)
    if parts is None:
        return x
    n, dim = x.shape
    per = block_rows(be.runtime, dim)
    blocks = [(b * dim, min(b + per, n) * dim) for b in range(0, n, per)]
    if all(any(s <= lo and hi <= s + c for s, c, *_ in parts) for lo, hi in blocks):
        return x
    out = new_node_rows(be, n, dim, what)
    edge_windows.copy_elements(be, x, out)
    return out


def node_range(be: Any, x: DeviceArray, n0: int, n1: int) -> tuple[DeviceArray, int]:
    """(bindable range, shift) of the rows ``n0 .. n1`` of ``x`` ([N, d], in node blocks): row
    j starts at float ``j * d - shift`` (mod 2^32) of the range."""
    dim = x.shape[1]
    view, e0 = range_view(x, n0 * dim, max(1, (n1 - n0) * dim), be.runtime.offset_alignment)
    return view, (n0 * dim - e0) & _MASK


@dataclass
class RowPlan:
    """The windows of one graph for q and k of dimension ``dim`` past one binding: ``windows``
    (sources), ``rwindows`` (targets over the reverse index; None when refused: ``refusal``),
    the reverse index's sources and edges by target (``rev_src``, ``rev_edges``, in the target
    windows' layout), ``block`` nodes per node block and ``rows``, the gathered rows a window
    needs at most (its entries plus their start in the bound range); ``piece``: the entries
    of one piece of a big hub (``EdgeWindow.big``: a hub's pieces are consecutive windows)."""

    dim: int
    block: int
    windows: list[EdgeWindow]
    rwindows: list[EdgeWindow] | None
    rev_src: DeviceArray | None
    rev_edges: DeviceArray | None
    rows: int
    refusal: str = ""
    piece: int = 0

    def reverse(self, op: str) -> list[EdgeWindow]:
        """The target windows.

        Raises:
            DeviceLimitError: naming ``op``, when a target has more in-edges than a window holds.
        """
        if self.rwindows is None:
            raise DeviceLimitError(f"{op}: {self.refusal}")
        return self.rwindows


def window_edges(rt: Any, n: int, dim: int) -> int:
    """The most edges of a row window: its gathered rows, from e0 (< align / 4) on, fit one
    binding.

    Raises:
        DeviceLimitError: not even one (or one row past a binding).
    """
    block_rows(rt, dim)
    align = rt.offset_alignment
    max_edges = rt.max_binding_bytes // 16 * 16 // (4 * dim) - align // 4
    if max_edges < 1:
        desc, where = rt.pool.limit_desc
        raise DeviceLimitError(f"q and k of shape ({n}, {dim}) are over one storage binding, and a window's "
                               f"gathered rows ({align // 4} + its edges, {4 * dim} bytes each) do not fit one either "
                               f"({desc} = {rt.max_binding_bytes} bytes, {where}): use a smaller dimension or a larger "
                               f"binding limit")
    return max_edges


def row_plan(be: Any, graph: Any, gd: Any, dim: int) -> RowPlan:
    """The :class:`RowPlan` of ``graph`` (its GraphData ``gd``) for dimension ``dim`` (made once,
    cached on ``gd``).

    Raises:
        DeviceLimitError: a node with more out-edges than one window holds (named), or d too large.
    """
    hit = gd.row_plans.get(dim)
    if hit is not None:
        return hit
    from .graph_data import source_window, target_window

    rt = be.runtime
    align = rt.offset_alignment
    block = block_rows(rt, dim)
    n = gd.num_nodes
    max_edges = window_edges(rt, n, dim)
    max_nodes = edge_windows.max_window_nodes(rt.max_binding_bytes)
    piece = max_edges // BIG_STRIDE * BIG_STRIDE  # a big hub's entries per piece (0: none admitted)
    big_above = max(GROUP_DEGREE_MAX, max_edges) if piece else 0
    desc, where = rt.pool.limit_desc
    limit_desc = f"{desc} = {rt.max_binding_bytes} bytes, {where}, {dim} floats per gathered row"

    def up(a: np.ndarray) -> DeviceArray:
        return be.asarray(np.ascontiguousarray(a, dtype=np.uint32), np.uint32)

    # every range planned (and any refusal raised) before anything is uploaded
    # a big hub's pieces (one window each) make one span
    spans = list(dict.fromkeys((w.n0, w.n1) for w in gd.windows)) if gd.windows is not None else [(0, n)]
    ranges = [r for lo, hi in spans
              for r in edge_windows.plan(graph.row_ptr, max_edges, limit_desc, lo=lo, hi=hi, block=block,
                                         max_nodes=max_nodes, big_above=big_above)]
    rranges: list[tuple[int, int]] | None = None
    refusal = gd.rev_refusal if gd.windows is not None and gd.rwindows is None else ""
    if not refusal:
        rspans = [(0, n)]
        if gd.rwindows is not None:  # a big in-hub's pieces (one window each) make one span
            rspans = list(dict.fromkeys((w.n0, w.n1) for w in gd.rwindows))
        try:
            rranges = [r for lo, hi in rspans
                       for r in edge_windows.plan(graph.rev_ptr, max_edges, limit_desc, "in-edges", lo=lo, hi=hi,
                                                  block=block, max_nodes=max_nodes, big_above=big_above)]
        except DeviceLimitError as exc:
            refusal = str(exc)
    # a big hub of the graph's own edge windows (sources) or target windows: its pieces' starts
    scuts: dict[int, set[int]] = {}
    rcuts: dict[int, set[int]] = {}
    for wins, cuts in ((gd.windows, scuts), (gd.rwindows, rcuts)):
        for w in wins or []:
            if w.big:
                cuts.setdefault(w.n0, set()).add(w.e0)

    def pieces(w: EdgeWindow, cuts: dict[int, set[int]]) -> list[EdgeWindow]:
        # a big hub: its pieces (from its first, at the graph's cuts)
        if w.e1 - w.e0 <= max_edges:
            return [w]
        at = sorted({*range(w.e0, w.e1, piece), *(c for c in cuts.get(w.n0, ()) if w.e0 < c < w.e1)})
        return [dataclasses.replace(w, e0=a, e1=b, big=True) for a, b in zip(at, at[1:] + [w.e1])]

    windows = [p for n0, n1 in ranges for p in pieces(source_window(up, graph, n0, n1, be.thread_degree_max), scuts)]
    rwindows = None if rranges is None else [p for k0, k1 in rranges
                                             for p in pieces(target_window(up, graph, k0, k1), rcuts)]
    rev_src = rev_edges = None
    if rwindows is not None:
        rev_src, rev_edges = gd.rev_src, gd.rev_edges
        if rev_src is None:  # the graph's [E] arrays fit one binding: by target, one buffer each
            rev_src, rev_edges = up(graph.src[graph.rev_perm]), up(graph.rev_perm)
    rows = max([align // 4 + w.e1 - w.e0 for w in windows + (rwindows or [])], default=1)
    plan = RowPlan(dim, block, windows, rwindows, rev_src, rev_edges, rows, refusal, piece)
    gd.row_plans[dim] = plan
    arrays = [rev_src, rev_edges] + [x for w in windows + (rwindows or []) for x in (w.seg_list, w.large)]
    be.tag_memory([a for a in arrays if a is not None], "graph")
    return plan


def gather_rows(be: Any, table: DeviceArray, index: DeviceArray, e0: int, count: int, out: DeviceArray) -> None:
    """Row e0 + t of ``out`` (float, [rows, d] flat) = row ``index[e0 + t]`` of ``table``
    ([N, d] in node blocks) for t < ``count``; ``index`` is a window's bound range of node ids
    (u32). One ``gather_rows`` dispatch per node block (exact copies, each entry once)."""
    if count == 0:
        return
    rt = be.runtime
    n, dim = table.shape
    per = block_rows(rt, dim)
    for b0 in range(0, n, per):
        b1 = min(b0 + per, n)
        a, shift = node_range(be, table, b0, b1)
        threads = count * -(-dim // 4)  # 4 floats of a row each
        rt.dispatch("gather_rows", threads=threads, uniform=dict(
            n=threads, lo=b0, count=b1 - b0, base=shift, off=e0, dim=dim), a=a, index=index, out=out)

