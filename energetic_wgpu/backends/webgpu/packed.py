"""Packed arrays of the wgpu backend: several arrays as views into ONE pooled buffer.

``Router.set_params`` packs q, k and bias and ``AdamW`` allocates m and v with the same layout,
so the optimizer update is one dispatch (``adamw_update_packed``, ops_train.py).

Past one storage binding (the binding limit in use, 128 MiB on WebGPU's default limits) the
packed array is split, never refused for its total size:

* total <= the buffer size limit (maxBufferSize, 256 MiB by default): still ONE buffer
  (``BufferPool.new_large_array``) with the same layout; the ops that would bind it whole
  (the fused AdamW update) run over ranges of at most one binding from aligned offsets;
* larger: each region is a buffer of its own (whole arrays, not views); the optimizer
  updates them one array at a time (``adamw_update``).

A region past one binding is a buffer of its own (or several), and AdamW updates it in
ranges: a 2-D region (q, k [N, d]) split at node blocks (node_rows.py: the ops run over row
windows), a 1-D region given as a device array (``backend.edge_input``: an [E] array of a graph
cut into edge windows) in its layout (one buffer bound in ranges, or split at its windows).
Any other 1-D region past one binding is refused with :class:`DeviceLimitError` before
anything is allocated.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ...errors import DeviceLimitError
from .arrays import DeviceArray, parts_of
from . import node_rows
from .edge_windows import copy_elements

__all__ = ["PackedArrays"]


class PackedArrays:
    """Mixin of :class:`WgpuBackend`: :meth:`pack` and :meth:`zeros_like_packed`."""

    runtime: Any
    _host: Any  # WgpuBackend._host: (host array, device dtype) of an input

    def _packed_layout(self, nbytes: Sequence[int]) -> tuple[list[int], int]:
        """(byte offsets, total bytes) of regions of ``nbytes`` bytes, each at a multiple of
        the device's storage offset alignment with room for its bound range."""
        rt = self.runtime
        align = rt.offset_alignment
        offsets, off = [], 0
        for n in nbytes:
            offsets.append(off)
            off += -(-rt.view_bind_size(n) // align) * align
        return offsets, max(off, 16)

    def _views(self, total: int, offsets: Sequence[int], shapes: Sequence[tuple[int, ...]],
               dtypes: Sequence[Any], cuts: Sequence[Any] | None = None) -> tuple[list[DeviceArray], list[DeviceArray]]:
        """(the buffers' arrays, the region arrays): views into one buffer of ``total`` bytes,
        or one whole array per region when ``total`` exceeds the buffer size limit or a 1-D
        region with ``cuts`` (element offsets: an [E] array's edge windows) exceeds one binding
        (that region then split over buffers at those cuts)."""
        rt = self.runtime
        if total <= rt.max_binding_bytes:  # the common case: one buffer, bound whole
            flat = rt.new_array(self, (total // 4,), np.float32, "packed arrays")
            return [flat], [rt.view(flat, o, shp, dt) for o, shp, dt in zip(offsets, shapes, dtypes)]
        cuts = list(cuts) if cuts is not None else [None] * len(shapes)
        big = []
        for i, shp in enumerate(shapes):
            need = rt.view_bind_size(math.prod(shp) * 4)
            if need > rt.max_binding_bytes:
                if cuts[i] is None and len(shp) != 2:
                    desc, where = rt.pool.limit_desc
                    raise DeviceLimitError(
                        f"packed array {i} of shape {shp} needs {need} bytes, over {desc} = {rt.max_binding_bytes} "
                        f"bytes ({where}); each 1-D packed array must fit one storage binding, except an [E] "
                        f"array of a graph cut into edge windows: use a smaller graph, or limits='adapter'"
                    )
                big.append(i)
        if total <= rt.max_buffer_bytes and not big:  # one buffer, bound in ranges (ops_train.adamw_step)
            flat = rt.pool.new_large_array(self, (total // 4,), np.float32, "packed arrays")
            return [flat], [rt.view(flat, o, shp, dt) for o, shp, dt in zip(offsets, shapes, dtypes)]
        # one buffer per region; an [E] region past one binding in its graph's edge windows'
        # layout (edge_windows.py; the optimizer updates it in ranges)
        regions = [node_rows.new_node_rows(self, shp[0], shp[1], "packed array") if i in big and len(shp) == 2
                   else rt.pool.new_split_array(self, shp, dt, 1, rt.offset_alignment, "packed array", cuts=cuts[i])
                   if i in big else rt.new_array(self, shp, dt, "packed array")
                   for i, (shp, dt) in enumerate(zip(shapes, dtypes))]
        return regions, regions

    def pack(self, arrays: Sequence[Any]) -> list[DeviceArray]:
        """The arrays uploaded into ONE pooled buffer: a list of views, region i at a multiple
        of the device's minStorageBufferOffsetAlignment (256 by default), the layout a function
        of the sizes (and the limits in use) only; over the buffer size limit, one buffer per
        array (see the module docstring). A DeviceArray of this backend is copied on the device.

        Raises:
            DeviceLimitError: an array larger than one storage binding (bytes and limit named).
        """
        items = []
        for a in arrays:
            if isinstance(a, DeviceArray) and a.backend is self:
                items.append((a, a.shape, a.dtype))
            else:
                host, dt = self._host(a, None)
                items.append((host, host.shape, dt))
        if not items:
            return []
        offsets, total = self._packed_layout([math.prod(shp) * 4 for _, shp, _ in items])
        cuts = [_cuts_of(src) for src, _, _ in items]
        _, views = self._views(total, offsets, [shp for _, shp, _ in items], [dt for _, _, dt in items], cuts)
        for (src, _, _), view in zip(items, views):
            if isinstance(src, DeviceArray) and (src.is_split or view.is_split):
                copy_elements(self, src, view)
            elif isinstance(src, DeviceArray):
                self.runtime.copy_buffer(src, view, src.size * 4)
            else:
                self.runtime.write(view, src.reshape(-1))
        return views

    def zeros_like_packed(self, arrays: Sequence[Any]) -> list[DeviceArray]:
        """Zero-filled float32 views in one new buffer: at the offsets of ``arrays`` when they
        are views of one buffer (the layout of a :meth:`pack`), else in a fresh packed layout
        (one buffer per array over the buffer size limit, as :meth:`pack`)."""
        arrays = list(arrays)
        if not arrays:
            return []
        shapes = [tuple(int(s) for s in a.shape) for a in arrays]
        first = arrays[0]
        cuts = [_cuts_of(a) if getattr(a, "is_split", False) or a.nbytes > self.runtime.max_binding_bytes else None
                for a in arrays]
        if any(c is not None for c in cuts):  # an [E] region past one binding: its layout again
            offsets, total = self._packed_layout([math.prod(s) * 4 for s in shapes])
            buffers, views = self._views(total, offsets, shapes, [np.float32] * len(shapes), cuts)
            for b in buffers:
                for part in parts_of(b) or [None]:
                    self.runtime.clear(b if part is None else part[2])
            return views
        if all(isinstance(a, DeviceArray) and a.backend is self and a.is_view and a.pooled is first.pooled
               for a in arrays):
            offsets = [a.offset for a in arrays]
            rt = self.runtime
            total = max(o + rt.view_bind_size(math.prod(s) * 4) for o, s in zip(offsets, shapes))
        else:
            offsets, total = self._packed_layout([math.prod(s) * 4 for s in shapes])
        buffers, views = self._views(total, offsets, shapes, [np.float32] * len(shapes))
        for b in buffers:
            self.runtime.clear(b)
        return views


def _cuts_of(a: Any) -> list[int] | None:
    """For a DeviceArray (an [E] array in its graph's edge windows' layout, ``edge_input``):
    where its buffers start ([0]: one buffer); None for host data (whose regions must fit one
    binding)."""
    if not isinstance(a, DeviceArray):
        return None
    parts = parts_of(a)
    return [0] if parts is None else [start for start, *_ in parts]
