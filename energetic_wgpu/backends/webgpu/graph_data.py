"""The device copies of a graph's index arrays (uploaded once per graph by the backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...graph import Graph
from .arrays import DeviceArray
from .kernels import GROUP_DEGREE_MAX, SMALL_DEGREE_MAX, THREAD_DEGREE_MAX

__all__ = ["GraphData", "DegreeBins", "degree_bins", "upload_graph"]

#: segments per workgroup of the forward's thread bin and 32-lane-group bin (edge_probs.wgsl)
_THREADS_PER_WG = 64
_GROUPS_PER_WG = 2


@dataclass(frozen=True)
class DegreeBins:
    """The forward's degree bins of one graph (edge_probs.wgsl): ``nodes`` (int64) lists the
    nodes of out-degree 1..THREAD_DEGREE_MAX (``n_small``), then THREAD+1..GROUP_DEGREE_MAX
    (``n_mid``), then larger (``n_hub``), each in node order. ``small_wg`` and ``mid_wg``
    are the workgroups of the first two bins (64 segments and 2 segments per workgroup of 64),
    ``workgroups`` their sum: the ``edge_probs`` dispatch (hubs: ``edge_probs_hub``, one
    workgroup each)."""

    nodes: np.ndarray
    n_small: int
    n_mid: int
    n_hub: int

    @property
    def small_wg(self) -> int:
        return -(-self.n_small // _THREADS_PER_WG)

    @property
    def mid_wg(self) -> int:
        return -(-self.n_mid // _GROUPS_PER_WG)

    @property
    def workgroups(self) -> int:
        return self.small_wg + self.mid_wg


def degree_bins(out_degree: np.ndarray) -> DegreeBins:
    """The :class:`DegreeBins` of a graph with these out-degrees ([N] int)."""
    deg = np.asarray(out_degree)
    small = np.flatnonzero((deg >= 1) & (deg <= THREAD_DEGREE_MAX))
    mid = np.flatnonzero((deg > THREAD_DEGREE_MAX) & (deg <= GROUP_DEGREE_MAX))
    hub = np.flatnonzero(deg > GROUP_DEGREE_MAX)
    return DegreeBins(np.concatenate([small, mid, hub]), int(small.size), int(mid.size), int(hub.size))


@dataclass
class GraphData:
    """Device copies of one graph's index arrays (uploaded once, cached per graph object)."""

    num_nodes: int
    num_edges: int
    row_ptr: DeviceArray  # u32 [N+1]
    col_idx: DeviceArray  # u32 [E]
    src: DeviceArray  # u32 [E]
    rev_ptr: DeviceArray  # u32 [N+1]
    rev_pairs: DeviceArray  # u32 [E, 2]: (edge, source) grouped by target
    sink: DeviceArray  # u32 [N]: 1 for out-degree 0
    large_out: DeviceArray | None  # u32: nodes with out-degree > SMALL
    large_in: DeviceArray | None  # u32: nodes with in-degree > SMALL
    n_large_out: int
    n_large_in: int
    n_nonempty: int
    bins: DegreeBins
    seg_list: DeviceArray | None  # u32: bins.nodes (None when every node has out-degree 0)


def upload_graph(backend: Any, graph: Graph) -> GraphData:
    """Upload ``graph``'s CSR and reverse (CSC) indices, sinks, large-degree node lists and the
    forward's degree bins."""

    def up(a: np.ndarray) -> DeviceArray:
        return backend.asarray(np.ascontiguousarray(a, dtype=np.uint32), np.uint32)

    rev_perm = graph.rev_perm
    pairs = np.stack([rev_perm, graph.src[rev_perm]], axis=1) if graph.num_edges else np.zeros((0, 2))
    large_out = np.flatnonzero(graph.out_degree > SMALL_DEGREE_MAX)
    large_in = np.flatnonzero(graph.in_degree > SMALL_DEGREE_MAX)
    bins = degree_bins(graph.out_degree)
    return GraphData(
        num_nodes=graph.num_nodes,
        num_edges=graph.num_edges,
        row_ptr=up(graph.row_ptr),
        col_idx=up(graph.col_idx),
        src=up(graph.src),
        rev_ptr=up(graph.rev_ptr),
        rev_pairs=up(pairs),
        sink=up(graph.sink_mask.astype(np.uint32)),
        large_out=up(large_out) if large_out.size else None,
        large_in=up(large_in) if large_in.size else None,
        n_large_out=int(large_out.size),
        n_large_in=int(large_in.size),
        n_nonempty=int(np.count_nonzero(graph.out_degree)),
        bins=bins,
        seg_list=up(bins.nodes) if bins.nodes.size else None,
    )
