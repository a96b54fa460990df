"""Graph converters (edge_index, scipy.sparse, networkx), edge_perm and to_input_order."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import energetic_wgpu as ew
from energetic_wgpu import Graph
from energetic_wgpu.errors import InvalidArgumentError, ShapeError


def _edges_in_input_order(g: Graph) -> list[tuple[int, int]]:
    """(src, dst) of every edge, put back into the caller's order by to_input_order."""
    s = g.to_input_order(g.src)
    d = g.to_input_order(g.col_idx)
    return list(zip(s.tolist(), d.tolist()))


# --------------------------------------------------------------------------- edge_perm


def test_from_edges_exposes_edge_perm_and_inverts_it():
    src = [2, 0, 2, 1, 0, 2]
    dst = [0, 1, 3, 2, 3, 1]
    w = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    g = Graph.from_edges(src, dst, num_nodes=4, weights=w)
    assert g.edge_perm.tolist() == [1, 4, 3, 0, 2, 5]
    assert g.edge_perm.dtype == np.int64 and not g.edge_perm.flags.writeable
    assert g.to_input_order(g.weights).tolist() == w.tolist()
    assert _edges_in_input_order(g) == list(zip(src, dst))
    assert g.from_input_order(w).tolist() == g.weights.tolist()
    # [..., E] arrays (a batch of flows)
    flows = np.arange(12.0).reshape(2, 6)
    back = g.to_input_order(flows)
    assert back.shape == (2, 6) and back[:, g.edge_perm].tolist() == flows.tolist()
    assert g.from_input_order(back).tolist() == flows.tolist()


def test_csr_built_graphs_have_no_edge_perm():
    g = Graph.from_csr([0, 2, 3], [1, 0, 1])
    assert g.edge_perm is None and g.node_ids is None
    v = np.array([1.0, 2.0, 3.0])
    out = g.to_input_order(v)
    assert out.tolist() == [1.0, 2.0, 3.0] and out is not v
    assert ew.build_lattice(ew.GraphConfig(layers=2, nodes_per_layer=3, local_neighbors=2, jump_neighbors=0)).edge_perm is None


def test_to_input_order_checks_the_edge_axis():
    g = Graph.from_edges([1, 0], [0, 1], num_nodes=2)
    with pytest.raises(ShapeError, match=r"values must have shape \[\.\.\., E\] with E = 2 edges, got \(3,\)"):
        g.to_input_order(np.zeros(3))
    with pytest.raises(ShapeError, match=r"got \(\)"):
        g.from_input_order(np.float64(1.0))


@given(
    st.integers(0, 8).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, max(n - 1, 0))), max_size=30 if n else 0),
        )
    )
)
def test_to_input_order_inverts_the_csr_order(case):
    n, edges = case
    src = [s for s, _ in edges]
    dst = [d for _, d in edges]
    g = Graph.from_edges(np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), num_nodes=n)
    assert _edges_in_input_order(g) == edges
    # duplicates keep their input order: edge_perm is increasing within each source's segment
    for j in range(n):
        seg = g.edge_perm[g.row_ptr[j] : g.row_ptr[j + 1]]
        assert np.all(np.diff(seg) > 0)
    ids = np.arange(len(edges), dtype=np.float64)
    assert g.to_input_order(g.from_input_order(ids)).tolist() == ids.tolist()


# --------------------------------------------------------------------------- edge_index


def test_from_edge_index_shuffled_duplicates_isolated_nodes():
    ei = np.array([[3, 0, 3, 0, 2], [1, 2, 1, 3, 0]])  # (3, 1) twice; node 4 isolated
    g = Graph.from_edge_index(ei, num_nodes=5, weights=[0.5, 1.0, 1.5, 2.0, 2.5])
    assert g.num_nodes == 5 and g.num_edges == 5
    assert g.row_ptr.tolist() == [0, 2, 2, 3, 5, 5]
    assert g.col_idx.tolist() == [2, 3, 0, 1, 1]
    assert g.edge_perm.tolist() == [1, 3, 4, 0, 2]
    assert g.to_input_order(g.weights).tolist() == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert _edges_in_input_order(g) == list(zip(ei[0].tolist(), ei[1].tolist()))
    # num_nodes inferred like PyG: max index + 1
    assert Graph.from_edge_index(ei).num_nodes == 4
    assert Graph.from_edge_index(np.zeros((2, 0), dtype=np.int64)).num_nodes == 0
    assert Graph.from_edge_index([[0, 1], [1, 0]]).col_idx.tolist() == [1, 0]


def test_from_edge_index_errors_name_the_argument():
    with pytest.raises(ShapeError, match=r"edge_index must have shape \[2, E\] \(row 0 sources, row 1 targets\), got \(3, 2\)"):
        Graph.from_edge_index(np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ShapeError, match="edge_index must be an integer array, got dtype float64"):
        Graph.from_edge_index(np.zeros((2, 2)))
    with pytest.raises(InvalidArgumentError, match=r"edge_index must be non-negative, got edge_index\[1, 0\] = -1"):
        Graph.from_edge_index([[0, 1], [-1, 0]])
    with pytest.raises(InvalidArgumentError, match=r"node ids in \[0, 2\) \(num_nodes = 2\), got edge_index\[0, 1\] = 2"):
        Graph.from_edge_index([[0, 2], [1, 0]], num_nodes=2)
    with pytest.raises(InvalidArgumentError, match="num_nodes must be a non-negative int, got 2.0"):
        Graph.from_edge_index([[0], [1]], num_nodes=2.0)
    with pytest.raises(InvalidArgumentError, match="num_nodes must be a non-negative int or a 0-d integer tensor"):
        Graph.from_edge_index([[0], [1]], num_nodes=np.array([2]))
    with pytest.raises(ShapeError, match=r"weights must have shape \(1,\)"):
        Graph.from_edge_index([[0], [1]], weights=[1.0, 2.0])


def test_from_edge_index_torch_tensor():
    torch = pytest.importorskip("torch", reason="torch is an optional extra")
    ei = torch.tensor([[2, 0, 1, 0], [0, 1, 2, 2]])
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    g = Graph.from_edge_index(ei, num_nodes=torch.tensor(4), weights=w)
    assert g.num_nodes == 4 and g.col_idx.tolist() == [1, 2, 2, 0]
    assert g.edge_perm.tolist() == [1, 3, 2, 0]
    np.testing.assert_allclose(g.to_input_order(g.weights), [0.1, 0.2, 0.3, 0.4], rtol=1e-7)
    back = g.to_input_order(torch.tensor([10.0, 11.0, 12.0, 13.0]))
    assert isinstance(back, np.ndarray) and back.tolist() == [13.0, 10.0, 12.0, 11.0]
    with pytest.raises(ShapeError, match="edge_index must be an integer array, got dtype float32"):
        Graph.from_edge_index(ei.float())


# --------------------------------------------------------------------------- scipy


@pytest.mark.parametrize("fmt", ["coo", "csr", "csc", "lil", "dok", "bsr"])
def test_from_scipy_round_trip_every_format(fmt):
    rng = np.random.default_rng(3)
    dense = np.where(rng.random((6, 6)) < 0.4, rng.standard_normal((6, 6)), 0.0)
    dense[5] = 0.0  # a sink
    m = sp.coo_array(dense).asformat(fmt)
    g = Graph.from_scipy(m)
    assert g.num_nodes == 6 and g.num_edges == np.count_nonzero(dense)
    np.testing.assert_array_equal(g.to_scipy().toarray(), dense)
    coo = m.tocoo()
    assert _edges_in_input_order(g) == list(zip(coo.row.tolist(), coo.col.tolist()))
    np.testing.assert_array_equal(g.to_input_order(g.weights), coo.data)


def test_from_scipy_explicit_zeros_and_duplicates_are_edges():
    m = sp.coo_matrix(([0.0, 2.0, 3.0, 1.0], ([1, 0, 1, 1], [0, 1, 0, 2])), shape=(3, 3))
    g = Graph.from_scipy(m)
    assert g.num_edges == 4  # the explicit zero and both (1, 0) entries are edges
    assert g.col_idx.tolist() == [1, 0, 0, 2] and g.weights.tolist() == [2.0, 0.0, 3.0, 1.0]
    assert g.edge_perm.tolist() == [1, 0, 2, 3]
    m.sum_duplicates()
    m.eliminate_zeros()
    assert Graph.from_scipy(m).num_edges == 3


def test_from_scipy_bool_matrix_has_no_weights_and_to_scipy_of_an_unweighted_graph():
    m = sp.csr_array(np.array([[False, True], [True, True]]))
    g = Graph.from_scipy(m)
    assert g.weights is None and g.edge_perm.tolist() == [0, 1, 2]
    out = g.to_scipy()
    assert isinstance(out, sp.csr_array) and out.toarray().tolist() == [[0.0, 1.0], [1.0, 1.0]]
    # CSR in, CSR out: the same arrays
    g2 = Graph.from_scipy(out)
    assert g2.row_ptr.tolist() == g.row_ptr.tolist() and g2.col_idx.tolist() == g.col_idx.tolist()


def test_from_scipy_errors():
    with pytest.raises(InvalidArgumentError, match="matrix must be a scipy.sparse matrix or array, got ndarray"):
        Graph.from_scipy(np.eye(2))
    with pytest.raises(ShapeError, match=r"matrix must be square \[N, N\] .*got shape \(2, 3\)"):
        Graph.from_scipy(sp.csr_array((2, 3)))
    with pytest.raises(InvalidArgumentError, match=r"must be finite, got nan at \(0, 1\)"):
        Graph.from_scipy(sp.coo_array(([np.nan], ([0], [1])), shape=(2, 2)))
    with pytest.raises(ShapeError, match="matrix values must be real numbers or bools .*complex128"):
        Graph.from_scipy(sp.coo_array(([1j], ([0], [1])), shape=(2, 2)))


# --------------------------------------------------------------------------- networkx


def test_from_networkx_directed_with_weights_and_labels():
    nx = pytest.importorskip("networkx", reason="networkx is not installed")
    G = nx.DiGraph()
    G.add_nodes_from(["c", "a", "b", "lonely"])
    G.add_edge("b", "a", w=1.5)
    G.add_edge("c", "b", w=-0.5)
    G.add_edge("c", "a", w=2.0)
    g = Graph.from_networkx(G, weight="w")
    assert g.node_ids == ("c", "a", "b", "lonely") and g.num_nodes == 4
    labels = [(g.node_ids[s], g.node_ids[d]) for s, d in _edges_in_input_order(g)]
    assert labels == list(G.edges)
    assert g.to_input_order(g.weights).tolist() == [w for _, _, w in G.edges(data="w")]
    assert g.out_degree.tolist() == [2, 0, 1, 0]
    assert Graph.from_networkx(G).weights is None


def test_from_networkx_undirected_and_multigraph():
    nx = pytest.importorskip("networkx", reason="networkx is not installed")
    g = Graph.from_networkx(nx.path_graph(3))
    assert g.num_edges == 4  # both directions
    assert sorted(_edges_in_input_order(g)) == [(0, 1), (1, 0), (1, 2), (2, 1)]
    M = nx.MultiDiGraph([(0, 1), (0, 1), (1, 0)])
    assert Graph.from_networkx(M).col_idx.tolist() == [1, 1, 0]


def test_from_networkx_errors():
    nx = pytest.importorskip("networkx", reason="networkx is not installed")
    G = nx.DiGraph([(0, 1), (1, 2)])
    G.edges[0, 1]["w"] = 1.0
    with pytest.raises(InvalidArgumentError, match="weight='w': edge 1 -> 2 has no attribute 'w'"):
        Graph.from_networkx(G, weight="w")
    with pytest.raises(InvalidArgumentError, match="G must be a networkx graph .*got dict"):
        Graph.from_networkx({0: [1]})
    with pytest.raises(InvalidArgumentError, match="weight must be None or the name of an edge attribute"):
        Graph.from_networkx(G, weight=3)


def test_from_networkx_without_networkx_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_networkx(name, *args, **kwargs):
        if name == "networkx":
            raise ImportError("No module named 'networkx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_networkx)
    with pytest.raises(ImportError, match="needs networkx, which is not a dependency .*pip install networkx"):
        Graph.from_networkx(object())
