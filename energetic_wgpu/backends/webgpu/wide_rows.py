"""Wide rows: the energy scatter and its backward when one batch row of N is past one binding.

When one batch row of the [B, N] energies, masks and gradients is past one storage binding
from any aligned start (N > 33.5 M on WebGPU's default limits), the graph's node pointers are
in node blocks of at most that many nodes (graph_data.ptr_block, row_block_nodes). Nothing
then binds a whole row; every op runs one batch row at a time, over the graph's edge windows:

* a window's *own* nodes (its targets for the scatter, its sources for the backward and the
  flow) are one node range of the row, bound from the aligned offset before it (:func:`own`:
  node j at element ``e0 + j`` mod 2^32 of the range; every window lies in one pointer block,
  of at most :func:`block_nodes` nodes, so the range fits a binding);
* the *other* end of each edge (the scatter's sources, the backward's targets) is anywhere in
  the row: ``scatter_gather`` copies each entry's value into a window-sized array first, one
  dispatch per node block of the row (:func:`gather`: each entry written once, by the block
  holding its node), and the kernels read the entry's value there (energy_scatter.wgsl flags
  bit 5, scatter_backward.wgsl flags bit 8);
* a sink is a node with no out-edges: read from its row_ptr block, as the [N] sink flags are
  past a binding too;
* ``grad_pi`` sums over the rows: row by row, each edge's running (sum, compensation) carried
  from row to row as batch chunks carry it (batch_chunks.py).

Every sum meets the same terms in the same order as one dispatch over the whole batch: the
results are bit-identical to the unsplit run. A row past the buffer size limit (N > 67.1 M
on default limits) is split over buffers at its node blocks (batch_chunks.new_rows), so every
range bound here lies in one buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import edge_windows
from .arrays import DeviceArray, parts_of, range_view
from .graph_data import row_block_nodes
from .kernels import SMALL_DEGREE_MAX

__all__ = ["block_nodes", "own", "own_all", "gather", "identity", "new_wide", "in_rows", "scatter", "scatter_backward"]

_MASK = 0xFFFFFFFF

#: nodes of one row's range that fit one binding from any start (the pointer blocks hold no more)
block_nodes = row_block_nodes


def own(be: Any, arr: DeviceArray, b: int, n: int, n0: int, n1: int) -> tuple[DeviceArray, int]:
    """(bindable range, e0) of nodes ``n0 .. n1`` of row ``b`` of ``arr`` ([B, N] or [N], 4-byte
    elements, each row in one buffer): node j at element ``e0 + j`` (mod 2^32) of the range."""
    view, v0 = range_view(arr, b * n + n0, max(1, n1 - n0), be.runtime.offset_alignment)
    return view, (v0 - n0) & _MASK


def own_all(be: Any, arrays: list[Any], b: int, n: int, n0: int, n1: int) -> tuple[list[Any], int]:
    """:func:`own` of each array (None stays None); every [B, N] array starts a buffer, so the
    node ranges of one row lie at the same element of theirs (checked)."""
    views, e0s = [], set()
    for a in arrays:
        if a is None:
            views.append(None)
            continue
        v, e0 = own(be, a, b, n, n0, n1)
        views.append(v)
        e0s.add(e0)
    assert len(e0s) <= 1, f"row {b}'s nodes {n0}..{n1} lie at different elements of the bound ranges: {e0s}"
    return views, e0s.pop() if e0s else 0


def gather(be: Any, arr: DeviceArray, act: Any, b: int, n: int, index: DeviceArray, off: int, count: int,
           out: DeviceArray, alpha: float | None = None, mask: bool = False) -> None:
    """``out[off + t]`` = the value of node ``index[off + t]`` (u32) of row ``b`` of ``arr``
    ([B, N] or [N] float) for t < ``count``: with ``alpha`` the scatter's x (energies *
    alpha, 0 where ``act`` [B, N] is 0), else the element itself (exact); with ``mask``
    (``arr`` an active mask, u32) 1.0 where active, else 0.0 (read as a mask: nonzero bits
    where active). One ``scatter_gather`` dispatch per node block of the row."""
    if count == 0:
        return
    rt = be.runtime
    per = block_nodes(rt)
    flags = 8 | (0 if alpha is None else 2) | (1 if act is not None else 0) | (4 if mask else 0)
    for n0 in range(0, n, per):
        n1 = min(n0 + per, n)
        (xv, av), e0 = own_all(be, [arr, act], b, n, n0, n1)
        if mask:
            xv, av = be._opt(None), xv
        u = dict(batch=1, n_nodes=n, flags=flags, n_large=n1 - n0, alpha=np.float32(1.0 if alpha is None else alpha),
                 small_max=SMALL_DEGREE_MAX, e0=e0, node0=n0, n_count=count, rbase=off, b0=0, piece=0, p_shift=0)
        rt.dispatch("scatter_gather", threads=count, uniform=u, rev_pairs=index, energies=xv, act_mask=be._opt(av),
                    next_e=out)


def identity(be: Any, count: int) -> DeviceArray:
    """u32 [count] 0, 1, ..., count - 1 on the device (uploaded once per backend and size)."""
    if count not in be.wide_identity:
        be.wide_identity[count] = be.asarray(np.arange(count, dtype=np.uint32))
    return be.wide_identity[count]


def _or(x: Any, default: Any) -> Any:
    return default if x is None else x


def new_wide(be: Any, shape: tuple[int, ...], what: str, dtype: Any = np.float32) -> DeviceArray:
    """An uninitialized array of ``shape`` ([B, N] or [N]) whose rows' node blocks each lie in
    one buffer (batch_chunks.new_node_block_rows)."""
    from .batch_chunks import new_node_block_rows
    return new_node_block_rows(be, shape, dtype, what)


def in_rows(be: Any, x: Any, n: int) -> Any:
    """``x`` ([B, N] or [N], 4-byte elements; None stays None) when every node block of its rows
    lies in one of its buffers (always, for an array in one buffer), else a copy of it in the
    layout of :func:`new_wide` (exact bytes, copied on the device): e.g. an [N] array split at
    reduction workgroups, reshaped to [1, N]."""
    parts = None if x is None else parts_of(x)
    if parts is None:
        return x
    per = block_nodes(be.runtime)
    blocks = [(r * n + k, r * n + min(k + per, n)) for r in range(x.size // max(n, 1)) for k in range(0, n, per)]
    if all(any(s <= lo and hi <= s + c for s, c, *_ in parts) for lo, hi in blocks):
        return x
    out = new_wide(be, tuple(x.shape), "rows in node blocks", x.dtype)
    edge_windows.copy_elements(be, x, out)
    return out


def _scratch(be: Any, windows: list[Any]) -> DeviceArray:
    """A float array for the gathered values of any one of ``windows`` (bound from element 0;
    its entries lie at their element in the window's bound ranges)."""
    rt = be.runtime
    most = max((w.e1 - w.e0 for w in windows), default=0)
    return be.empty((2 * (-(-(most + rt.offset_alignment // 4) // 2)),))


def scatter(be: Any, gd: Any, x: DeviceArray, act: Any, pi: DeviceArray, alpha: float, retain_sinks: bool,
            out: DeviceArray, batch: int) -> None:
    """:meth:`Backend.energy_scatter`'s next energies of ``x`` ([B, N] or [N] float; ``act``
    bool [B, N] or None) written into ``out`` (the same shape), one row at a time: per window
    of targets, the sources' x gathered, then ``scatter_small`` / ``scatter_large`` (or a big
    in-hub's ``scatter_large_piece`` per piece) over the window's nodes of the row."""
    rt, n = be.runtime, gd.num_nodes
    rwindows = gd.reverse_windows("energy_scatter")
    pi_rev = edge_windows.to_reverse_order(be, gd, pi)
    gx = _scratch(be, rwindows)
    carry = be.empty((256 * 4,))
    flags = 32 | 16 | 8 | (2 if retain_sinks else 0)
    base = dict(batch=1, n_nodes=n, flags=flags, alpha=np.float32(1.0), small_max=SMALL_DEGREE_MAX, b0=0, piece=0)
    for b in range(batch):
        for group in edge_windows.hub_groups(rwindows):
            pieces = group if isinstance(group, list) else [group]
            for i, r in enumerate(pieces):
                src, off = edge_windows.window_view(be, gd.rev_src, r)
                gather(be, x, act, b, n, src, off, r.e1 - r.e0, gx, alpha)
                (xv, ov), e0 = own_all(be, [x, out], b, n, r.n0, r.n1)
                ptr, p_shift = gd.node_ptr(True, r.n0)
                sink = gd.node_ptr(False, r.n0)[0]
                u = dict(base, n_large=r.n_large, e0=e0, node0=r.n0, n_count=r.n1 - r.n0, rbase=r.e0 - off,
                         p_shift=p_shift)
                common = dict(rev_ptr=ptr, rev_pairs=gx, pi=edge_windows.window_view(be, pi_rev, r)[0], sink=sink,
                              next_e=ov, xt=xv, act_t=be._opt(None))
                if r.big:  # one piece of a big in-hub: each lane's sums carried in `carry`
                    u.update(n_large=0, n_count=r.e1 - r.e0, rbase=off,
                             piece=int(i == 0) | 2 * int(i == len(pieces) - 1))
                    rt.dispatch("scatter_large_piece", workgroups=1, uniform=u, carry=carry,
                                **{k: v for k, v in common.items() if k != "rev_ptr"})
                    continue
                rt.dispatch("scatter_small", threads=r.n1 - r.n0, uniform=u, **common)
                if r.n_large:
                    rt.dispatch("scatter_large", workgroups=r.n_large, uniform=u, large_nodes=r.large, **common)


def scatter_backward(be: Any, gd: Any, x: DeviceArray, act: Any, pi: DeviceArray, g: DeviceArray, alpha: float,
                     retain_sinks: bool, grad_energies: bool, grad_pi_acc: Any, batch: int,
                     shape: tuple[int, ...]) -> tuple[Any, DeviceArray]:
    """(grad_energies of ``shape`` or None, grad_pi [E] in the windows' layout) of
    :meth:`Backend.energy_scatter_backward` for ``x`` / ``act`` / ``g`` ([B, N] or [N]), one
    row at a time over the graph's edge windows: each window's targets' ``g`` gathered, then
    ``scatter_bwd_small`` / ``scatter_bwd_large`` (a big source hub's
    ``scatter_bwd_large_piece`` per piece) and ``scatter_bwd_pi``, whose sum over the rows is
    carried from row to row."""
    rt, n = be.runtime, gd.num_nodes
    pi = edge_windows.in_windows(be, gd, pi, "pi")
    acc = None if grad_pi_acc is None else edge_windows.in_windows(be, gd, be._dev(grad_pi_acc), "grad_pi_acc")
    grad_pi = edge_windows.edge_array(be, gd, "grad_pi")
    comp = edge_windows.edge_array(be, gd, "carry_comp") if batch > 1 else None
    out = new_wide(be, shape, "grad_energies") if grad_energies else None
    gg = _scratch(be, gd.windows)
    lanes = be.empty((256 * 2,))
    base = dict(batch=1, n_nodes=n, alpha=np.float32(alpha), small_max=SMALL_DEGREE_MAX, b0=0, ps=0, pt=0, piece=0)
    flags = 256 | (1 if act is not None else 0) | (2 if retain_sinks else 0) | (4 if acc is not None else 0)
    dummy = be._opt(None)
    for b in range(max(batch, 1)):  # B = 0: one pass writes grad_pi = acc (or 0), the empty sum
        carry = (64 if b else 0) | (128 if b < batch - 1 else 0)
        for group in edge_windows.hub_groups(gd.windows):
            pieces = group if isinstance(group, list) else [group]
            for i, w in enumerate(pieces):
                if w.e1 == w.e0 and not grad_energies:
                    continue
                (c, off), pv = (edge_windows.window_view(be, a, w) for a in (gd.col_idx, pi))
                ptr, p_shift = gd.node_ptr(False, w.n0)
                if batch:
                    gather(be, g, None, b, n, c, off, w.e1 - w.e0, gg)
                    (xv, av, gv, ov), e0 = own_all(be, [x, act, g, out], b, n, w.n0, w.n1)
                else:
                    xv = av = gv = ov = None
                    e0 = 0
                u = dict(base, flags=flags | carry, n_large=w.n_large, n_edges=w.e1 - w.e0, e0=e0, node0=w.n0,
                         n_count=w.n1 - w.n0, ebase=w.e0 - off, eoff=off, p_shift=p_shift,
                         batch=1 if batch else 0)
                common = dict(col_idx=gg, pi=pv[0], grad_next=_or(gv, dummy), act_mask=_or(av, dummy), sink=ptr)
                if grad_energies and batch:
                    if w.big:
                        u_p = dict(u, n_large=1, ps=off, pt=off + w.e1 - w.e0,
                                   piece=int(i == 0) | 2 * int(i == len(pieces) - 1))
                        rt.dispatch("scatter_bwd_large_piece", workgroups=1, uniform=u_p, lanes=lanes, out=ov,
                                    **common)
                    else:
                        rt.dispatch("scatter_bwd_small", threads=w.n1 - w.n0, uniform=u, row_ptr=ptr, out=ov, **common)
                        if w.n_large:
                            rt.dispatch("scatter_bwd_large", workgroups=w.n_large, uniform=u, row_ptr=ptr, out=ov,
                                        large_nodes=w.large, **common)
                if w.e1 == w.e0:
                    continue
                views = {k: edge_windows.window_view(be, a, w)[0] for k, a in
                         (("out", grad_pi), ("src", gd.src), ("acc_in", acc), ("carry_comp", comp)) if a is not None}
                rt.dispatch("scatter_bwd_pi", threads=w.e1 - w.e0, uniform=u, col_idx=gg if batch else c,
                            grad_next=common["grad_next"], act_mask=common["act_mask"], energies=_or(xv, dummy),
                            acc_in=views.get("acc_in", dummy), carry_comp=views.get("carry_comp", lanes),
                            out=views["out"], src=views["src"])
    return out, grad_pi
