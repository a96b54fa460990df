"""The fused forward ``edge_probs`` (logits, segment softmax and top-k in one dispatch) and the
degree bins it runs over: parity with the NumPy backend in every bin and at every bin edge,
exact top-k masks with ties, bit-identical reruns, one dispatch per call, q/k dims that are not
a multiple of 4 (also as views into a packed buffer) and random graphs (Hypothesis)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphs import degree_graph
from conftest import use_bins
from parity import assert_parity, numpy_and_wgpu, to_host

from energetic_wgpu.errors import InvalidArgumentError
from energetic_wgpu.graph import Graph

wgpu_mod = pytest.importorskip("energetic_wgpu.backends.webgpu", reason="wgpu backend not importable")
from energetic_wgpu.backends.webgpu.graph_data import degree_bins  # noqa: E402
from energetic_wgpu.backends.webgpu.kernels import GROUP_DEGREE_MAX, THREAD_DEGREE_MAX, kernel  # noqa: E402

T, G = THREAD_DEGREE_MAX, GROUP_DEGREE_MAX
#: every bin and both sides of every bin edge: thread (1..T), 32-lane group (T+1..G), hub (> G)
BIN_DEGREES = (0, 1, 2, T - 1, T, T + 1, 31, 32, 33, 0, G - 1, G, G + 1, 3, 3 * G)
DIMS = (1, 3, 4, 5, 16, 17)


def bins_graph(seed: int = 0):
    return degree_graph(BIN_DEGREES, seed)


def normal_inputs(g, dim, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((g.num_nodes, dim)).astype(np.float32)
    k = rng.standard_normal((g.num_nodes, dim)).astype(np.float32)
    bias = (0.5 * rng.standard_normal(g.num_edges)).astype(np.float32)
    return q, k, bias


def grid_inputs(g, dim, seed=0, levels=3):
    """q, k in {-1, 0, 1} (levels=3) and bias in {0, 0.5}: exact logits with many ties, so the
    top-k tie rule (lower edge index first) decides in every bin."""
    rng = np.random.default_rng(seed)
    q = (rng.integers(0, levels, (g.num_nodes, dim)) - levels // 2).astype(np.float32)
    k = (rng.integers(0, levels, (g.num_nodes, dim)) - levels // 2).astype(np.float32)
    bias = (0.5 * rng.integers(0, 2, g.num_edges)).astype(np.float32)
    return q, k, bias


# --------------------------------------------------------------------------- the bins


def test_degree_bins_follow_the_backend_policy(gpu_backend):
    """"auto" is "cpu" on a CPU adapter (lavapipe, llvmpipe), "gpu" on hardware; switching
    re-bins the graph: degrees 17..32 move from the thread bin to the 32-lane group bin."""
    from energetic_wgpu.backends.auto import is_software_adapter

    be = gpu_backend
    auto = "cpu" if is_software_adapter(be.runtime.adapter_info) else "gpu"
    assert (be.degree_bins, be.thread_degree_max) == (auto, 32 if auto == "cpu" else T)
    use_bins(be, "cpu")
    assert (be.degree_bins, be.thread_degree_max) == ("cpu", 32)
    g = bins_graph()
    cpu = be.graph_data(g).bins
    use_bins(be, "gpu")
    gpu = be.graph_data(g).bins
    assert (be.degree_bins, be.thread_degree_max) == ("gpu", T)
    n_17_32 = sum(1 for d in BIN_DEGREES if T < d <= 32)
    assert cpu.n_small == gpu.n_small + n_17_32 and cpu.n_mid == gpu.n_mid - n_17_32 and cpu.n_hub == gpu.n_hub
    with pytest.raises(InvalidArgumentError, match=r"degree_bins must be 'auto', 'gpu' or 'cpu', got 'warp'"):
        be.degree_bins = "warp"
    assert be.degree_bins == "gpu"


def test_degree_bins_split_and_order():
    degs = np.array([0, 1, T, T + 1, G, G + 1, 5, 0, 40 * G])
    b = degree_bins(degs)
    assert (b.n_small, b.n_mid, b.n_hub) == (3, 2, 2)
    assert b.nodes.tolist() == [1, 6, 2, 3, 4, 5, 8]  # each bin by degree, ties in node order
    assert (b.small_wg, b.mid_wg, b.workgroups) == (1, 1, 2)  # hubs: their own dispatch
    many = degree_bins(np.concatenate([np.full(1000, T + 1), np.full(65, 1)]))
    assert (many.n_small, many.small_wg) == (65, 2)  # 64 segments per workgroup
    assert (many.n_mid, many.mid_wg, many.workgroups) == (1000, 500, 502)  # 2 segments per workgroup
    empty = degree_bins(np.zeros(4, dtype=np.int64))
    assert (empty.nodes.size, empty.workgroups) == (0, 0)


def test_bin_bounds_match_the_shader():
    from energetic_wgpu.wgsl import shader_source

    text = shader_source("edge_probs.wgsl")
    assert int(re.search(r"const SMALL_MAX: u32 = (\d+)u;", text).group(1)) == THREAD_DEGREE_MAX
    assert int(re.search(r"const MID_MAX: u32 = (\d+)u;", text).group(1)) == GROUP_DEGREE_MAX
    assert GROUP_DEGREE_MAX == 32 * int(re.search(r"const PER_LANE: u32 = (\d+)u;", text).group(1))
    assert int(re.search(r"const SWG: u32 = (\d+)u;", text).group(1)) == kernel("edge_probs").workgroup_size
    assert kernel("edge_probs_hub").workgroup_size == 256


# --------------------------------------------------------------------------- parity


#: both degree bins on every adapter: "gpu" (thread <= 16, 32-lane group <= 256, hub) and "cpu"
#: (thread <= 32: degrees 17..32 take the serial path through the output, group <= 256, hub)
BINS = pytest.mark.parametrize("bins", ["gpu", "cpu"])


@BINS
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("top_k", [0, 3])
@numpy_and_wgpu()
def test_edge_probs_every_bin(backend, dim, top_k, bins):
    use_bins(backend, bins)
    g = bins_graph()
    q, k, bias = normal_inputs(g, dim, seed=dim)
    return {"pi": backend.edge_probs(g, q, k, bias, tau=0.8, top_k=top_k)}


@pytest.mark.parametrize("dim", [3, 16])
@pytest.mark.parametrize("top_k", [0, 2])
@numpy_and_wgpu()
def test_edge_probs_thread_bin_only(backend, dim, top_k):
    """A graph whose every degree is in the thread bin: the barrier-free pipeline."""
    g = degree_graph([d for d in BIN_DEGREES if d <= T] * 5, 6)
    q, k, bias = normal_inputs(g, dim, seed=dim)
    return {"pi": backend.edge_probs(g, q, k, bias, tau=0.8, top_k=top_k),
            "kept": backend.segment_topk(g, backend.asarray(bias), 2)}


@BINS
@pytest.mark.parametrize("top_k", [1, 2, T, T + 1, 32, 33, G, G + 1])
@numpy_and_wgpu()
def test_edge_probs_ties_every_bin(backend, top_k, bins):
    """Exact logits with many ties: the kept sets (and so pi) must match NumPy's exactly."""
    use_bins(backend, bins)
    g = bins_graph(1)
    q, k, bias = grid_inputs(g, 5, seed=top_k)
    pi = backend.edge_probs(g, q, k, bias, tau=1.0, top_k=top_k)
    kept = backend.segment_topk(g, backend.edge_logits(g, q, k, bias), top_k)
    return {"pi": pi, "kept": kept, "pi_positive": backend.asarray(backend.to_numpy(pi) > 0)}


@BINS
@pytest.mark.parametrize("top_k", [0, 4])
@numpy_and_wgpu()
def test_edge_probs_power_law(backend, top_k, bins):
    use_bins(backend, bins)
    rng = np.random.default_rng(7)
    degrees = np.minimum(rng.zipf(1.7, size=3000), 2000)  # mostly 1-3, a tail of hubs
    g = degree_graph(degrees, 7)
    q, k, bias = normal_inputs(g, 16, seed=3)
    return {"pi": backend.edge_probs(g, q, k, bias, tau=1.3, top_k=top_k)}


@numpy_and_wgpu()
def test_hub_tie_threshold(backend):
    """A hub whose k-th value ties: 3 values above, 10 equal (+0.0 and -0.0 mixed), the rest
    below; top_k = 6 keeps the 3 and the 3 lowest-indexed equal ones. All-equal hub: the first k."""
    deg = 3 * G
    g = degree_graph([deg, deg, 4], 0)
    rng = np.random.default_rng(0)
    v = -1.0 - rng.random(g.num_edges).astype(np.float32)
    first = rng.permutation(deg)
    v[first[:3]] = 5.0
    v[first[3:13]] = np.where(np.arange(10) % 2 == 0, 0.0, -0.0)
    v[deg:2 * deg] = 2.0
    logits = backend.asarray(v.astype(np.float32))
    return {"kept": backend.segment_topk(g, logits, 6), "pi": backend.segment_softmax(g, logits, 0.5, 6)}


def test_hub_tie_threshold_keeps_the_lowest_indices(gpu_backend):
    deg = 3 * G
    g = Graph.from_csr(np.array([0, deg]), np.zeros(deg, np.int64), num_nodes=1)
    v = np.full(deg, 1.0, np.float32)
    v[[500, 100, 7]] = 3.0
    kept = gpu_backend.to_numpy(gpu_backend.segment_topk(g, gpu_backend.asarray(v), 5))
    assert np.flatnonzero(kept).tolist() == [0, 1, 7, 100, 500]


@pytest.mark.parametrize("top_k", [0, 2, 7])
@numpy_and_wgpu()
def test_edge_probs_packed_views_odd_dim(backend, top_k):
    """q, k and bias as views into one packed buffer (what AdamW updates) with dim 5: rows are
    not vec4 aligned and the views start at non-zero offsets."""
    g = bins_graph(2)
    q, k, bias = normal_inputs(g, 5, seed=5)
    pq, pk, pb = backend.pack([q, k, bias])
    return {"pi": backend.edge_probs(g, pq, pk, pb, tau=0.9, top_k=top_k)}


def test_fused_equals_composed_ops_bitwise(gpu_backend):
    """edge_probs and segment_softmax(edge_logits(...)) compute the same logits (row_dot.wgsl) and
    run the same kernel: the same bits."""
    be = gpu_backend
    g = bins_graph(3)
    for dim in (3, 16):
        q, k, bias = normal_inputs(g, dim, seed=dim)
        for top_k in (0, 3):
            fused = be.to_numpy(be.edge_probs(g, q, k, bias, 0.7, top_k))
            composed = be.to_numpy(be.segment_softmax(g, be.edge_logits(g, q, k, bias), 0.7, top_k))
            assert fused.tobytes() == composed.tobytes(), (dim, top_k)


@pytest.mark.parametrize("upto,dispatches", [(T, 1), (G, 1), (3 * G, 2)])
def test_edge_probs_dispatches(gpu_backend, upto, dispatches):
    """Degrees up to GROUP_DEGREE_MAX: one dispatch for every bin (up to THREAD_DEGREE_MAX the
    barrier-free pipeline); hubs add one. No new buffers and no upload in a repeated call."""
    be = gpu_backend
    g = degree_graph([d for d in BIN_DEGREES if d <= upto], 4)
    q, k, bias = (be.asarray(a) for a in normal_inputs(g, 16))
    be.to_numpy(be.edge_probs(g, q, k, bias, 1.0, 3))  # warm-up: graph data, pipelines, pool
    c0 = be.counters()
    pi = be.edge_probs(g, q, k, bias, 1.0, 3)
    c1 = be.counters()
    assert c1["dispatches"] - c0["dispatches"] == dispatches
    assert c1["buffers_created"] - c0["buffers_created"] == 0
    assert c1["bytes_uploaded"] - c0["bytes_uploaded"] == 0
    del pi


def test_edge_probs_bad_top_k_is_refused_before_gpu_work(backend):
    g = bins_graph()
    q, k, bias = normal_inputs(g, 4)
    c0 = backend.counters()
    with pytest.raises(InvalidArgumentError, match="top_k must be an int >= 0, got -1"):
        backend.edge_probs(g, q, k, bias, 1.0, -1)
    assert backend.counters().get("dispatches", 0) == c0.get("dispatches", 0)
    assert backend.to_numpy(backend.edge_probs(g, q, k, bias, 1.0, 2)).shape == (g.num_edges,)


def test_edge_probs_no_edges(gpu_backend, np_backend):
    g = degree_graph([0, 0, 0], 0)
    q = np.ones((3, 4), np.float32)
    for be in (gpu_backend, np_backend):
        out = be.to_numpy(be.edge_probs(g, q, q, np.zeros(0, np.float32), 1.0, 2))
        assert out.shape == (0,) and out.dtype == np.float32


# --------------------------------------------------------------------------- random graphs

DEGREE_CHOICES = (0, 1, 2, 3, 8, T - 1, T, T + 1, 31, 32, 33, 100, G - 1, G, G + 1, 600)


@settings(max_examples=12)
@given(
    degrees=st.lists(st.sampled_from(DEGREE_CHOICES), min_size=1, max_size=10),
    dim=st.integers(1, 9),
    top_k=st.integers(0, 40) | st.sampled_from([T, T + 1, G, G + 1]),
    tau=st.sampled_from([0.5, 1.0, 3.0]),
    levels=st.sampled_from([2, 3, 9]),
    seed=st.integers(0, 2**16),
)
def test_random_graphs_match_numpy(gpu_backend, np_backend, degrees, dim, top_k, tau, levels, seed):
    """Random degree mixes, dims and top_k on exact grid inputs (few levels: many ties): the kept
    sets equal NumPy's exactly, pi within the parity rule, and a rerun gives the same bits."""
    g = degree_graph(degrees, seed)
    q, k, bias = grid_inputs(g, dim, seed, levels)

    def run(be):
        return to_host(be, {"pi": be.edge_probs(g, q, k, bias, tau, top_k),
                            "kept": be.segment_topk(g, be.edge_logits(g, q, k, bias), top_k)})

    ref = run(np_backend)
    got, again = run(gpu_backend), run(gpu_backend)
    assert got["pi"].tobytes() == again["pi"].tobytes()
    assert_parity(got["pi"], ref["pi"], "pi")
    assert_parity(got["kept"], ref["kept"], "kept")
