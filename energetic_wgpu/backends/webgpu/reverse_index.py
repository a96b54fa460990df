"""The reverse (CSC) index on the device: packed (edge, source) pairs, or split past one binding.

The kernels that walk a node's incoming edges (the scatter, ``energy_scatter.wgsl``; grad_k,
``segment_backward.wgsl`` mode 1 and ``logits_backward.wgsl`` mode 1) read entry r of the
reverse index as the pair ``rev_pairs[r] = (edge, source)`` (u32 [E, 2]) and a per-edge value
at that edge (pi, grad_logits). The pairs take 8 bytes per edge, so they exceed one storage
binding first (E > 16.7 M on WebGPU's default limits, where every other edge array still fits
up to E = 33.5 M). Then :func:`upload` keeps two u32 [E] arrays instead, the sources by target
and the edges by target, and :func:`reverse_inputs` gathers the per-edge value into
reverse-index order first (one ``gather`` dispatch, elementwise.wgsl: ``values[edge_r]`` at r), so each kernel
reads entry r's source at r and its value at r. The terms, and every sum over them, are the
same numbers in the same order: the results are bit-identical to the packed layout. Past
E = 33.5 M on default limits the [E] arrays do not fit one binding either: the graph is cut
into edge windows (edge_windows.py), which have no reverse index yet.

The layout is decided when the graph is uploaded (``backend.graph_data``), with the binding
limit in use then.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["upload", "reverse_inputs"]


def upload(up: Any, graph: Any, max_binding_bytes: int) -> dict[str, Any]:
    """The reverse-index fields of :class:`GraphData`: ``rev_pairs`` u32 [E, 2] (edge, source)
    when 8·E bytes fit one binding of ``max_binding_bytes``, else ``rev_src`` and ``rev_edges``
    u32 [E] (the split layout). ``up`` uploads a numpy array as u32."""
    rev_perm = graph.rev_perm
    if 8 * graph.num_edges <= max_binding_bytes:
        pairs = np.stack([rev_perm, graph.src[rev_perm]], axis=1) if graph.num_edges else np.zeros((0, 2))
        return dict(rev_pairs=up(pairs), rev_src=None, rev_edges=None)
    return dict(rev_pairs=None, rev_src=up(graph.src[rev_perm]), rev_edges=up(rev_perm))


def reverse_inputs(be: Any, gd: Any, values: Any) -> tuple[Any, Any, bool]:
    """(the index array to bind, the per-edge float values to bind, split?) for a kernel that
    walks ``gd``'s reverse index reading ``values`` (float [E]) at each entry's edge: the pairs
    and ``values`` as they are, or (split layout) the sources by target and ``values`` gathered
    into reverse-index order (a new float [E] array, one ``gather`` dispatch)."""
    if gd.rev_edges is None:
        return gd.rev_pairs, values, False
    e = gd.num_edges
    out = be.empty((e,))
    be.runtime.dispatch("gather", threads=e, uniform=dict(n=e, lo=0, count=0, base=0, off=0, dim=0), a=values,
                        index=gd.rev_edges, out=out)
    return gd.rev_src, out, True
