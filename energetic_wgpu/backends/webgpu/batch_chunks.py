"""Batch chunks: the router's [B, N] state past one storage binding.

Energies, targets and gradients [B, N] and the node-major scatter state [N, 4 ceil(B/4)] must
each fit one storage binding (``runtime.max_binding_size``, 128 MiB on WebGPU's default
limits). When the node-major state of the whole batch does not, the router's forward and
backward run over *batch chunks* of ``Bc`` rows (:func:`plan`: a multiple of 4, the largest
whose state and whose [Bc, N] rows, bound from an aligned offset, fit the limit), all encoded
into the same pending command encoder (one submit per train step as unsplit):

* the user-visible [B, N] arrays (input energies, active mask, the last state, the loss
  gradient, the input-energy gradient) are one buffer each up to the device's maxBufferSize
  (``pool.new_large_array``), and past it split over buffers of whole chunks (:func:`new_rows`,
  ``arrays.PartsAllocation``); a chunk binds its rows as a range (:func:`rows_view`). A row
  range starts at byte ``r0 * N * 4``, in general not a multiple of the offset alignment
  (256): the range is bound from the aligned-down offset, and the kernels get the element
  ``e0`` where row ``r0`` lies in it (the ``e0`` uniform field of energy_scatter.wgsl and
  scatter_backward.wgsl), so any N works;
* each chunk's node-major state is its own buffer (:class:`Chunked` holds them); when not
  even 4 node-major rows of N fit one binding (:func:`state_in_rows`: N > 8.4 M on default
  limits) the state stays in its [B, N] rows instead (:class:`RowChunks`: chunks of any
  number of rows, the kernels read the sources' rows from the bound row range);
* every chunk runs the same kernels as the unsplit batch on its rows. Per-row results
  (next energies, input-energy gradients) do not depend on other rows: bit-identical to the
  unsplit run. ``grad_pi`` sums over the batch (one compensated sum over b = 0, 1, ... per
  edge): the chunks run in row order and hand the running (sum, compensation) pair of each
  edge on (the sums in grad_pi itself, the compensations in a second [E] array;
  ``scatter_bwd_pi`` flags bits 6 and 7), so the sum is exactly the unsplit one;
* losses reduce a flat [B * N] array in workgroups of 4096 elements: they are split into
  ranges of whole workgroups (:func:`flat_ranges`), each partial written where the unsplit
  dispatch writes it; the final pass is unchanged (the same bits). Split arrays also cut the
  ranges where a buffer ends; the workgroup across the cut runs on copies (:func:`flat_pieces`).

Nothing here runs for a batch that fits: unsplit problems keep their dispatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import DeviceLimitError
from . import edge_windows, node_major
from .arrays import DeviceArray, parts_of, range_view
from .graph_data import ptr_block
from .node_major import BatchShape, NodeMajor

__all__ = ["Chunked", "RowChunks", "ChunkCall", "plan", "state_in_rows", "rows_per_range", "row_e0", "rows_view", "row_quantum", "new_rows",
           "new_node_block_rows", "flat_ranges", "flat_pieces", "large_rows",
           "scatter_state", "scatter_step", "to_rows", "scatter_step_backward"]


@dataclass(eq=False)
class Chunked(BatchShape):
    """A batched state [B, N] split into batch chunks.

    Attributes:
        parts: one :class:`NodeMajor` per chunk (rows ``starts[i] .. starts[i] + parts[i].batch``).
        starts: the first row of each chunk.
        batch, n_nodes: B and N.
        rows: the whole state as one float [B, N] device array (over one binding: only bound
            in row ranges, or read back) when it exists, else None.
    """

    parts: list[NodeMajor]
    starts: list[int]
    batch: int
    n_nodes: int
    rows: DeviceArray | None = None


@dataclass(eq=False)
class RowChunks(BatchShape):
    """A batched state [B, N] kept in its [B, N] rows, in batch chunks of row ranges: the
    scatter's state when not even 4 node-major rows of N fit one binding
    (:func:`state_in_rows`; then the kernels read the sources' rows from the bound row range,
    flags bit 4 of energy_scatter.wgsl).

    Attributes:
        rows: float32 (energies) or bool / uint32 (an active mask) [B, N] device array (one
            buffer, or split over buffers at chunk boundaries: :func:`new_rows`).
        spans: (first row, rows) of each batch chunk, in row order.
        batch, n_nodes: B and N.
    """

    rows: DeviceArray
    spans: list[tuple[int, int]]
    batch: int
    n_nodes: int


@dataclass
class ChunkCall:
    """What one chunk's backward dispatches need (ops_backward._scatter_backward).

    Attributes:
        rows: rows of the chunk. e0: element of the bound [B, N] ranges where they start.
        out: the bound range of the [B, N] input-energy gradient (or None).
        grad_pi, comp: float [E], the running compensated sums (sum, compensation) of grad_pi
            across chunks; grad_pi ends as the result. carry: scatter_bwd_pi flags (64: resume
            the running sum; 128: store it, not the result).
    """

    rows: int
    e0: int
    out: Any
    grad_pi: DeviceArray
    comp: DeviceArray
    carry: int


def _state_bytes(batch: int, n: int) -> int:
    return n * 4 * (-(-batch // 4)) * 4


def _check_u32(elements: int) -> None:
    """Refuse a split array of 2^32 elements or more (the kernels count elements in u32)."""
    if elements >= 2**32:
        raise DeviceLimitError(
            f"an array of {elements} elements ({4 * elements} bytes) is past 2^32 elements, the kernels' u32 "
            f"element range: use smaller batches"
        )


def _room(be: Any, quantum: int) -> tuple[int, int]:
    """(bytes a row range may take, alignment kept) when ranges start at multiples of
    ``quantum`` bytes: no alignment room when every start is aligned."""
    rt = be.runtime
    align = 0 if quantum % rt.offset_alignment == 0 else rt.offset_alignment
    return rt.max_binding_size // 16 * 16 - align, align


def state_in_rows(be: Any, n: int) -> bool:
    """True when not even 4 node-major rows of ``n`` nodes (16 N bytes, the state's smallest
    chunk) fit one binding: the scatter's state then stays in [B, N] rows (:class:`RowChunks`)."""
    room, _ = _room(be, 16 * n)
    return n > 0 and 16 * n > room


def rows_per_range(be: Any, n: int) -> int:
    """The most rows of ``n`` 4-byte elements whose range, bound from the aligned offset before
    it (rounded up to 16 bytes), fits the binding limit: a multiple of 4 (at least 4) while 4
    node-major rows fit, else (:func:`state_in_rows`) at least 1. Chunks start at multiples of
    it: when its rows are a multiple of the offset alignment (e.g. N = 2^20) every start is
    aligned and no room is kept for the alignment."""
    rt = be.runtime
    if not state_in_rows(be, n):
        room, _ = _room(be, 16 * n)
        return room // (16 * n) * 4
    room, align = _room(be, 4 * n)
    per = room // (4 * n)
    if per < 1:
        raise DeviceLimitError(
            f"one batch row of N = {n} nodes ({4 * n} bytes, plus {align} bytes of alignment) does not fit the "
            f"binding limit of {rt.max_binding_size} bytes: use a graph of fewer nodes or a larger binding limit "
            f"(get_backend('wgpu', limits='adapter'))"
        )
    return per


def plan(be: Any, batch: int, n: int) -> list[tuple[int, int]] | None:
    """None when the node-major state of ``batch`` rows of ``n`` nodes fits the binding limit in
    use; else the (first row, rows) of each batch chunk, in row order.

    Raises:
        DeviceLimitError: not even one row fits. When not even 4 node-major rows fit
            (:func:`state_in_rows`) the chunks are row ranges of any count, and the plan is
            never None: the state lives in :class:`RowChunks`.
    """
    rt = be.runtime
    limit = rt.max_binding_size
    if batch == 0 or n == 0 or (_state_bytes(batch, n) <= limit and not state_in_rows(be, n)):
        return None
    _check_u32(batch * n)
    per = rows_per_range(be, n)  # the [Bc, N] rows (bound from an aligned offset) and the state fit
    return [(r0, min(per, batch - r0)) for r0 in range(0, batch, per)]


def row_e0(be: Any, r0: int, n: int) -> int:
    """The element where row ``r0`` of a [B, N] array lies in its range bound from the aligned
    offset at or before it (arrays start at aligned offsets: the same for every array)."""
    return r0 * n * 4 % be.runtime.offset_alignment // 4


def rows_view(be: Any, arr: DeviceArray, r0: int, rows: int, n: int) -> tuple[DeviceArray, int]:
    """(bindable range, e0) of rows ``r0 .. r0 + rows`` of the [B, N] array ``arr`` (4-byte
    elements; one buffer, or split over buffers with the rows in one part): the range starts
    at the aligned offset at or before row ``r0``, which lies ``e0`` elements into it
    (:func:`row_e0`, the same for both layouts)."""
    return range_view(arr, r0 * n, rows * n, be.runtime.offset_alignment)


def row_quantum(be: Any, n: int) -> int:
    """Elements per part boundary of a split [B, N] array: the rows of a batch chunk
    (:func:`rows_per_range`) times N, so no chunk crosses a part; N when not even one row fits
    a binding (such a batch cannot be chunked; the array can still be uploaded and read)."""
    try:
        return rows_per_range(be, n) * n
    except DeviceLimitError:
        return max(1, n)


def new_rows(be: Any, shape: tuple[int, ...], dtype: Any, what: str) -> DeviceArray:
    """An uninitialized array of ``shape`` for [B, N] data: one buffer up to the buffer size
    limit, else split over buffers at batch-chunk boundaries (:func:`row_quantum`; 1-D
    arrays at whole reduction workgroups of 4096 elements, or of 256 bytes under a buffer
    limit below 16 KiB). A [B, N] row past the buffer size limit (wide_rows.py) is split at
    its node blocks (:func:`new_node_block_rows`)."""
    rt = be.runtime
    if len(shape) == 2 and ptr_block(rt, shape[1]) and 4 * shape[1] > rt.pool.max_buffer_size:
        return new_node_block_rows(be, shape, dtype, what)
    if len(shape) == 2:
        quantum = row_quantum(be, shape[-1])
    else:  # whole reduction workgroups of 4096 elements where a buffer holds one, else 256 bytes
        quantum = 4096 if 4 * 4096 <= rt.pool.max_buffer_size else rt.offset_alignment // 4
    return rt.pool.new_split_array(be, shape, dtype, quantum, rt.offset_alignment, what)


def new_node_block_rows(be: Any, shape: tuple[int, ...], dtype: Any, what: str) -> DeviceArray:
    """An uninitialized array of ``shape`` ([B, N], or [N]: one row) split over buffers (past
    the buffer size limit) at the node blocks of its rows (graph_data.ptr_block: the ranges the
    row-by-row ops bind, wide_rows.py), as many consecutive blocks per buffer as fit."""
    rt = be.runtime
    n = shape[-1]
    rows = shape[0] if len(shape) == 2 else 1
    _check_u32(rows * n)
    block = ptr_block(rt, n) or max(1, n)
    cuts = [r * n + k for r in range(rows) for k in range(0, n, block)]
    return rt.pool.new_split_array(be, shape, dtype, 1, rt.offset_alignment, what, cuts=cuts or [0])


def flat_ranges(be: Any, n: int, span: int) -> list[tuple[int, int]] | None:
    """None when ``n`` 4-byte elements fit one binding; else (first element, elements) of
    ranges of whole ``span``-element workgroups that each fit it (``span * 4`` must be a
    multiple of the offset alignment)."""
    limit = be.runtime.max_binding_size
    if n * 4 <= limit:
        return None
    _check_u32(n)
    per = limit // (span * 4) * span
    if per < span:
        raise DeviceLimitError(
            f"an array of {n} elements ({n * 4} bytes) is over the binding limit of {limit} bytes, and one reduction "
            f"workgroup's range ({span * 4} bytes) does not fit it either"
        )
    return [(s, min(per, n - s)) for s in range(0, n, per)]


def flat_pieces(be: Any, n: int, span: int, arrays: list[Any], n_out: int = 0) -> Any:
    """Yield (first workgroup, elements, bindable arrays) of the dispatches of a reduction over
    ``arrays`` (flat, ``n`` 4-byte elements each; None stays None) in workgroups of ``span``
    elements, each dispatch writing the partials the unsplit one writes:

    * the arrays themselves when they fit one binding;
    * else ranges of whole workgroups (:func:`flat_ranges`), cut where a split array
      (``arrays.parts_of``) changes buffers;
    * a workgroup that straddles such a cut (a part ends inside it) runs on copies: its
      elements are copied (exact bytes) into one ``span``-element buffer per array before its
      dispatch, and the last ``n_out`` arrays (outputs) are copied back after it.
    """
    ranges = flat_ranges(be, n, span)
    if ranges is None:
        yield 0, n, arrays
        return
    rt = be.runtime
    align = rt.offset_alignment
    cuts = sorted({s for a in arrays if a is not None for s, *_ in (parts_of(a) or [])[1:]})
    for s, m in ranges:
        pos, end = s, s + m
        while pos < end:
            cut = next((c for c in cuts if c > pos), end)
            stop = end if cut >= end else pos + (cut - pos) // span * span
            if stop > pos:  # whole workgroups inside one part of every array
                yield pos // span, stop - pos, [None if a is None else range_view(a, pos, stop - pos, align)[0]
                                                for a in arrays]
                pos = stop
                continue
            stop = min(pos + span, n)  # the workgroup across the cut, on copies
            temps = [None if a is None else be.empty((span,), a.dtype) for a in arrays]
            for a, t in zip(arrays, temps):
                if a is not None:
                    _copy_elements(rt, a, pos, stop, t, to_temp=True)
            yield pos // span, stop - pos, temps
            for a, t in list(zip(arrays, temps))[len(arrays) - n_out:]:
                if a is not None:
                    _copy_elements(rt, a, pos, stop, t, to_temp=False)
            pos = stop


def copy_elements_range(rt: Any, a: DeviceArray, lo: int, hi: int, temp: DeviceArray) -> None:
    """Copy elements ``lo .. hi`` of ``a`` (one buffer or split) to the start of ``temp``."""
    _copy_elements(rt, a, lo, hi, temp, to_temp=True)


def _copy_elements(rt: Any, a: DeviceArray, lo: int, hi: int, temp: DeviceArray, to_temp: bool) -> None:
    """Copy elements ``lo .. hi`` of ``a`` (one buffer or split) to the start of ``temp``
    (``to_temp``) or back from it, outside the compute pass (the same encoder)."""
    enc = rt.submission.outside_pass()
    pieces = parts_of(a) or [(0, a.size, a.pooled, a.offset)]
    for start, count, pooled, pad in pieces:
        a0, a1 = max(lo, start), min(hi, start + count)
        if a1 <= a0:
            continue
        src = (pooled, pad + 4 * (a0 - start))
        dst = (temp.pooled, temp.offset + 4 * (a0 - lo))
        if not to_temp:
            src, dst = dst, src
        enc.copy_buffer_to_buffer(src[0].buffer, src[1], dst[0].buffer, dst[1], 4 * (a1 - a0))
        rt.submission.in_flight.add(pooled.uid)
        rt.submission.in_flight.add(temp.pooled.uid)


def large_rows(be: Any, batch: int, n: int) -> DeviceArray:
    """An uninitialized float [B, N] array that may exceed the binding limit (one buffer up to
    maxBufferSize, split over buffers past it: :func:`new_rows`), written in row ranges."""
    return new_rows(be, (batch, n), np.float32, "batched energies")


def scatter_state(be: Any, gd: Any, energies: DeviceArray, active: Any,
                  chunks: list[tuple[int, int]]) -> tuple[Chunked, Chunked | None]:
    """:func:`node_major.to_node_major` per chunk: one ``scatter_transpose`` dispatch each; or,
    when the state stays in rows (:func:`state_in_rows`), ``energies`` and ``active``
    themselves as :class:`RowChunks` (no work)."""
    n = gd.num_nodes
    batch = int(energies.shape[0])
    if state_in_rows(be, n):
        return RowChunks(energies, chunks, batch, n), None if active is None else RowChunks(active, chunks, batch, n)
    parts, acts = [], []
    for r0, rows in chunks:
        view, e0 = rows_view(be, energies, r0, rows, n)
        act_view = None if active is None else rows_view(be, active, r0, rows, n)[0]
        state, act = node_major.to_node_major(be, gd, view, act_view, batch=rows, e0=e0)
        parts.append(state)
        acts.append(act)
    starts = [r0 for r0, _ in chunks]
    act_state = None if active is None else Chunked(acts, starts, batch, n)
    return Chunked(parts, starts, batch, n, rows=energies), act_state


def scatter_step(be: Any, gd: Any, state: Chunked, pi: DeviceArray, alpha: float, active: Chunked | None,
                 retain_sinks: bool, last: bool) -> Any:
    """One step per chunk: the next :class:`Chunked` (or :class:`RowChunks`) state, or float
    [B, N] (one buffer) when ``last``."""
    n = gd.num_nodes
    if isinstance(state, RowChunks):  # rows in, rows out: per chunk, its row range of each
        out = large_rows(be, state.batch, n)
        for r0, rows in state.spans:
            (x, e0), (view, _) = rows_view(be, state.rows, r0, rows, n), rows_view(be, out, r0, rows, n)
            act = None if active is None else rows_view(be, active.rows, r0, rows, n)[0]
            node_major.scatter_rows_state(be, gd, x, rows, pi, alpha, act, retain_sinks, view, e0)
        return out if last else RowChunks(out, list(state.spans), state.batch, n)
    out = large_rows(be, state.batch, n) if last else None
    parts = []
    for i, (r0, part) in enumerate(zip(state.starts, state.parts)):
        act = None if active is None else active.parts[i]
        if last:
            view, e0 = rows_view(be, out, r0, part.batch, n)
            node_major.scatter(be, gd, part, pi, alpha, act, retain_sinks, False, out=view, e0=e0)
        else:
            parts.append(node_major.scatter(be, gd, part, pi, alpha, act, retain_sinks, True))
    return out if last else Chunked(parts, list(state.starts), state.batch, n)


def to_rows(be: Any, state: Chunked | RowChunks) -> DeviceArray:
    """``state`` as one float [B, N] array: its ``rows`` when known, else one ``scatter_rows``
    dispatch per chunk (cached on the state). A :class:`RowChunks` state is its rows."""
    if state.rows is None:
        out = large_rows(be, state.batch, state.n_nodes)
        for r0, part in zip(state.starts, state.parts):
            view, e0 = rows_view(be, out, r0, part.batch, state.n_nodes)
            node_major.rows_into(be, part, view, e0)
        state.rows = out
    return state.rows


def scatter_step_backward(be: Any, gd: Any, state: Any, pi: Any, grad_next: Any, alpha: float, active: Any,
                          retain_sinks: bool, grad_energies: bool, grad_pi_acc: Any, last: bool, backward: Any,
                          chunks: list[tuple[int, int]] | None = None) -> tuple[Any, DeviceArray]:
    """The backward of :func:`scatter_step` per chunk, in row order. ``state`` and ``active``:
    :class:`Chunked` states, or float / bool [B, N] arrays (``Backend.energy_scatter_backward``)
    split into ``chunks``; ``grad_next``: a :class:`Chunked` state or float [B, N] (one
    buffer). The input-energy gradient comes back :class:`Chunked`, or float [B, N] when
    ``last`` (None without ``grad_energies``). ``backward``: ops_backward._scatter_backward."""
    n, e = gd.num_nodes, gd.num_edges
    in_rows = isinstance(state, RowChunks)  # the state in rows: every array [B, N], gradients too
    if in_rows:
        chunks = state.spans
        state, active = state.rows, None if active is None else active.rows
        if isinstance(grad_next, RowChunks):
            grad_next = grad_next.rows
    nm = isinstance(state, Chunked)
    spans = [(r0, part.batch) for r0, part in zip(state.starts, state.parts)] if nm else chunks
    batch = state.batch if nm else int(state.shape[0])
    # the running sums: grad_pi holds the sums (in the edge windows' layout on such a graph)
    grad_pi, comp = edge_windows.edge_array(be, gd, "grad_pi"), edge_windows.edge_array(be, gd, "carry_comp")
    out = large_rows(be, batch, n) if grad_energies and (last or in_rows) else None
    parts = []
    for i, (r0, rows) in enumerate(spans):
        e0 = row_e0(be, r0, n)  # the same in every [B, N] range of these rows
        if nm:
            x, act = state.parts[i].data, None if active is None else active.parts[i].data
        else:
            x = rows_view(be, state, r0, rows, n)[0]
            act = None if active is None else rows_view(be, active, r0, rows, n)[0]
        g = grad_next.parts[i] if isinstance(grad_next, Chunked) else rows_view(be, grad_next, r0, rows, n)[0]
        view = None if out is None else rows_view(be, out, r0, rows, n)[0]
        flags = (64 if i else 0) | (128 if i < len(spans) - 1 else 0)
        call = ChunkCall(rows=rows, e0=e0, out=view, grad_pi=grad_pi, comp=comp, carry=flags)
        ge, _ = backward(be, gd, x, act, nm, pi, g, alpha, retain_sinks, grad_energies, grad_pi_acc,
                         (rows, n) if last or in_rows else None, chunk=call)
        if grad_energies and not last:
            parts.append(ge)
    if not grad_energies:
        return None, grad_pi
    if in_rows and not last:
        return RowChunks(out, list(spans), batch, n), grad_pi
    return (out if last else Chunked(parts, [r0 for r0, _ in spans], batch, n)), grad_pi
