"""Per-op benchmark: every backend op on a random graph, with its effective bandwidth against
the same backend's plain copy bandwidth.

For one backend: the bandwidth of a plain copy over a ``copy_bytes`` buffer (on wgpu the
``copy_vec4`` kernel, on NumPy ``np.copyto`` into a preallocated array), then every forward
op (``edge_logits``, ``segment_softmax`` top_k 0 and 4, ``energy_scatter``, ``edge_flow``,
``step_metrics``), the loss (``mse``) and every backward op (``energy_scatter_backward``,
``segment_softmax_backward``, ``edge_logits_backward``) and the clipped ``adamw_step``, on a
random graph (out-degree Poisson(10), uniform random targets). On wgpu each op is timed with
GPU timestamp queries on its compute passes when the adapter has "timestamp-query" (else
synchronized wall time); the synchronized wall time is kept beside it. Median of ``repeats``
interleaved rounds (each round runs every op once, so load on the machine hits all ops
alike) after ``warmup`` rounds. Effective bandwidth = the bytes the op must move at minimum /
time, and its ratio to the copy's bandwidth on the same backend: on a software rasterizer
(lavapipe, llvmpipe) absolute times mean little, ratios do.

Minimum bytes per op (4-byte elements; N nodes, E edges, B batch rows, d = dim, P = params):

========================  =======================================================
op                        bytes (read + write, each array once)
========================  =======================================================
copy                      2 * 4n
edge_logits               src, col_idx, bias, logits: 16E; Q and K: 2 * 4Nd
segment_softmax           row_ptr 4(N+1), logits 4E, pi 4E
energy_scatter            rev_ptr 4(N+1), rev_pairs (edge, source) 8E, pi 4E, energies 4BN, next 4BN
edge_flow                 src 4E, pi 4E, energies 4BN, flow 4BE
step_metrics              src 4E, pi 4E, energies 4BN, next 4BN
mse                       pred, target, grad: 12BN
energy_scatter_backward   src, col_idx 8E, pi 4E, grad_pi 4E; energies, grad_next, grad_energies 12BN
segment_softmax_backward  row_ptr 4(N+1), pi, grad_pi, grad_logits 12E
edge_logits_backward      src, col_idx, grad_logits, grad_bias 16E; q, k, grad_q, grad_k 16Nd
adamw_step                params, grads, m, v read; params, m, v written: 28P (P = 2Nd + E)
========================  =======================================================

Random gathers are counted once per element although they touch a cache line each.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from ..graph import Graph, GraphConfig, build_lattice
from .timing import format_table, ms_stats, time_fn

log = logging.getLogger("energetic_wgpu.bench")

__all__ = ["SIZES", "COPY_BYTES", "GRAPHS", "random_graph", "lattice_graph", "make_graph", "bench_ops",
           "bench_adapter", "ops_table"]

SIZES: dict[str, dict[str, int]] = {
    "quick": {"nodes": 16_384, "edges": 163_840, "batch": 8, "dim": 16},
    "small": {"nodes": 65_536, "edges": 655_360, "batch": 8, "dim": 16},
    "large": {"nodes": 1_000_000, "edges": 10_000_000, "batch": 8, "dim": 16},
}
COPY_BYTES = 64 * 2**20  # the copy reference: 64 MiB in, 64 MiB out
DEGREE = 10
FORWARD_OPS = ("edge_logits", "segment_softmax", "edge_probs", "energy_scatter", "edge_flow", "step_metrics")


def random_graph(nodes: int, edges: int, seed: int = 0) -> Graph:
    """``edges`` edges with uniform random sources (out-degree ~ Poisson(edges/nodes), some
    sinks) and uniform random targets, in CSR order."""
    rng = np.random.default_rng(seed)
    src = np.sort(rng.integers(0, nodes, size=edges, dtype=np.int64))
    row_ptr = np.zeros(nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=nodes), out=row_ptr[1:])
    col = rng.integers(0, nodes, size=edges, dtype=np.int64)
    return Graph.from_csr(row_ptr, col, nodes)


def lattice_graph(nodes: int) -> Graph:
    """The router's layered lattice (docs/definitions.md §7) with ~``nodes`` nodes: 10 layers of
    ``nodes // 10`` nodes, 8 local neighbours in the next layer and 2 jump neighbours two
    layers down (out-degree 10, last layer sinks: E ~ 9.8 N at 10 layers). Unlike
    :func:`random_graph` it has locality: a node's targets sit next to each other."""
    return build_lattice(GraphConfig(layers=10, nodes_per_layer=max(1, nodes // 10), local_neighbors=8,
                                     jump_neighbors=2))


GRAPHS = ("random", "lattice")


def make_graph(kind: str, nodes: int, edges: int, seed: int = 0) -> Graph:
    """``"random"``: :func:`random_graph` (every gather a cache miss); ``"lattice"``:
    :func:`lattice_graph` (``edges`` is ignored: E ~ 9.8 N)."""
    if kind == "random":
        return random_graph(nodes, edges, seed)
    if kind == "lattice":
        return lattice_graph(nodes)
    raise ValueError(f"graph must be one of {GRAPHS}, got {kind!r}")


def _is_wgpu(be: Any) -> bool:
    return hasattr(be, "runtime")


def _sample(backend: Any, name: str, fn: Callable[[], Any]) -> tuple[float, float | None]:
    """One synchronized run of ``fn`` (which encodes one op): (wall ms, GPU ms or None).

    With timestamps, ``Runtime.gpu_time`` submits and reads the timestamps back, so the wall
    time is synchronized either way."""
    rt = getattr(backend, "runtime", None)
    if rt is not None and rt.has_timestamps:
        gpu: list[float] = []
        wall = time_fn(name, lambda: gpu.append(rt.gpu_time(fn)[1]), repeats=1, warmup=0)
        return wall.samples_ms[0], gpu[0]
    wall = time_fn(name, fn, repeats=1, warmup=0, synchronize=backend.synchronize)
    return wall.samples_ms[0], None


def _summary(name: str, wall: list[float], gpu: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"op": name, "wall": {**ms_stats(wall), "samples_ms": [round(x, 4) for x in wall]}}
    if gpu:
        out["gpu"] = {**ms_stats(gpu), "samples_ms": [round(x, 4) for x in gpu]}
        out["ms"], out["timer"] = out["gpu"]["median_ms"], "gpu-timestamp"
    else:
        out["ms"], out["timer"] = out["wall"]["median_ms"], "wall-synchronized"
    return out


def bench_ops(
    be: Any,
    size: str = "small",
    repeats: int = 10,
    warmup: int = 2,
    seed: int = 0,
    only: list[str] | None = None,
    copy_bytes: int = COPY_BYTES,
    backward: bool = True,
    echo: Callable[[str], None] | None = None,
    graph_kind: str = "random",
) -> dict[str, Any]:
    """Time every op on backend ``be`` (NumPy or wgpu) at ``size`` (a key of :data:`SIZES`)
    on the graph ``graph_kind`` (see :func:`make_graph`).

    ``only``: run the ops whose name contains one of these strings (the copy always runs);
    ``backward``: include mse, the backward ops and adamw_step. Returns a dict with the copy
    bandwidth and, per op, timings, bytes, GB/s and the ratio to the copy."""
    cfg = SIZES[size]
    n, e_target, batch, dim = cfg["nodes"], cfg["edges"], cfg["batch"], cfg["dim"]
    rng = np.random.default_rng(seed)
    graph = make_graph(graph_kind, n, e_target, seed)
    n = graph.num_nodes
    e = graph.num_edges
    wgpu = _is_wgpu(be)
    limit = be.limits["max_storage_buffer_binding_size"] if wgpu else 1 << 62
    flow_batch = max(1, min(batch, limit // (4 * e)))

    def up(a: np.ndarray) -> Any:
        return be.asarray(a.astype(np.float32))

    q = up(rng.standard_normal((n, dim)) * 0.3)
    k = up(rng.standard_normal((n, dim)) * 0.3)
    bias = up(rng.standard_normal(e) * 0.1)
    energies = up(rng.random((batch, n)))
    energies_flow = up(rng.random((flow_batch, n)))
    target = up(rng.random((batch, n)))
    if wgpu:
        be.graph_data(graph)
    logits = be.edge_logits(graph, q, k, bias)
    pi = be.segment_softmax(graph, logits, 1.0, 4)
    nxt = be.energy_scatter(graph, energies, pi, 1.0)
    _, g_next = be.mse(nxt, target)
    _, g_pi = be.energy_scatter_backward(graph, energies, pi, g_next, 1.0)
    g_logits = be.segment_softmax_backward(graph, pi, g_pi, 1.0)
    grads = list(be.edge_logits_backward(graph, q, k, g_logits))
    params = [up(rng.standard_normal((n, dim)) * 0.3), up(rng.standard_normal((n, dim)) * 0.3), up(np.zeros(e))]
    m_state = [be.zeros(tuple(p.shape)) for p in params]
    v_state = [be.zeros(tuple(p.shape)) for p in params]
    step = be.zeros((1,))
    n_copy = copy_bytes // 4
    if wgpu:
        copy_src = up(rng.random(n_copy))

        def copy() -> Any:
            return be.copy(copy_src)
    else:
        copy_src_np = rng.random(n_copy).astype(np.float32)
        copy_dst_np = np.empty_like(copy_src_np)

        def copy() -> Any:
            np.copyto(copy_dst_np, copy_src_np)
    be.synchronize()

    n_params = 2 * n * dim + e
    ops: list[tuple[str, Callable[[], Any], int]] = [
        (f"{'copy_vec4' if wgpu else 'np.copyto'} ({copy_bytes >> 20} MiB)", copy, 2 * 4 * n_copy),
        ("edge_logits", lambda: be.edge_logits(graph, q, k, bias), 16 * e + 8 * n * dim),
        ("segment_softmax top_k=0", lambda: be.segment_softmax(graph, logits, 1.0, 0), 8 * e + 4 * (n + 1)),
        ("segment_softmax top_k=4", lambda: be.segment_softmax(graph, logits, 1.0, 4), 8 * e + 4 * (n + 1)),
        # the fused forward: seg_list, row_ptr, col_idx, bias, Q and K in, pi out (no logits stored)
        ("edge_probs top_k=4", lambda: be.edge_probs(graph, q, k, bias, 1.0, 4), 12 * e + 8 * n * dim + 8 * n + 4),
        ("energy_scatter", lambda: be.energy_scatter(graph, energies, pi, 1.0), 4 * (n + 1) + 12 * e + 8 * batch * n),
        (
            f"edge_flow (B={flow_batch})",
            lambda: be.edge_flow(graph, energies_flow, pi, 1.0),
            8 * e + 4 * flow_batch * n + 4 * flow_batch * e,
        ),
        ("step_metrics", lambda: be.step_metrics(graph, energies, nxt, pi, 1.0), 8 * e + 8 * batch * n),
    ]
    if backward:
        ops += [
            ("mse", lambda: be.mse(nxt, target), 12 * batch * n),
            ("energy_scatter_backward", lambda: be.energy_scatter_backward(graph, energies, pi, g_next, 1.0),
             16 * e + 12 * batch * n),
            ("segment_softmax_backward", lambda: be.segment_softmax_backward(graph, pi, g_pi, 1.0),
             12 * e + 4 * (n + 1)),
            ("edge_logits_backward", lambda: be.edge_logits_backward(graph, q, k, g_logits), 16 * e + 16 * n * dim),
            ("adamw_step (clipped)",
             lambda: be.adamw_step(params, grads, m_state, v_state, step, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0),
             28 * n_params),
        ]
    if only:
        ops = ops[:1] + [op for op in ops[1:] if any(o in op[0] for o in only)]
    walls: list[list[float]] = [[] for _ in ops]
    gpus: list[list[float]] = [[] for _ in ops]
    for rnd in range(warmup + repeats):
        for i, (name, fn, _) in enumerate(ops):
            w_ms, g_ms = _sample(be, name, fn)
            if rnd >= warmup:
                walls[i].append(w_ms)
                if g_ms is not None:
                    gpus[i].append(g_ms)
    results = []
    copy_gbs = None
    for i, (name, _fn, nbytes) in enumerate(ops):
        r = _summary(name, walls[i], gpus[i])
        r["bytes"] = nbytes
        r["gb_per_s"] = nbytes / (r["ms"] * 1e6)
        if copy_gbs is None:
            copy_gbs = r["gb_per_s"]
        r["ratio_to_copy"] = r["gb_per_s"] / copy_gbs
        results.append(r)
        if echo is not None:
            echo(f"  {name}: {r['ms']:.3f} ms ({r['timer']}), {r['gb_per_s']:.3f} GB/s, "
                 f"x{r['ratio_to_copy']:.2f} of copy")
    return {
        "device": be.describe(),
        "timer": results[0]["timer"],
        "size": size,
        "graph": graph_kind,
        "nodes": n,
        "edges": e,
        "batch": batch,
        "dim": dim,
        "flow_batch": flow_batch,
        "max_in_degree": graph.max_in_degree,
        "max_out_degree": graph.max_out_degree,
        "repeats": repeats,
        "warmup": warmup,
        "copy_gb_per_s": copy_gbs,
        "ops": results,
    }


def make_timed_wgpu_backend(adapter: Any) -> Any:
    """A WgpuBackend on ``adapter`` with "timestamp-query" when the adapter has it."""
    from ..backends.webgpu import WgpuBackend, list_adapters

    info = next((a for a in list_adapters() if a["index"] == adapter), None) if isinstance(adapter, int) else None
    feats = ["timestamp-query"] if info is None or "timestamp-query" in info["features"] else []
    try:
        return WgpuBackend(adapter=adapter, features=feats)
    except Exception:
        return WgpuBackend(adapter=adapter)


def bench_adapter(
    adapter: Any, size: str, repeats: int, warmup: int, seed: int = 0, only: list[str] | None = None,
    backward: bool = False, graph_kind: str = "random", echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`bench_ops` on one wgpu adapter (index or selector string), forward ops only by
    default (as ``benchmarks/bench_gpu_ops.py`` always did); progress goes to stderr."""
    be = make_timed_wgpu_backend(adapter)
    res = bench_ops(be, size, repeats, warmup, seed, only, backward=backward, graph_kind=graph_kind,
                    echo=echo or log.info)
    ai = be.adapter_info
    return {"adapter": f"{ai.get('device', '?')} via {ai.get('backend_type', '?')}",
            "backend_type": ai.get("backend_type", ""), **res}


def ops_table(res: dict[str, Any]) -> str:
    """A plain-text table of one :func:`bench_ops` result."""
    rows = [
        [r["op"], f"{r['ms']:.3f}", f"{r['wall']['median_ms']:.3f}", f"{r['bytes'] / 1e6:.1f}",
         f"{r['gb_per_s']:.3f}", f"{r['ratio_to_copy']:.2f}"]
        for r in res["ops"]
    ]
    return format_table(["op", "ms", "wall ms", "MB", "GB/s", "ratio to copy"], rows)
