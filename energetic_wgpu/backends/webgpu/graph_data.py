"""The device copies of a graph's index arrays (uploaded once per graph by the backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...graph import Graph
from .arrays import DeviceArray
from .kernels import BIN_WG, SMALL_DEGREE_MAX, THREAD_DEGREE_MAX

__all__ = ["GraphData", "Bins", "upload_graph", "degree_bins"]


@dataclass(frozen=True)
class Bins:
    """The nodes of one direction (out-segments or in-ranges) binned by degree for the
    degree-binned backward (segment_backward.wgsl): ``seg`` u32 [N+1 + N] is the pointer
    array followed by the nodes ordered small (degree <= THREAD_DEGREE_MAX), mid (<=
    SMALL_DEGREE_MAX), hub (larger), each bin sorted by degree (ties in node order)."""

    seg: DeviceArray
    n_small: int
    n_mid: int
    n_hub: int

    @property
    def workgroups(self) -> int:
        """Workgroups of one dispatch over every node (hence its sum-of-squares partials)."""
        return -(-self.n_small // BIN_WG) + -(-self.n_mid // 2) + self.n_hub

    def uniform(self, num_nodes: int) -> dict[str, int]:
        """The bin fields of the kernel's uniform."""
        return dict(bins_off=num_nodes + 1, n_small=self.n_small, n_mid=self.n_mid, n_hub=self.n_hub)


def degree_bins(ptr: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """(pointers followed by the binned node list as u32, n_small, n_mid, n_hub) for the
    pointer array ``ptr`` [N+1] of segments (CSR) or in-ranges (reverse index)."""
    ptr = np.asarray(ptr, dtype=np.int64)
    deg = np.diff(ptr)
    # each bin sorted by degree (stable): neighbouring lanes run loops of similar lengths
    order = np.argsort(deg, kind="stable")
    d = deg[order]
    small = order[d <= THREAD_DEGREE_MAX]
    mid = order[(d > THREAD_DEGREE_MAX) & (d <= SMALL_DEGREE_MAX)]
    hub = order[d > SMALL_DEGREE_MAX]
    seg = np.concatenate([ptr, small, mid, hub]).astype(np.uint32)
    return seg, int(small.size), int(mid.size), int(hub.size)


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
    bins_out: Bins  # source segments binned by out-degree
    bins_in: Bins  # reverse-index ranges binned by in-degree


def upload_graph(backend: Any, graph: Graph) -> GraphData:
    """Upload ``graph``'s CSR and reverse (CSC) indices, sinks and large-degree node lists."""

    def up(a: np.ndarray) -> DeviceArray:
        return backend.asarray(np.ascontiguousarray(a, dtype=np.uint32), np.uint32)

    rev_perm = graph.rev_perm
    pairs = np.stack([rev_perm, graph.src[rev_perm]], axis=1) if graph.num_edges else np.zeros((0, 2))
    large_out = np.flatnonzero(graph.out_degree > SMALL_DEGREE_MAX)
    large_in = np.flatnonzero(graph.in_degree > SMALL_DEGREE_MAX)

    def bins(ptr: np.ndarray) -> Bins:
        seg, n_small, n_mid, n_hub = degree_bins(ptr)
        return Bins(up(seg), n_small, n_mid, n_hub)

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
        bins_out=bins(graph.row_ptr),
        bins_in=bins(graph.rev_ptr),
    )
