"""Node-major batched state of the wgpu scatter and its backward (shaders/energy_scatter.wgsl).

The public layout of batched energies is [B, N]. A gather over a node's incoming edges reads
every batch row of each source; with [B, N] those rows are N floats apart, one memory sector
per row. Inside the multi-step forward and backward the wgpu backend keeps the state
*node-major*: element (b, j) at ``j * 4 * ceil(B/4) + b`` (rows padded to a multiple of 4 and
zero there), so one node's batch rows are contiguous and a lane reads them as one ``vec4``.

* :func:`to_node_major`: [B, N] energies (and the active mask) -> node-major, one dispatch
  (``scatter_transpose``).
* :func:`scatter`: one step of :meth:`Backend.energy_scatter` from a node-major state, writing
  the next state node-major or [B, N] (``scatter_small``, ``scatter_large`` for hubs).
* :func:`to_rows`: a node-major state as [B, N] (``scatter_rows``), unless its [B, N] form is
  already known.

The Router asks for this through :meth:`WgpuBackend.scatter_state` / ``scatter_step`` /
``scatter_step_backward`` / ``public_state``; the public ops keep [B, N] in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import edge_windows
from .reverse_index import reverse_inputs
from .arrays import DeviceArray, range_view
from .kernels import SMALL_DEGREE_MAX

__all__ = ["BatchShape", "NodeMajor", "new_state", "to_node_major", "scatter", "scatter_rows_state", "rows_into",
           "to_rows"]


class BatchShape:
    """The logical shape of a batched state with ``batch`` (B) and ``n_nodes`` (N) attributes."""

    batch: int
    n_nodes: int

    @property
    def shape(self) -> tuple[int, int]:
        """(B, N): the logical shape."""
        return (self.batch, self.n_nodes)


@dataclass(eq=False)
class NodeMajor(BatchShape):
    """A batched state [B, N] stored node-major.

    Attributes:
        data: float32 (energies, gradients) or uint32 (an active mask) device array of
            ``N * 4 * ceil(B/4)`` elements: element (b, j) at ``j * 4 * ceil(B/4) + b``, 0 for
            b >= B.
        batch, n_nodes: B and N.
        rows: the same values as a [B, N] device array when one exists (the forward's input),
            else None.
    """

    data: DeviceArray
    batch: int
    n_nodes: int
    rows: DeviceArray | None = None


def new_state(be: Any, batch: int, n: int, dtype: Any = np.float32) -> NodeMajor:
    """An uninitialized node-major state of B = ``batch`` rows, N = ``n`` nodes (its writer
    must fill the padding rows with 0 too)."""
    return NodeMajor(be.empty((n * 4 * (-(-batch // 4)),), dtype), batch, n)


def unused_output(be: Any) -> DeviceArray:
    """The buffer bound as ``act_out`` when there is no mask, and as ``scatter_bwd_pi``'s
    ``carry_comp`` when the batch is not split (never written). It must be writable and not
    the shared dummy (bound read-only, e.g. as ``act_mask``, in the same dispatch);
    one per backend, kept, so a steady-state step takes the same pooled buffers every time."""
    if be.node_major_scratch is None:
        be.node_major_scratch = be.empty((4,), np.uint32)
    return be.node_major_scratch


def to_node_major(be: Any, gd: Any, energies: DeviceArray, active: Any, batch: int | None = None,
                  e0: int = 0) -> tuple[NodeMajor, NodeMajor | None]:
    """(state, active state) of ``energies`` float [B, N] (or [N]: B = 1) and ``active``
    (bool [B, N] or None): one ``scatter_transpose`` dispatch (none when B or N is 0).
    A batch chunk (batch_chunks.py) passes its ``batch`` rows and the element ``e0`` where its
    first row starts in the bound ranges of ``energies`` and ``active``."""
    if batch is None:
        batch = 1 if energies.ndim == 1 else int(energies.shape[0])
    n = gd.num_nodes
    state = new_state(be, batch, n)
    act = None if active is None else new_state(be, batch, n, np.uint32)
    act_out = unused_output(be) if act is None else act.data
    u = dict(batch=batch, n_nodes=n, flags=0 if active is None else 1, n_large=0, alpha=np.float32(1.0),
             small_max=SMALL_DEGREE_MAX, e0=e0, node0=0, n_count=n, rbase=0, b0=0, piece=0, p_shift=0)
    be.runtime.dispatch("scatter_transpose", threads=-(-batch // 4) * n, uniform=u, energies=energies,
                        act_mask=be._opt(active), xt_out=state.data, act_out=act_out)
    state.rows = energies if energies.ndim == 2 and not e0 and energies.shape[0] == batch else None
    return state, act


def scatter(
    be: Any, gd: Any, state: NodeMajor, pi: DeviceArray, alpha: float, active: NodeMajor | None,
    retain_sinks: bool, node_major: bool, shape: tuple[int, ...] | None = None, out: Any = None, e0: int = 0,
) -> Any:
    """The next energies of ``state`` (:meth:`Backend.energy_scatter`): a :class:`NodeMajor`
    when ``node_major``, else a float array of ``shape`` (default [B, N]) in the public layout,
    or written into ``out`` (a batch chunk's bound range of [B, N] rows, which start at element
    ``e0`` of it; ``out`` is returned)."""
    batch, n = state.batch, gd.num_nodes
    nxt = new_state(be, batch, n) if node_major else None
    if nxt is not None:
        out = nxt.data
    elif out is None:
        out = be.empty(shape if shape is not None else (batch, n))
    if batch and n and gd.windows is not None:
        _scatter_windowed(be, gd, state, pi, alpha, active, retain_sinks, node_major, out, e0)
    elif batch and n:
        _dispatch(be, gd, state, pi, alpha, active, retain_sinks, node_major, out, e0)
    return nxt if nxt is not None else out


def scatter_rows_state(be: Any, gd: Any, x: DeviceArray, batch: int, pi: DeviceArray, alpha: float,
                       active: DeviceArray | None, retain_sinks: bool, out: DeviceArray, e0: int) -> None:
    """:func:`scatter` of a state kept in rows (batch_chunks.RowChunks, flags bit 4): ``x`` and
    ``active`` are the bound ranges of ``batch`` rows of the [B, N] energies and mask, ``out``
    that of the next energies; the rows start at element ``e0`` of each. Every sum is the
    node-major one (the same floats in the same order)."""
    state = NodeMajor(x, batch, gd.num_nodes)
    act = None if active is None else NodeMajor(active, batch, gd.num_nodes)
    if batch and gd.num_nodes:
        if gd.windows is not None:
            _scatter_windowed(be, gd, state, pi, alpha, act, retain_sinks, False, out, e0, 16)
        else:
            _dispatch(be, gd, state, pi, alpha, act, retain_sinks, False, out, e0, 16)


def _dispatch(be: Any, gd: Any, state: NodeMajor, pi: DeviceArray, alpha: float, active: NodeMajor | None,
              retain_sinks: bool, node_major: bool, out: Any, e0: int, layout: int = 0) -> None:
    """``scatter_small`` (and ``scatter_large`` for hubs) over the whole graph."""
    batch, n = state.batch, gd.num_nodes
    pairs, pi, split = reverse_inputs(be, gd, pi)
    flags = (1 if active is not None else 0) | (2 if retain_sinks else 0) | (4 if node_major else 0) | (
        8 if split else 0) | layout
    u = dict(batch=batch, n_nodes=n, flags=flags, n_large=gd.n_large_in, alpha=np.float32(alpha),
             small_max=SMALL_DEGREE_MAX, e0=e0, node0=0, n_count=n, rbase=0, b0=0, piece=0, p_shift=0)
    common = dict(rev_ptr=gd.rev_ptr, rev_pairs=pairs, pi=pi, sink=gd.sink, next_e=out, xt=state.data,
                  act_t=be._opt(None if active is None else active.data))
    be.runtime.dispatch("scatter_small", threads=-(-batch // 8) * n, uniform=u, **common)
    if gd.n_large_in:
        be.runtime.dispatch("scatter_large", workgroups=gd.n_large_in * batch, uniform=u,
                            large_nodes=gd.large_in, **common)


def _scatter_windowed(be: Any, gd: Any, state: NodeMajor, pi: DeviceArray, alpha: float, active: NodeMajor | None,
                      retain_sinks: bool, node_major: bool, out: Any, e0: int, layout: int = 0) -> None:
    """:func:`scatter` of a graph cut into edge windows (edge_windows.py): pi into reverse-index
    order first, then ``scatter_small`` / ``scatter_large`` per window of targets on its
    ranges of the split reverse index (each target's sum as in one dispatch)."""
    rwindows = gd.reverse_windows("energy_scatter")
    pi_rev = edge_windows.to_reverse_order(be, gd, pi)
    batch = state.batch
    flags = (1 if active is not None else 0) | (2 if retain_sinks else 0) | (4 if node_major else 0) | 8 | layout
    for r in edge_windows.hub_groups(rwindows):
        if isinstance(r, list):  # a big in-hub
            _scatter_big(be, gd, r, pi_rev, state, active, alpha, flags, out, e0)
            continue
        src, off = edge_windows.window_view(be, gd.rev_src, r)
        u = dict(batch=batch, n_nodes=gd.num_nodes, flags=flags, n_large=r.n_large, alpha=np.float32(alpha),
                 small_max=SMALL_DEGREE_MAX, e0=e0, node0=r.n0, n_count=r.n1 - r.n0, rbase=r.e0 - off, b0=0, piece=0, p_shift=0)
        common = dict(rev_ptr=gd.rev_ptr, rev_pairs=src, pi=edge_windows.window_view(be, pi_rev, r)[0], sink=gd.sink,
                      next_e=out, xt=state.data, act_t=be._opt(None if active is None else active.data))
        be.runtime.dispatch("scatter_small", threads=-(-batch // 8) * (r.n1 - r.n0), uniform=u, **common)
        if r.n_large:
            be.runtime.dispatch("scatter_large", workgroups=r.n_large * batch, uniform=u, large_nodes=r.large,
                                **common)


def _scatter_big(be: Any, gd: Any, pieces: list[Any], pi_rev: DeviceArray, state: NodeMajor, active: NodeMajor | None,
                 alpha: float, flags: int, out: Any, e0: int) -> None:
    """The scatter into a big in-hub k (more in-edges than a window holds; ``pieces``, its
    windows, edge_windows.hub_groups): ``scatter_small`` over its first piece only zeroes a
    node-major output's padding rows, then per piece ``scatter_large_piece`` per group of
    batch rows whose lanes' carry (16 bytes per lane and row) fits one binding, carrying each
    lane's sums from piece to piece: ``scatter_large``'s sum, the same bits."""
    rt = be.runtime
    batch, k = state.batch, pieces[0].n0
    per = max(1, rt.max_binding_size // (16 * 256))
    carry = edge_windows.new_split_1d(be, batch * 256 * 4, per * 256 * 4, "scatter carry")
    common = dict(sink=gd.sink, next_e=out, xt=state.data, act_t=be._opt(None if active is None else active.data))
    for i, r in enumerate(pieces):
        src, off = edge_windows.window_view(be, gd.rev_src, r)
        pv = edge_windows.window_view(be, pi_rev, r)[0]
        u = dict(batch=batch, n_nodes=gd.num_nodes, flags=flags, n_large=0, alpha=np.float32(alpha),
                 small_max=SMALL_DEGREE_MAX, e0=e0, node0=k, n_count=1, rbase=r.e0 - off, b0=0, piece=0, p_shift=0)
        if i == 0:  # k's padding rows of a node-major output (its sum is scatter_large_piece's)
            rt.dispatch("scatter_small", threads=-(-batch // 8), uniform=u, rev_ptr=gd.rev_ptr, rev_pairs=src, pi=pv,
                        **common)
        u.update(rbase=off, n_count=r.e1 - r.e0, piece=int(i == 0) | 2 * int(i == len(pieces) - 1))
        for b0 in range(0, batch, per):
            nb = min(per, batch - b0)
            cv = range_view(carry, b0 * 1024, nb * 1024, rt.offset_alignment)[0]
            rt.dispatch("scatter_large_piece", workgroups=nb, uniform={**u, "b0": b0}, rev_pairs=src, pi=pv, carry=cv,
                        **common)


def rows_into(be: Any, state: NodeMajor, out: DeviceArray, e0: int = 0) -> None:
    """Write ``state`` in the public layout into ``out`` (its [B, N] rows from element ``e0``
    of the bound range): one ``scatter_rows`` dispatch."""
    u = dict(batch=state.batch, n_nodes=state.n_nodes, flags=0, n_large=0, alpha=np.float32(1.0),
             small_max=SMALL_DEGREE_MAX, e0=e0, node0=0, n_count=state.n_nodes, rbase=0, b0=0, piece=0, p_shift=0)
    be.runtime.dispatch("scatter_rows", threads=state.batch * state.n_nodes, uniform=u, xt=state.data, next_e=out)


def to_rows(be: Any, state: Any) -> DeviceArray:
    """``state`` as a float [B, N] array: its ``rows`` when known, else one ``scatter_rows``
    dispatch (cached on the state). A plain array is returned as it is."""
    if not isinstance(state, NodeMajor):
        return state
    if state.rows is None:
        state.rows = be.empty(state.shape)
        rows_into(be, state, state.rows)
    return state.rows
