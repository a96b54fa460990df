"""The graph builder of the tests: graphs with a chosen mix of out-degrees.

``degree_graph(degrees)`` gives node i the out-degree ``degrees[i]`` with seeded random
targets; options steer targets to reach the kernels' other paths (an in-degree above 256, a
hub, duplicate edges). The op-case table has its own fixed graph
(``energetic_wgpu.parity_cases.degree_graph``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from energetic_wgpu.graph import Graph

__all__ = ["degree_graph"]


def degree_graph(degrees: Sequence[int], seed: int = 0, *, hub_in: int = 0, big_into: int = 0,
                 duplicates: int = 0) -> Graph:
    """Node i has out-degree ``degrees[i]``; targets uniform in [0, N) from ``seed``.

    Args:
        hub_in: the first ``hub_in`` edges of the largest segment all go to node 0.
        big_into: every edge of the largest segment goes to one of nodes 0..big_into-1 (so
            those get a large in-degree: the workgroup-per-node paths).
        duplicates: the first ``duplicates`` edges repeat the target of the next one
            (duplicate edges; self-loops occur at random anyway).
    """
    rng = np.random.default_rng(seed)
    degrees = np.asarray(degrees)
    n = degrees.size
    src = np.repeat(np.arange(n), degrees)
    dst = rng.integers(0, n, size=src.size)
    largest = src == int(np.argmax(degrees)) if n else np.zeros(0, bool)
    if big_into:
        dst[largest] = rng.integers(0, big_into, size=int(largest.sum()))
    if hub_in:
        dst[np.flatnonzero(largest)[:hub_in]] = 0
    if duplicates:
        dst[:duplicates] = dst[duplicates]
    return Graph.from_edges(src, dst, num_nodes=n)
