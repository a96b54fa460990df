"""Edge arrays from other libraries' graph formats (PyTorch Geometric ``edge_index``,
scipy.sparse, networkx), for the :class:`~energetic_wgpu.Graph` converters.

Each function validates its input and returns plain numpy edge lists in the caller's edge
order; :meth:`Graph.from_edges <energetic_wgpu.Graph.from_edges>` then sorts them by
source. Neither torch nor networkx is imported unless the caller passes their objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidArgumentError, ShapeError
from .graph import _plain

__all__ = ["edge_index_arrays", "scipy_arrays", "networkx_arrays"]


def _num_nodes(value: Any) -> Any:
    """An int-like ``num_nodes`` (0-d integer tensors and arrays become ints)."""
    v = _plain(value, "num_nodes")
    if isinstance(v, np.ndarray):
        if v.ndim != 0 or v.dtype == np.bool_ or not np.issubdtype(v.dtype, np.integer):
            raise InvalidArgumentError(
                f"num_nodes must be a non-negative int or a 0-d integer tensor, got {v.dtype} array of shape {v.shape}"
            )
        return int(v)
    return v


def edge_index_arrays(edge_index: Any, num_nodes: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """(src int [E], dst int [E], num_nodes) of an ``edge_index`` int [2, E]."""
    ei = np.asarray(_plain(edge_index, "edge_index"))
    if ei.dtype == np.bool_ or not (np.issubdtype(ei.dtype, np.integer) or ei.size == 0):
        raise ShapeError(f"edge_index must be an integer array, got dtype {ei.dtype}")
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ShapeError(f"edge_index must have shape [2, E] (row 0 sources, row 1 targets), got {ei.shape}")
    ei = ei.astype(np.int64, copy=False)
    if ei.size and ei.min() < 0:
        row, col = (int(i) for i in np.argwhere(ei < 0)[0])
        raise InvalidArgumentError(f"edge_index must be non-negative, got edge_index[{row}, {col}] = {ei[row, col]}")
    n = _num_nodes(num_nodes)
    if n is None:
        n = int(ei.max()) + 1 if ei.size else 0
    elif not isinstance(n, bool) and isinstance(n, (int, np.integer)) and ei.size and ei.max() >= n:
        row, col = (int(i) for i in np.argwhere(ei >= n)[0])
        raise InvalidArgumentError(
            f"edge_index values must be node ids in [0, {n}) (num_nodes = {n}), "
            f"got edge_index[{row}, {col}] = {ei[row, col]}"
        )
    return ei[0], ei[1], n


def scipy_arrays(matrix: Any) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    """(src, dst, num_nodes, weights or None) of a square scipy.sparse matrix's stored entries."""
    import scipy.sparse as sp

    if not sp.issparse(matrix):
        raise InvalidArgumentError(
            f"matrix must be a scipy.sparse matrix or array, got {type(matrix).__name__} "
            "(for a dense array use scipy.sparse.csr_array(a))"
        )
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ShapeError(f"matrix must be square [N, N] (entry (i, j) is an edge i -> j), got shape {matrix.shape}")
    coo = matrix.tocoo()
    data = np.asarray(coo.data)
    if data.dtype == np.bool_:
        weights = None
    elif np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer):
        weights = data.astype(np.float64)
        if not np.all(np.isfinite(weights)):
            i = int(np.argmax(~np.isfinite(weights)))
            raise InvalidArgumentError(
                f"matrix values (edge weights) must be finite, got {weights[i]} at ({coo.row[i]}, {coo.col[i]})"
            )
    else:
        raise ShapeError(f"matrix values must be real numbers or bools (edge weights), got dtype {data.dtype}")
    return np.asarray(coo.row, dtype=np.int64), np.asarray(coo.col, dtype=np.int64), int(matrix.shape[0]), weights


def networkx_arrays(G: Any, weight: str | None) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None, tuple]:
    """(src, dst, num_nodes, weights or None, node ids) of a networkx graph."""
    try:
        import networkx as nx
    except ImportError as exc:
        raise ImportError(
            "Graph.from_networkx needs networkx, which is not a dependency of energetic_wgpu: pip install networkx"
        ) from exc
    if not isinstance(G, nx.Graph):
        raise InvalidArgumentError(f"G must be a networkx graph (networkx.Graph or a subclass), got {type(G).__name__}")
    if weight is not None and not isinstance(weight, str):
        raise InvalidArgumentError(f"weight must be None or the name of an edge attribute (a str), got {weight!r}")
    ids = tuple(G.nodes)
    index = {node: i for i, node in enumerate(ids)}
    D = G if G.is_directed() else G.to_directed()
    edges = list(D.edges(data=True))
    src = np.fromiter((index[u] for u, _, _ in edges), dtype=np.int64, count=len(edges))
    dst = np.fromiter((index[v] for _, v, _ in edges), dtype=np.int64, count=len(edges))
    weights = None
    if weight is not None:
        missing = next(((u, v) for u, v, attrs in edges if weight not in attrs), None)
        if missing is not None:
            raise InvalidArgumentError(
                f"weight={weight!r}: edge {missing[0]!r} -> {missing[1]!r} has no attribute {weight!r} "
                "(every edge needs it, or pass weight=None)"
            )
        try:
            weights = np.array([attrs[weight] for _, _, attrs in edges], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"weight={weight!r}: edge attribute values must be real numbers ({exc})") from exc
    return src, dst, len(ids), weights, ids
