"""Backend.write: host data into an existing backend array, in place."""

from __future__ import annotations

import numpy as np

from energetic_wgpu.router import Router, RouterParams
from energetic_wgpu.graph import Graph


def test_write_updates_a_packed_parameter_in_place(backend):
    g = Graph.from_edges([0, 0, 1], [1, 2, 2], num_nodes=3)
    r = Router(g, RouterParams.init(g, dim=2), backend)
    q, bias = r.q, r.bias
    backend.write(r.bias, np.array([0.5, -1.0, 2.0]))
    backend.write(r.q, np.arange(6.0).reshape(3, 2))
    assert r.q is q and r.bias is bias  # the same arrays (same views of the packed buffer)
    assert backend.to_numpy(r.bias).tolist() == [0.5, -1.0, 2.0]
    assert backend.to_numpy(r.q).tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert backend.to_numpy(r.k).tolist() == RouterParams.init(g, dim=2).k.tolist()  # neighbours untouched
