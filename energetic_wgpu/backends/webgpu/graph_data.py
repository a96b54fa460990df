"""The device copies of a graph's index arrays (uploaded once per graph by the backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...graph import Graph
from .arrays import DeviceArray
from .kernels import SMALL_DEGREE_MAX

__all__ = ["GraphData", "upload_graph"]


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


def upload_graph(backend: Any, graph: Graph) -> GraphData:
    """Upload ``graph``'s CSR and reverse (CSC) indices, sinks and large-degree node lists."""

    def up(a: np.ndarray) -> DeviceArray:
        return backend.asarray(np.ascontiguousarray(a, dtype=np.uint32), np.uint32)

    rev_perm = graph.rev_perm
    pairs = np.stack([rev_perm, graph.src[rev_perm]], axis=1) if graph.num_edges else np.zeros((0, 2))
    large_out = np.flatnonzero(graph.out_degree > SMALL_DEGREE_MAX)
    large_in = np.flatnonzero(graph.in_degree > SMALL_DEGREE_MAX)
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
    )
