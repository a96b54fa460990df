"""A big hub's sums in pieces (the host side of hub_pieces.wgsl).

A hub with more entries than one window holds (a big source or target of edge windows,
edge_windows.py, or a big hub of a row plan, node_rows.py) runs as consecutive windows of its
own (``EdgeWindow.big``), pieces that start at multiples of 256 entries from its first. The sums
over its segment are carried from piece to piece, each lane meeting the entries it meets in the
single workgroup of the unsplit kernel, in the same order, so the results keep their bits:

* :func:`hub_columns`: the backward's column sums (grad_q, grad_k), ``hub_columns`` per piece
  and group of columns, then ``hub_sq`` (segment_bwd's sum of squares of the hub's row);
* :func:`hub_dl`: the softmax backward's dot and dl, ``hub_dot`` then ``hub_dl`` per piece.

(The softmax / top-k of a big hub is ``edge_probs_piece``, ops_forward.py; the scatter's and its
backward's sums, ``scatter_large_piece`` and ``scatter_bwd_large_piece``, node_major.py and
ops_backward.py.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import edge_windows
from .arrays import DeviceArray, range_view
from .edge_windows import EdgeWindow
from .node_rows import gather_rows, node_range

__all__ = ["hub_columns", "hub_dl"]

_MASK = 0xFFFFFFFF


def hub_columns(be: Any, pieces: list[EdgeWindow], dim: int, values: DeviceArray, index: DeviceArray,
                table: DeviceArray, out: DeviceArray, rows: DeviceArray | None, lanes: int,
                sq_slot: DeviceArray | None = None, zero_sq: bool = False) -> None:
    """Row ``n0`` of ``out`` ([N, d], in node blocks when past one binding) for the big hub whose
    entries ``pieces`` cover (windows of node n0, in order, each starting a multiple of 256
    entries from its first): column c = the sum over its entries r of ``values[r] *
    table[index[r], c]`` (``values``, ``index``: [E] arrays in the windows' layout), summed as a
    workgroup of ``lanes`` (64: segment_bwd, 256: logits_bwd_large) sums it, in pieces
    (hub_pieces.wgsl): per piece, with ``rows``, its rows of ``table`` gathered there (else
    ``table`` bound whole) and one ``hub_columns`` dispatch per group of columns whose lanes'
    carry fits one binding. With ``sq_slot`` (the hub's 64 lanes' sums of squares, segment_bwd's
    lanes slot), ``hub_sq`` then adds the squares of the row's values to lane 0's, in column
    order (``zero_sq``: every lane's from zero)."""
    rt = be.runtime
    n0 = pieces[0].n0
    ov, shift = node_range(be, out, n0, n0 + 1)
    o_row = (n0 * dim - shift) & _MASK
    per = max(1, rt.max_binding_size // (8 * lanes))  # columns whose carry fits one binding
    carry = edge_windows.new_split_1d(be, dim * lanes * 2, per * lanes * 2, "hub lanes carry")
    name = "hub_columns" if lanes == 64 else "hub_columns_256"
    for i, pw in enumerate(pieces):
        (iv, e0), vv = (edge_windows.window_view(be, x, pw) for x in (index, values))
        count = pw.e1 - pw.e0
        if rows is not None:
            gather_rows(be, table, iv, e0, count, rows)
        for c0 in range(0, dim, per):
            nc = min(per, dim - c0)
            cv = range_view(carry, c0 * lanes * 2, nc * lanes * 2, rt.offset_alignment)[0]
            rt.dispatch(name, workgroups=nc, uniform=dict(s=e0, t=e0 + count, dim=dim, first=int(i == 0),
                                                         last=int(i == len(pieces) - 1), o_row=o_row, c0=c0,
                                                         gathered=int(rows is not None), tau=np.float32(1)),
                        values=vv[0], feat=table if rows is None else rows, carry=cv, out=ov, index=iv)
    if sq_slot is not None:
        rt.dispatch("hub_sq", threads=1, uniform=dict(s=0, t=0, dim=dim, first=int(zero_sq), last=0, o_row=o_row,
                                                      c0=0, gathered=0, tau=np.float32(1)), carry=sq_slot, out=ov)


def hub_dl(be: Any, pieces: list[EdgeWindow], pi: DeviceArray, gpi: DeviceArray, dl: DeviceArray, tau: float,
           lanes: int, sq_slot: DeviceArray | None = None) -> None:
    """dl[e] = pi[e] * (gpi[e] - dot) / tau over the big hub whose out-edges ``pieces`` cover
    (windows of one source, each starting a multiple of 256 entries from its first; ``pi``,
    ``gpi``, ``dl``: float [E] arrays in the windows' layout), dot = the sum of pi * gpi over the
    hub, as a workgroup of ``lanes`` sums it (64: segment_bwd's hub, 256: softmax_bwd_large), in
    pieces (hub_pieces.wgsl): ``hub_dot`` per piece, then ``hub_dl`` per piece. ``sq_slot``:
    the hub's lanes' slot of segment_bwd's scratch (2 floats per lane), where each lane's sum of
    the squares of its dl lands (else a scratch array)."""
    rt = be.runtime
    dot = be.empty((2 * lanes + 1,))
    sq = sq_slot if sq_slot is not None else be.empty((2 * lanes,))
    suffix = "" if lanes == 64 else "_256"
    views = [tuple(edge_windows.window_view(be, x, pw) for x in (pi, gpi, dl)) for pw in pieces]
    for name in ("hub_dot", "hub_dl"):
        for i, (pw, ((pv, e0), gv, ov)) in enumerate(zip(pieces, views)):
            u = dict(s=e0, t=e0 + pw.e1 - pw.e0, dim=0, first=int(i == 0), last=int(i == len(pieces) - 1), o_row=0,
                     c0=0, gathered=0, tau=np.float32(tau))
            if name == "hub_dot":
                rt.dispatch(name + suffix, workgroups=1, uniform=u, values=pv, feat=gv[0], carry=dot)
            else:
                rt.dispatch(name + suffix, workgroups=1, uniform=u, values=pv, feat=gv[0], carry=sq, out=ov[0],
                            dot_in=dot)
