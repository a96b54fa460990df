"""Graph construction, validation, reverse index and lattice builders (docs/definitions.md §1, §7)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from energetic_wgpu import ConfigError, EnergeticError, Graph, GraphConfig, build_lattice, build_lattice_3d
from energetic_wgpu.errors import InvalidArgumentError, ShapeError

# --------------------------------------------------------------------------- builders


def test_from_edges_stable_sort_and_weights_follow_edges():
    src = [2, 0, 2, 1, 0, 2]
    dst = [0, 1, 3, 2, 3, 1]
    w = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    g = Graph.from_edges(src, dst, num_nodes=4, weights=w)
    assert g.num_nodes == 4 and g.num_edges == 6
    assert g.row_ptr.tolist() == [0, 2, 3, 6, 6]
    # edges of one source keep their given relative order
    assert g.col_idx.tolist() == [1, 3, 2, 0, 3, 1]
    assert g.weights.tolist() == [11.0, 14.0, 13.0, 10.0, 12.0, 15.0]
    assert g.src.tolist() == [0, 0, 1, 2, 2, 2]
    assert g.out_degree.tolist() == [2, 1, 3, 0]
    assert g.in_degree.tolist() == [1, 2, 1, 2]
    assert g.sink_mask.tolist() == [False, False, False, True]


def test_from_csr_copies_and_is_immutable():
    rp = np.array([0, 1, 3])
    ci = np.array([1, 0, 1])
    g = Graph.from_csr(rp, ci)
    rp[1] = 2
    assert g.row_ptr.tolist() == [0, 1, 3]
    assert g.col_idx.dtype == np.int64
    with pytest.raises(ValueError):
        g.col_idx[0] = 0
    assert g.weights is None


def test_graph_constructor_is_private():
    with pytest.raises(TypeError, match="from_csr"):
        Graph(np.array([0]), np.array([], dtype=np.int64))


def test_empty_graph_and_edgeless_graph():
    g = Graph.from_csr([0], np.zeros(0, dtype=np.int64))
    assert g.num_nodes == 0 and g.num_edges == 0
    g = Graph.from_edges([], [], num_nodes=3)
    assert g.row_ptr.tolist() == [0, 0, 0, 0]
    assert g.sink_mask.all() and g.rev_ptr.tolist() == [0, 0, 0, 0]


def test_reverse_index_groups_by_target_ascending():
    g = Graph.from_edges([0, 0, 1, 1, 2, 3, 3], [2, 1, 2, 2, 0, 2, 3], num_nodes=5)
    # col_idx = [2, 1, 2, 2, 0, 2, 3]
    assert g.rev_ptr.tolist() == [0, 1, 2, 6, 7, 7]
    assert g.rev_perm.tolist() == [4, 1, 0, 2, 3, 5, 6]
    for k in range(g.num_nodes):
        edges = g.rev_perm[g.rev_ptr[k] : g.rev_ptr[k + 1]]
        assert (g.col_idx[edges] == k).all()
        assert (np.diff(edges) > 0).all()


def test_fingerprint_depends_on_structure():
    a = Graph.from_edges([0, 1], [1, 0], num_nodes=2)
    b = Graph.from_edges([0, 1], [1, 0], num_nodes=2, weights=[1.0, 2.0])
    c = Graph.from_edges([0, 1], [1, 1], num_nodes=2)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


# --------------------------------------------------------------------------- validation


def _raises(exc, match, fn, *args, **kw):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kw)
    assert isinstance(info.value, EnergeticError)
    assert isinstance(info.value, ValueError)
    return info.value


def test_from_csr_negative_col_idx():
    _raises(
        InvalidArgumentError,
        r"col_idx must be non-negative, got col_idx\[1\] = -1",
        Graph.from_csr, [0, 2], [0, -1],
    )


def test_from_csr_negative_row_ptr():
    _raises(InvalidArgumentError, r"row_ptr must be non-negative", Graph.from_csr, [0, -1, 0], [])


def test_from_csr_col_idx_out_of_range():
    _raises(
        InvalidArgumentError,
        r"col_idx values must be node ids in \[0, 2\), got col_idx\[1\] = 2",
        Graph.from_csr, [0, 1, 2], [1, 2],
    )


def test_from_csr_index_too_large():
    _raises(InvalidArgumentError, r"col_idx\[0\] = 2147483648 exceeds", Graph.from_csr, [0, 1], [2**31])


def test_from_csr_non_monotone_row_ptr():
    _raises(
        InvalidArgumentError,
        r"row_ptr must be non-decreasing, got row_ptr\[1\] = 3 > row_ptr\[2\] = 1",
        Graph.from_csr, [0, 3, 1, 3], [0, 1, 2],
    )


def test_from_csr_row_ptr_first_not_zero():
    _raises(InvalidArgumentError, r"row_ptr\[0\] must be 0, got 1", Graph.from_csr, [1, 2], [0, 0])


def test_from_csr_row_ptr_last_not_num_edges():
    _raises(ShapeError, r"row_ptr\[-1\] must equal len\(col_idx\) = 3 .*got 2", Graph.from_csr, [0, 1, 2], [0, 1, 1])


def test_from_csr_empty_row_ptr():
    _raises(ShapeError, r"row_ptr must have at least one element", Graph.from_csr, np.zeros(0, dtype=np.int64), [])


def test_from_csr_num_nodes_mismatch():
    _raises(
        ShapeError,
        r"row_ptr must have num_nodes\+1 = 4 elements, got 3",
        Graph.from_csr, [0, 1, 2], [0, 1], num_nodes=3,
    )


def test_from_csr_float_indices():
    _raises(ShapeError, r"col_idx must be an integer array, got dtype float64", Graph.from_csr, [0, 1], [0.0])
    _raises(ShapeError, r"row_ptr must be an integer array, got dtype float64", Graph.from_csr, [0.0, 1.0], [0])


def test_from_csr_bool_indices():
    _raises(ShapeError, r"col_idx must be an integer array, got dtype bool", Graph.from_csr, [0, 1], [True])


def test_from_csr_2d_indices():
    _raises(ShapeError, r"col_idx must be 1-D, got shape \(1, 1\)", Graph.from_csr, [0, 1], [[0]])


def test_from_edges_length_mismatch():
    _raises(ShapeError, r"src and dst must have the same length, got 2 and 1", Graph.from_edges, [0, 1], [1], 2)


def test_from_edges_src_out_of_range():
    _raises(
        InvalidArgumentError,
        r"src values must be node ids in \[0, 2\).*src\[1\] = 5",
        Graph.from_edges, [0, 5], [1, 1], 2,
    )


def test_from_edges_dst_out_of_range():
    _raises(
        InvalidArgumentError,
        r"dst values must be node ids in \[0, 2\).*dst\[0\] = 2",
        Graph.from_edges, [0, 1], [2, 1], 2,
    )


def test_from_edges_negative_dst():
    _raises(InvalidArgumentError, r"dst must be non-negative, got dst\[0\] = -3", Graph.from_edges, [0], [-3], 2)


def test_from_edges_float_src():
    _raises(ShapeError, r"src must be an integer array, got dtype float", Graph.from_edges, [0.5], [0], 2)


def test_from_edges_bool_dst():
    _raises(ShapeError, r"dst must be an integer array, got dtype bool", Graph.from_edges, [0], [False], 2)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_from_edges_bad_num_nodes(bad):
    _raises(InvalidArgumentError, r"num_nodes must be", Graph.from_edges, [0], [0], bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(bad):
    _raises(
        InvalidArgumentError,
        r"weights must be finite, got weights\[1\] = ",
        Graph.from_edges, [0, 0], [0, 1], 2, weights=[1.0, bad],
    )
    _raises(InvalidArgumentError, r"weights must be finite", Graph.from_csr, [0, 2], [0, 0], weights=[bad, 1.0])


def test_weights_wrong_shape():
    _raises(
        ShapeError,
        r"weights must have shape \(2,\) \(one per edge\), got \(3,\)",
        Graph.from_edges, [0, 0], [0, 1], 2, weights=[1.0, 2.0, 3.0],
    )
    _raises(ShapeError, r"weights must have shape \(2,\)", Graph.from_csr, [0, 2], [0, 0], weights=[[1.0, 2.0]])


def test_weights_wrong_dtype():
    _raises(ShapeError, r"weights must be a float array, got dtype bool", Graph.from_edges, [0], [0], 1, weights=[True])
    _raises(ShapeError, r"weights must be a float array", Graph.from_edges, [0], [0], 1, weights=["a"])


def test_positions_wrong_shape_and_non_finite():
    _raises(
        ShapeError,
        r"positions must have shape \(2, 2\), got \(2,\)",
        Graph.from_edges, [0], [1], 2, positions=[0.0, 1.0],
    )
    _raises(
        InvalidArgumentError,
        r"positions must be finite",
        Graph.from_edges, [0], [1], 2, positions=[[0, 0], [np.nan, 1]],
    )


# --------------------------------------------------------------------------- lattice


def _lattice_reference(L, M, nl, nj):
    """Local edges of every node by an independent loop (the jump targets come from the graph)."""
    offs = list(range(-(nl // 2), nl - nl // 2))
    return {(l, i): [(l + 1) * M + (i + o) % M for o in offs] for l in range(L - 1) for i in range(M)}


@pytest.mark.parametrize("nl", [0, 1, 2, 3, 4, 5, 8])
def test_lattice_local_ring_offsets(nl):
    L, M, nj = 5, 9, 2
    g = build_lattice(GraphConfig(layers=L, nodes_per_layer=M, local_neighbors=nl, jump_neighbors=nj, seed=3))
    ref = _lattice_reference(L, M, nl, nj)
    assert g.num_nodes == L * M and g.layers == L
    for l in range(L):
        for i in range(M):
            j = l * M + i
            seg = g.col_idx[g.row_ptr[j] : g.row_ptr[j + 1]].tolist()
            expected_deg = (nl if l <= L - 2 else 0) + (nj if l <= L - 3 else 0)
            assert len(seg) == expected_deg, (l, i)
            if l <= L - 2:
                assert seg[:nl] == ref[(l, i)]
            if l <= L - 3:
                jumps = seg[nl:]
                assert len(set(jumps)) == nj
                assert all((l + 2) * M <= t < (l + 3) * M for t in jumps)
    assert np.array_equal(g.positions[:, 0], np.repeat(np.arange(L), M))
    assert np.array_equal(g.positions[:, 1], np.tile(np.arange(M), L))


def test_lattice_offsets_even_and_odd_explicit():
    # n = 4: offsets -2, -1, 0, 1 ; n = 3: offsets -1, 0, 1
    g4 = build_lattice(GraphConfig(layers=2, nodes_per_layer=10, local_neighbors=4, jump_neighbors=0))
    assert g4.col_idx[0:4].tolist() == [18, 19, 10, 11]
    g3 = build_lattice(GraphConfig(layers=2, nodes_per_layer=10, local_neighbors=3, jump_neighbors=0))
    assert g3.col_idx[0:3].tolist() == [19, 10, 11]
    assert g3.col_idx[3 * 5 : 3 * 5 + 3].tolist() == [14, 15, 16]


def test_lattice_last_layer_sinks_and_penultimate_local_only():
    L, M, nl, nj = 4, 16, 3, 5
    g = build_lattice(GraphConfig(layers=L, nodes_per_layer=M, local_neighbors=nl, jump_neighbors=nj, seed=1))
    deg = g.out_degree.reshape(L, M)
    assert (deg[L - 1] == 0).all()
    assert (deg[L - 2] == nl).all()
    assert (deg[: L - 2] == nl + nj).all()
    seg_targets = g.col_idx[g.row_ptr[(L - 2) * M] :]
    assert ((seg_targets >= (L - 1) * M) & (seg_targets < L * M)).all()
    assert g.sink_mask.sum() == M
    assert g.num_edges == (L - 1) * M * nl + (L - 2) * M * nj


def test_lattice_jumps_distinct_when_all_nodes_drawn():
    M = 6
    g = build_lattice(GraphConfig(layers=3, nodes_per_layer=M, local_neighbors=0, jump_neighbors=M, seed=7))
    for i in range(M):
        seg = g.col_idx[g.row_ptr[i] : g.row_ptr[i + 1]]
        assert sorted(seg.tolist()) == list(range(2 * M, 3 * M))


def test_lattice_seeded_reproducible_and_seeds_differ():
    cfg = dict(layers=6, nodes_per_layer=64, local_neighbors=4, jump_neighbors=3)
    a = build_lattice(GraphConfig(**cfg, seed=11))
    b = build_lattice(GraphConfig(**cfg, seed=11))
    c = build_lattice(GraphConfig(**cfg, seed=12))
    assert np.array_equal(a.col_idx, b.col_idx) and np.array_equal(a.row_ptr, b.row_ptr)
    assert a.fingerprint == b.fingerprint
    assert np.array_equal(a.row_ptr, c.row_ptr)
    assert not np.array_equal(a.col_idx, c.col_idx)


def test_lattice_single_and_two_layers():
    g1 = build_lattice(GraphConfig(layers=1, nodes_per_layer=5, local_neighbors=2))
    assert g1.num_edges == 0 and g1.sink_mask.all()
    g2 = build_lattice(GraphConfig(layers=2, nodes_per_layer=5, local_neighbors=2, jump_neighbors=2))
    assert g2.num_edges == 10
    assert (g2.col_idx >= 5).all()


def test_lattice_baseline_builds_fast():
    cfg = GraphConfig(layers=10, nodes_per_layer=1024, local_neighbors=8, jump_neighbors=2, seed=0)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        g = build_lattice(cfg)
        times.append(time.perf_counter() - t0)
    assert g.num_nodes == 10240
    assert g.num_edges == 9 * 1024 * 8 + 8 * 1024 * 2
    assert float(np.median(times)) < 1.0  # sanity only; the target (<100 ms) is a benchmark


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(layers=0, nodes_per_layer=4), "graph.layers"),
        (dict(layers=2, nodes_per_layer=0), "graph.nodes_per_layer"),
        (dict(layers=2, nodes_per_layer=4, local_neighbors=5), "graph.local_neighbors"),
        (dict(layers=2, nodes_per_layer=4, local_neighbors=-1), "graph.local_neighbors"),
        (dict(layers=2, nodes_per_layer=4, local_neighbors=2, jump_neighbors=5), "graph.jump_neighbors"),
        (dict(layers=2, nodes_per_layer=4, local_neighbors=2, jump_neighbors=-1), "graph.jump_neighbors"),
        (dict(layers=2, nodes_per_layer=4, local_neighbors=2, seed=-1), "graph.seed"),
        (dict(layers=2.0, nodes_per_layer=4), "graph.layers"),
        (dict(layers=True, nodes_per_layer=4), "graph.layers"),
        (dict(layers=2, nodes_per_layer="4"), "graph.nodes_per_layer"),
        (dict(layers=2, nodes_per_layer=4, seed=None), "graph.seed"),
        (dict(layers=2**20, nodes_per_layer=2**12, local_neighbors=0, jump_neighbors=0), "graph.layers"),
    ],
)
def test_graph_config_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        GraphConfig(**kwargs)
    assert isinstance(info.value, ValueError)


def test_build_lattice_rejects_non_config():
    with pytest.raises(ConfigError, match="config must be a GraphConfig"):
        build_lattice({"layers": 2, "nodes_per_layer": 4})


# --------------------------------------------------------------------------- 3-D lattice


def test_lattice_3d_neighbour_counts():
    g = build_lattice_3d((4, 5, 6), radius=1)
    X, Y, Z = 4, 5, 6
    deg = g.out_degree.reshape(X, Y, Z)
    assert deg[1, 1, 1] == 26 and (deg[1:-1, 1:-1, 1:-1] == 26).all()
    assert deg[0, 0, 0] == 7  # corner
    assert deg[0, 0, 1] == 11  # edge
    assert deg[0, 1, 1] == 17  # face
    # every neighbour is at Chebyshev distance 1, no self-loop
    nid = lambda x, y, z: (x * Y + y) * Z + z  # noqa: E731
    j = nid(2, 3, 4)
    targets = sorted(g.col_idx[g.row_ptr[j] : g.row_ptr[j + 1]].tolist())
    r1 = (-1, 0, 1)
    ref = sorted(nid(2 + a, 3 + b, 4 + c) for a in r1 for b in r1 for c in r1 if (a, b, c) != (0, 0, 0))
    assert targets == ref
    # symmetric neighbourhood: in-degree equals out-degree
    assert np.array_equal(g.in_degree, g.out_degree)


def test_lattice_3d_radius_2_and_errors():
    g = build_lattice_3d((5, 5, 5), radius=2)
    assert g.out_degree[(2 * 5 + 2) * 5 + 2] == 124
    with pytest.raises(ConfigError, match="dims must be three positive ints"):
        build_lattice_3d((2, 2))
    with pytest.raises(ConfigError, match="dims must be three positive ints"):
        build_lattice_3d((2, 0, 2))
    with pytest.raises(ConfigError, match="radius must be a positive int"):
        build_lattice_3d((2, 2, 2), radius=0)


# --------------------------------------------------------------------------- hypothesis


@st.composite
def edge_lists(draw):
    n = draw(st.integers(0, 12))
    if n == 0:
        return 0, [], [], []
    e = draw(st.integers(0, 40))
    src = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    dst = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    # duplicates and self-loops on purpose
    if e and draw(st.booleans()):
        src.append(src[0])
        dst.append(dst[0])
        src.append(dst[-1])
        dst.append(dst[-1])
    w = draw(st.lists(st.floats(-5, 5), min_size=len(src), max_size=len(src)))
    return n, src, dst, w


@given(edge_lists())
def test_hypothesis_from_edges_round_trip(case):
    n, src, dst, w = case
    g = Graph.from_edges(src, dst, num_nodes=n, weights=w if src else None)
    # the multiset of (src, dst, w) triples is preserved and grouped by source in order
    expected = sorted(zip(src, range(len(src))), key=lambda t: t[0])  # stable by source
    assert g.src.tolist() == [s for s, _ in expected]
    assert g.col_idx.tolist() == [dst[i] for _, i in expected]
    if src:
        assert g.weights.tolist() == [w[i] for _, i in expected]
    assert g.out_degree.tolist() == [src.count(j) for j in range(n)]
    assert g.in_degree.tolist() == [dst.count(j) for j in range(n)]
    # round trip through from_csr
    h = Graph.from_csr(g.row_ptr, g.col_idx, num_nodes=n, weights=g.weights)
    assert np.array_equal(h.row_ptr, g.row_ptr) and np.array_equal(h.col_idx, g.col_idx)
    assert h.fingerprint == g.fingerprint
    # reverse index
    for k in range(n):
        edges = g.rev_perm[g.rev_ptr[k] : g.rev_ptr[k + 1]].tolist()
        assert edges == [e for e in range(g.num_edges) if g.col_idx[e] == k]
    assert sorted(g.rev_perm.tolist()) == list(range(g.num_edges))
