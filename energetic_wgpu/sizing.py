"""How much memory a training run needs, estimated from its config before anything is
allocated, so that an impossible size is refused with a number instead of a MemoryError
(or the machine swapping) halfway through building the graph."""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError

__all__ = ["graph_size", "estimate_train_bytes", "physical_memory", "check_train_fits"]

# bytes per element of the host-side structures (int64 indices, float64 positions,
# temporaries of the vectorized lattice build) and of float32 training state
_GRAPH_BYTES_PER_EDGE = 48
_GRAPH_BYTES_PER_NODE = 64
_F32 = 4


def graph_size(layers: int, nodes_per_layer: int, local_neighbors: int, jump_neighbors: int) -> tuple[int, int]:
    """(nodes, edges) of the layered lattice with these parameters."""
    nodes = layers * nodes_per_layer
    edges = nodes_per_layer * (max(layers - 1, 0) * local_neighbors + max(layers - 2, 0) * jump_neighbors)
    return nodes, edges


def estimate_train_bytes(config: Any, graph: Any = None) -> int:
    """Approximate peak host memory (bytes) of training ``config`` (a Config): the graph,
    parameters with gradients and AdamW moments, and one step's activations for the
    student and the teacher (``router.steps`` propagation steps kept for the backward).
    ``graph``: a :class:`~energetic_wgpu.Graph` to size instead of the lattice of
    ``config.graph`` (a graph file's, or one passed to the trainer)."""
    g, r, t = config.graph, config.router, config.train
    if graph is None:
        n, e = graph_size(g.layers, g.nodes_per_layer, g.local_neighbors, g.jump_neighbors)
    else:
        n, e = graph.num_nodes, graph.num_edges
    graph = _GRAPH_BYTES_PER_EDGE * e + _GRAPH_BYTES_PER_NODE * n
    params = _F32 * (2 * n * r.dim + e)
    activations = _F32 * t.batch_size * (n * (r.steps + 4) + e * (3 * r.steps + 2))
    return graph + 4 * params + 2 * activations


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_train_fits(config: Any, available: int | None = None, graph: Any = None) -> int:
    """Raise ConfigError if training ``config`` (on ``graph`` when given, see
    :func:`estimate_train_bytes`) needs more than ``available`` bytes (default: the
    machine's physical memory); return the estimate."""
    need = estimate_train_bytes(config, graph)
    limit = physical_memory() if available is None else available
    if limit is not None and need > limit and graph is not None:
        where = f"graph.path {config.graph.path}" if config.graph.path else "the graph"
        raise ConfigError(
            f"{where} ({graph.num_nodes:,} nodes, {graph.num_edges:,} edges) with train.batch_size "
            f"{config.train.batch_size} needs about {_gib(need)} ({need:,} bytes, estimated), more than this "
            f"machine's {_gib(limit)} of memory; lower train.batch_size or use a smaller graph"
        )
    if limit is not None and need > limit:
        g = config.graph
        n, e = graph_size(g.layers, g.nodes_per_layer, g.local_neighbors, g.jump_neighbors)
        raise ConfigError(
            f"graph.layers x graph.nodes_per_layer = {g.layers:,} x {g.nodes_per_layer:,} ({n:,} nodes, {e:,} edges) "
            f"with train.batch_size {config.train.batch_size} needs about {_gib(need)} ({need:,} bytes, estimated), "
            f"more than this machine's {_gib(limit)} of memory; lower graph.nodes_per_layer, graph.layers, "
            "the neighbour counts or train.batch_size"
        )
    return need
