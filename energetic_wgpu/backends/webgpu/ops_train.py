"""Losses and the clipped AdamW step of the wgpu backend (docs/definitions.md §5-6), all on the device.

Each function takes the :class:`WgpuBackend` as its first argument and follows the
docstring of the matching method of :class:`energetic_wgpu.backends.base.Backend`.

Losses are fixed-order two-pass reductions (``losses.wgsl``); the mse count comes from the
mask on the device (with a mask, ``mse_grad_counted`` sums the count partials itself, so the
gradient does not wait for ``loss_final``). ``mse(..., final=False)`` (what ``Router.train_step``
asks for) leaves the second pass to the ``adamw_step`` given that loss, which reduces the
partials in ``adamw_prepare`` with loss_final's code (the same bits); :func:`finish_loss`
encodes ``loss_final`` if no optimizer step took it over. ``adamw_step`` never reads back:

1. the sum-of-squares partials of every gradient: those the backward kernels wrote while
   producing them (``softmax_logits_backward``: sumsq.py), or else ``sumsq_partials``
   (reduce.wgsl) into one persistent partials buffer (one dispatch covers up to three
   gradients: :func:`sumsq_partials`);
2. ``adamw_prepare`` (one workgroup): the global norm, the step's mse loss when it was left
   unfinished, the clip coefficient
   min(1, max_norm / (norm + 1e-6)), t += 1 in the device step buffer, the bias corrections
   1 - beta^t from t — written to a persistent scalar buffer, the norm also to a new [1]
   array that is returned. The non-finite guard lives here too: a NaN/inf sum of squares or
   loss skips the step (t unchanged, the skip counters of a [3] step buffer advanced, a skip
   flag in the scalar buffer that the update kernels obey, 1.0 in a new [1] skip array);
3. the update. When the parameters, m and v are each views into one flat buffer with the
   same layout (``backend.pack`` / ``zeros_like_packed``: ``Router.set_params`` and ``AdamW``
   allocate them so) and there are at most 3 of them, ONE ``adamw_update_packed`` dispatch
   updates every parameter: it binds the three flat buffers whole, the (up to 3) gradient
   arrays separately, the scalar buffer and the lr ring — 8 storage bindings, WebGPU's
   default limit — and the uniform carries each region's offset and length. Otherwise (arrays
   that are not so laid out) ``adamw_update`` runs once per parameter array. Both kernels do
   the same arithmetic in the same order: bit-identical results.

The learning rate changes from step to step (schedules) but must not allocate: it lives in a
small persistent ``hyper`` ring of RING slots (lr, 1 - lr*wd), written by
``queue.write_buffer``; the dispatch's uniform only names the slot, so the set of uniform
contents (and bind groups) stays bounded. ``write_buffer`` runs at the next submit *before*
the pending encoder's commands, so a slot is rewritten only if no command of the pending
encoder reads it; when every slot is taken by pending steps the encoder is flushed first.
A constant lr reuses one slot forever.

Each ``adamw_step`` ends by flushing the pending encoder once ``steps_per_submit`` optimizer
steps have been encoded (default 1, set with :func:`set_steps_per_submit`): a steady-state
``Router.train_step`` is exactly one ``queue.submit``.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Sequence

import numpy as np

from . import batch_chunks, edge_windows, sumsq
from .arrays import binding_ranges, parts_of, range_view
from .kernels import REDUCE_ITEMS

__all__ = [
    "mse",
    "cross_entropy",
    "entropy_regularization",
    "adamw_step",
    "set_steps_per_submit",
    "sumsq_partials",
    "finish_loss",
    "RING",
]

_SPAN = 256 * REDUCE_ITEMS  # elements per reduction workgroup
#: a masked mse whose partials number at most this (n <= 4M) sums its count in the gradient
#: kernel (every workgroup reads every count partial: n_parts^2 reads)
COUNTED_PARTS_MAX = 1024
#: slots of the learning-rate ring
RING = 16


# ------------------------------------------------------------------ losses
def _parts(n: int) -> int:
    return -(-n // _SPAN)


def sumsq_partials(rt: Any, arrays: Sequence[Any], partials: Any, be: Any = None) -> int:
    """Per-workgroup sums of squares of ``arrays`` (float32 device arrays) into ``partials``
    [>= the returned count], in order: one ``sumsq_partials`` dispatch per three arrays. With
    an array past one binding (or split over buffers; ``be`` given), one array at a time, a
    large one over ranges of whole workgroups (batch_chunks.flat_pieces): the same partials.
    Returns the number of partials written."""
    offset = 0
    if be is not None and any(a.is_split or a.nbytes > rt.max_binding_bytes for a in arrays):
        for a in arrays:
            for w0, m, (x,) in batch_chunks.flat_pieces(be, a.size, _SPAN, [a]) if a.size else ():
                rt.dispatch("sumsq_partials", workgroups=_parts(m), uniform=dict(n=m, out_offset=offset + w0, n1=0,
                            n2=0), x=x, x1=rt.dummy(), x2=rt.dummy(), result=partials)
            offset += _parts(a.size)
        return offset
    for i in range(0, len(arrays), 3):
        group = list(arrays[i:i + 3])
        sizes = [a.size for a in group] + [0] * (3 - len(group))
        count = sum(_parts(s) for s in sizes)
        x0, x1, x2 = group + [rt.dummy()] * (3 - len(group))
        if count:
            rt.dispatch("sumsq_partials", workgroups=count, uniform=dict(n=sizes[0], out_offset=offset, n1=sizes[1],
                        n2=sizes[2]), x=x0, x1=x1, x2=x2, result=partials)
        offset += count
    return offset


def _pieces(be: Any, n: int, *arrays: Any) -> Any:
    """(first workgroup, elements, arrays) of each partials dispatch over ``arrays`` (flat, n
    4-byte elements each; None stays None; the last one the gradient written): the arrays
    themselves when they fit one binding, else ranges of whole reduction workgroups
    (batch_chunks.flat_pieces), each dispatch then writing the partials the unsplit one
    writes."""
    return batch_chunks.flat_pieces(be, n, _SPAN, list(arrays), n_out=1)


def _grad_like(be: Any, pred: Any) -> Any:
    """An uninitialized float array of ``pred``'s shape (one buffer past one binding, written in ranges)."""
    return batch_chunks.new_rows(be, pred.shape, np.float32, "loss gradient")


def mse(backend: Any, pred: Any, target: Any, mask: Any = None, final: bool = True) -> tuple[Any, Any]:
    be, rt = backend, backend.runtime
    pred, target = be._dev(pred), be._dev(target)
    n = pred.size
    loss = be.empty((1,))
    grad = _grad_like(be, pred)
    parts = _parts(n)
    partials = be.empty((2 * parts + 1,))
    mask = None if mask is None else be._dev(mask)
    # no mask: the count is n, and mse_partials writes the gradient too (flags bit 1)
    u = dict(n=n, flags=2 if mask is None else 1, n_parts=parts, mode=0, mul=0.0, div=0.0, eps=0.0, lam=0.0, w0=0,
             n_all=n)
    counted = mask is not None and parts <= COUNTED_PARTS_MAX
    for w0, m, (p, t, mk, g) in _pieces(be, n, pred, target, mask, grad):
        uc = u if m == n else {**u, "n": m, "w0": w0}
        rt.dispatch("mse_partials", workgroups=_parts(m), uniform=uc, pred=p, target_=t, mask=be._opt(mk),
                    partials=partials, grad=g)
    if counted:  # the gradient kernel sums the counts itself: loss_final is not needed first
        for w0, m, (p, t, mk, g) in _pieces(be, n, pred, target, mask, grad):
            uc = u if m == n else {**u, "n": m, "w0": w0}
            rt.dispatch("mse_grad_counted", workgroups=_parts(m), uniform=uc, pred=p, target_=t, mask=mk,
                        partials=partials, grad=g)
    if final or (mask is not None and not counted):
        rt.dispatch("loss_final", workgroups=1, uniform=u, partials=partials, loss=loss)
    else:  # the next adamw_step given this loss finishes it (adamw_prepare), else finish_loss
        _state(be).pending_loss[loss] = (partials, parts, u)
    if mask is not None and not counted:
        for w0, m, (p, t, mk, g) in _pieces(be, n, pred, target, mask, grad):
            uc = u if m == n else {**u, "n": m, "w0": w0}
            rt.dispatch("mse_grad", threads=m, uniform=uc, pred=p, target_=t, mask=mk, partials=partials, grad=g)
    return loss, grad


def finish_loss(backend: Any, loss: Any) -> None:
    """Encode the final reduction of a loss that ``mse(..., final=False)`` left unfinished and
    no ``adamw_step`` took over (nothing to do otherwise)."""
    st = _STATES.get(backend)
    pending = None if st is None or loss is None else st.pending_loss.pop(loss, None)
    if pending is not None:
        partials, _, u = pending
        backend.runtime.dispatch("loss_final", workgroups=1, uniform=u, partials=partials, loss=loss)


def cross_entropy(backend: Any, pred: Any, target: Any, eps: float = 1e-12) -> tuple[Any, Any]:
    be, rt = backend, backend.runtime
    pred, target = be._dev(pred), be._dev(target)
    batch = 1 if pred.ndim == 1 else int(pred.shape[0])
    n = pred.size
    loss = be.empty((1,))
    grad = _grad_like(be, pred)
    parts = _parts(n)
    partials = be.empty((2 * parts + 1,))
    u = dict(n=n, flags=0, n_parts=parts, mode=1, mul=-1.0, div=max(batch, 1), eps=np.float32(eps), lam=0.0, w0=0,
             n_all=n)
    for w0, m, (p, t, g) in _pieces(be, n, pred, target, grad):
        uc = u if m == n else {**u, "n": m, "w0": w0}
        rt.dispatch("ce_partials", workgroups=_parts(m), uniform=uc, pred=p, target_=t, partials=partials, grad=g)
    rt.dispatch("loss_final", workgroups=1, uniform=u, partials=partials, loss=loss)  # n_parts = 0 gives 0
    return loss, grad


def entropy_regularization(backend: Any, graph: Any, pi: Any, lam: float) -> tuple[Any, Any]:
    be, rt = backend, backend.runtime
    pi = be._dev(pi)
    n = pi.size
    loss = be.empty((1,))
    gd = be.graph_data(graph)
    if gd.windows is not None:  # pi and its gradient in the edge windows' layout (edge_windows.py)
        pi = edge_windows.in_windows(be, gd, pi, "pi")
        grad = edge_windows.edge_array(be, gd, "entropy gradient")
    else:
        grad = be.empty(pi.shape)
    parts = _parts(n)
    partials = be.empty((2 * parts + 1,))
    lam32 = np.float32(lam)
    u = dict(n=n, flags=0, n_parts=parts, mode=1, mul=-lam32, div=1.0, eps=0.0, lam=lam32, w0=0, n_all=n)
    # ranges of whole workgroups past one binding (a block across two windows on copies)
    for w0, m, (p, g) in batch_chunks.flat_pieces(be, n, _SPAN, [pi, grad], n_out=1):
        uc = u if m == n else {**u, "n": m, "w0": w0}
        rt.dispatch("ent_partials", workgroups=_parts(m), uniform=uc, pred=p, partials=partials, grad=g)
    rt.dispatch("loss_final", workgroups=1, uniform=u, partials=partials, loss=loss)
    return loss, grad


# ------------------------------------------------------------------ AdamW
class _TrainState:
    """Persistent per-backend buffers of the optimizer step (never reallocated per step)."""

    def __init__(self, backend: Any) -> None:
        # not backend.zeros: its clear_buffer is encoded and would run *after* the first
        # write_buffer into a slot (write_buffer runs at submit, before the encoder's commands)
        self.hyper = backend.empty((2 * RING,))
        backend.runtime.upload(self.hyper.pooled, np.zeros(2 * RING, dtype=np.float32))
        self.slot_values: list[tuple[float, float] | None] = [None] * RING
        self.slot_epoch = [-1] * RING  # submit count when the slot was last bound (pending if current)
        self.last_slot = 0
        self.scratch: dict[tuple[int, ...], tuple[Any, Any]] = {}  # sizes -> (partials, scal)
        self.steps_per_submit = 1
        self.unsubmitted_steps = 0
        self.epoch_seen = -1
        self.uniforms: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        # mse losses left unfinished (final=False) -> (partials, partial count, uniform)
        self.pending_loss: "weakref.WeakKeyDictionary[Any, tuple[Any, int, dict[str, Any]]]" = (
            weakref.WeakKeyDictionary()
        )


_STATES: "weakref.WeakKeyDictionary[Any, _TrainState]" = weakref.WeakKeyDictionary()


def _state(backend: Any) -> _TrainState:
    st = _STATES.get(backend)
    if st is None:
        st = _STATES[backend] = _TrainState(backend)
    return st


def set_steps_per_submit(backend: Any, n: int) -> None:
    """Submit the pending encoder after every ``n`` optimizer steps (default 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"steps_per_submit must be an int >= 1, got {n!r}")
    _state(backend).steps_per_submit = n


def _lr_slot(backend: Any, st: _TrainState, lr32: np.float32, wdf32: np.float32) -> int:
    """A ring slot holding (lr, 1 - lr*wd), written without disturbing pending commands."""
    rt = backend.runtime
    value = (float(lr32), float(wdf32))
    epoch = rt.counters.submits
    if st.slot_values[st.last_slot] == value:
        slot = st.last_slot
    else:
        slot = next((i for i in range(RING) if st.slot_values[i] == value), -1)
        if slot < 0:
            pending = [st.slot_epoch[i] == epoch for i in range(RING)]
            free = [i for i in range(1, RING + 1) if not pending[(st.last_slot + i) % RING]]
            if not free:
                rt.flush()  # every slot is read by a pending step: submit them first
                epoch = rt.counters.submits
                free = [1]
            slot = (st.last_slot + free[0]) % RING
            data = np.array(value, dtype=np.float32)
            rt.upload(st.hyper.pooled, data, slot * 8, flush_pending=False)  # no pending step reads the slot
            st.slot_values[slot] = value
    st.slot_epoch[slot] = epoch
    st.last_slot = slot
    return slot


_LAYOUTS: dict[tuple[Any, ...], tuple[tuple[int, ...], int]] = {}


def _packed_layout(
    params: Sequence[Any], grads: Sequence[Any], exp_avg: Sequence[Any], exp_avg_sq: Sequence[Any]
) -> tuple[tuple[Any, Any, Any], tuple[int, ...], int] | None:
    """((P, M, V pooled buffers), uniform tail (offsets, lengths), elements to cover) when the
    fused update applies: 1 to 3 float32 parameters, each group (params, m, v) views into one
    buffer of its own, the same offsets and sizes in all three, gradients of the same sizes
    outside those buffers. None otherwise (the per-array path)."""
    n = len(params)
    if not 1 <= n <= 3 or not (len(grads) == len(exp_avg) == len(exp_avg_sq) == n):
        return None
    if any(getattr(a, "is_split", False) for group in (params, grads, exp_avg, exp_avg_sq) for a in group):
        return None  # an array over several buffers (edge windows): the per-array path, in ranges
    try:
        p0, m0, v0 = params[0], exp_avg[0], exp_avg_sq[0]
        P, M, V = p0.pooled, m0.pooled, v0.pooled
        if P is M or P is V or M is V:
            return None
        offs = []
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
            if not (p.is_view and m.is_view and v.is_view):
                return None
            if p.pooled is not P or m.pooled is not M or v.pooled is not V:
                return None
            off = p.offset
            if m.offset != off or v.offset != off or off % 4:
                return None
            size = p.size
            if m.size != size or v.size != size or g.size != size:
                return None
            if p.dtype != np.float32 or g.dtype != np.float32 or m.dtype != np.float32 or v.dtype != np.float32:
                return None
            gp = g.pooled
            if gp is P or gp is M or gp is V:
                return None
            offs.append((off // 4, size))
    except AttributeError:  # not DeviceArrays
        return None
    key = tuple(offs)
    hit = _LAYOUTS.get(key)
    if hit is None:
        if any(o1 + n1 > o2 for (o1, n1), (o2, _) in zip(offs, offs[1:])):
            return None  # regions out of order or overlapping: per-array path
        n_total = offs[-1][0] + offs[-1][1]
        pad = 3 - n
        o = [x for x, _ in offs] + [n_total] * pad
        ln = [y for _, y in offs] + [0] * pad
        hit = (tuple(o) + (0,) + tuple(ln) + (0,), n_total)
        if len(_LAYOUTS) > 64:
            _LAYOUTS.clear()
        _LAYOUTS[key] = hit
    tail, n_total = hit
    return (P, M, V), tail, n_total


def packed_ranges(offsets: Sequence[tuple[int, int]], n_total: int, limit: int) -> list[tuple[int, int, list]]:
    """The ranges of a packed buffer that ``adamw_update_packed`` updates one dispatch each when
    the buffer is larger than one binding of ``limit`` bytes: consecutive ranges [start, end)
    of ``limit`` rounded down to 256 bytes (64 elements; the last one shorter) from element 0,
    so every start is 256-byte aligned (WebGPU's largest storage offset alignment), each with
    the parts of the regions ((element offset, length), in order) it holds as (region index,
    first element of the region in the range, length)."""
    step = limit // 256 * 64
    out = []
    for start in range(0, n_total, step):
        end = min(start + step, n_total)
        parts = []
        for r, (off, ln) in enumerate(offsets):
            lo, hi = max(off, start), min(off + ln, end)
            if lo < hi:
                parts.append((r, lo - off, hi - lo))
        if parts:
            out.append((start, end, parts))
    return out


def _update_packed_ranges(rt: Any, params: Sequence[Any], grads: Sequence[Any], exp_avg: Sequence[Any],
                          exp_avg_sq: Sequence[Any], n_total: int, slot: int, hyper: dict[str, Any], scal: Any,
                          hyper_buf: Any) -> None:
    """``adamw_update_packed`` over :func:`packed_ranges` of the flat parameter, m and v buffers
    (each range bound as a view from its aligned start, the gradients as views of the same
    elements): the same arithmetic per element as one dispatch, so the same bits."""
    first = params[0].offset // 4  # element offsets from region 0's (aligned) start
    regions = [(p.offset // 4 - first, p.size) for p in params]
    for start, end, parts in packed_ranges(regions, n_total - first, rt.max_binding_bytes):
        n = end - start
        flat = [rt.view(a[0], start * 4, (n,)) for a in (params, exp_avg, exp_avg_sq)]
        offs, lens, gs = [], [], []
        for r, j0, ln in parts:
            offs.append(regions[r][0] + j0 - start)
            lens.append(ln)
            gs.append(rt.view(grads[r], j0 * 4, (ln,)))
        pad = 3 - len(parts)
        g0, g1, g2 = gs + [rt.dummy()] * pad
        u = dict(n=n, slot=slot, **hyper, off=tuple(offs + [n] * pad + [0]), len=tuple(lens + [0] * pad + [0]))
        rt.dispatch("adamw_update_packed", threads=n, uniform=u, p_flat=flat[0], m_flat=flat[1], v_flat=flat[2],
                    grad0=g0, grad1=g1, grad2=g2, scal_p=scal, hyper_p=hyper_buf)


def _update_in_ranges(rt: Any, group: Sequence[Any], slot: int, hyper: dict[str, Any], scal: Any,
                      hyper_buf: Any) -> None:
    """``adamw_update`` of one parameter array past one binding (param, grad, m, v: one buffer
    or split over buffers, arrays.parts_of) over ranges that fit one binding and lie in one
    buffer of each of the four: bound from the aligned offset before them, where the range
    starts ``e0`` elements in (the same in the four, whatever their buffers). Each element's
    arithmetic is the one dispatch's: the same bits."""
    for s, count in binding_ranges(group, rt.max_binding_bytes, rt.offset_alignment):
        (p, e0), g, m, v = (range_view(a, s, count, rt.offset_alignment) for a in group)
        u = dict(n=count, slot=slot, e0=e0, **hyper)
        rt.dispatch("adamw_update", threads=count, uniform=u, param=p, grad=g[0], exp_avg=m[0], exp_avg_sq=v[0],
                    scal=scal, hyper=hyper_buf)


def adamw_step(
    backend: Any,
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avg: Sequence[Any],
    exp_avg_sq: Sequence[Any],
    step: Any,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    max_grad_norm: float | None,
    loss: Any = None,
    return_skipped: bool = False,
) -> Any:
    be, rt = backend, backend.runtime
    st = _state(be)
    grads = [be._dev(g) for g in grads]
    counts = tuple(_parts(g.size) for g in grads)
    key = tuple(g.size for g in grads)
    scratch = st.scratch.get(key)
    if scratch is None:
        scratch = st.scratch[key] = (be.empty((max(1, sum(counts)),)), be.empty((8,)))
    partials, scal = scratch
    recorded = sumsq.partials_for(be, grads)  # the backward kernels' own partials
    if recorded is None:
        offset = sumsq_partials(rt, grads, partials, be)
    else:
        partials, offset = recorded
    norm = be.empty((1,))
    skipped = be.empty((1,))
    pending = None if loss is None else st.pending_loss.pop(loss, None)
    # absent: the gradient partials stand in (read-only twice is allowed; the dummy is bound
    # writable as loss_io when there is no loss)
    loss_parts, n_loss = (partials, 0) if pending is None else pending[:2]
    has_loss = 0 if loss is None else (1 if pending is None else 2)
    counters = 1 if step.size >= 3 else 0

    # the uniform fields depend only on the hyper-parameters (cached: the same values give the
    # same fields, hence the same bytes)
    hkey = (offset, beta1, beta2, eps, max_grad_norm, has_loss, counters, n_loss)
    cached = st.uniforms.get(hkey)
    if cached is None:

        def log_beta(b: float) -> np.float32:
            return np.float32(math.log(b)) if b > 0 else np.float32(-1e30)

        clip = max_grad_norm is not None
        u_prep = dict(n_parts=offset, clip=1 if clip else 0, has_loss=has_loss, counters=counters,
                      max_norm=np.float32(max_grad_norm if clip else 0.0), log_b1=log_beta(beta1),
                      log_b2=log_beta(beta2), n_loss=n_loss)
        hyper = dict(b1=np.float32(beta1), omb1=np.float32(1.0 - beta1), b2=np.float32(beta2),
                     omb2=np.float32(1.0 - beta2), eps=np.float32(eps))
        cached = (u_prep, hyper)
        if len(st.uniforms) > 64:
            st.uniforms.clear()
        if all(x is None or x != 0 for x in hkey[:5]):  # 0 == 0.0 == -0.0 as keys: not cached
            st.uniforms[hkey] = cached
    u_prep, hyper = cached
    loss_buf = rt.dummy() if loss is None else be._dev(loss)
    rt.dispatch("adamw_prepare", workgroups=1, uniform=u_prep, partials=partials, step_count=step, scal_w=scal,
                norm_out=norm, loss_io=loss_buf, skip_out=skipped, loss_parts=loss_parts)

    slot = _lr_slot(be, st, np.float32(lr), np.float32(1.0 - lr * weight_decay))
    packed = _packed_layout(params, grads, exp_avg, exp_avg_sq)
    if packed is not None:
        (pb, mb, vb), tail, n_total = packed
        if max(pb.size, mb.size, vb.size) > rt.max_binding_bytes:  # past one binding: in ranges
            _update_packed_ranges(rt, params, grads, exp_avg, exp_avg_sq, n_total, slot, hyper, scal, st.hyper)
        else:
            g0, g1, g2 = list(grads) + [rt.dummy()] * (3 - len(grads))
            u = dict(n=n_total, slot=slot, **hyper, off=tail[:4], len=tail[4:])
            rt.dispatch("adamw_update_packed", threads=n_total, uniform=u, p_flat=pb, m_flat=mb, v_flat=vb,
                        grad0=g0, grad1=g1, grad2=g2, scal_p=scal, hyper_p=st.hyper)
    else:
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
            group = (p, g, m, v)
            if any(parts_of(a) is not None or a.nbytes > rt.max_binding_bytes for a in group):
                _update_in_ranges(rt, group, slot, hyper, scal, st.hyper)  # a region past one binding
                continue
            u = dict(n=p.size, slot=slot, e0=0, **hyper)
            rt.dispatch("adamw_update", threads=p.size, uniform=u, param=p, grad=g, exp_avg=m, exp_avg_sq=v, scal=scal,
                        hyper=st.hyper)

    if st.epoch_seen != rt.counters.submits:
        st.epoch_seen = rt.counters.submits
        st.unsubmitted_steps = 0
    st.unsubmitted_steps += 1
    if st.unsubmitted_steps >= st.steps_per_submit:
        rt.flush()
        st.epoch_seen = rt.counters.submits
        st.unsubmitted_steps = 0
    return (norm, skipped) if return_skipped else norm
