"""Per-op GPU benchmark of the wgpu backend's forward kernels, on each adapter.

For every adapter: the bandwidth of the plain ``copy_vec4`` kernel over a 64 MiB buffer
(the adapter's reference), then ``edge_logits``, ``segment_softmax`` (top_k 0 and 4),
``energy_scatter``, ``edge_flow`` and ``step_metrics`` on a random graph (out-degree
Poisson(10), uniform random targets). Each op is timed with GPU timestamp queries on its
compute passes when the adapter has "timestamp-query" (else synchronized wall time), after a
warm-up, as the median of ``--repeats`` runs (interleaved rounds: each round runs every op
once, so load on the machine hits all ops alike); the synchronized wall time (submit + wait)
is reported beside it. Effective bandwidth = the bytes the op must move at minimum / time, and
its ratio to the copy kernel's bandwidth on the same adapter: on a software rasterizer
(lavapipe, llvmpipe) absolute times mean little, ratios do.

Minimum bytes per op (4-byte elements; N nodes, E edges, B batch rows, d = dim):

=================  ===========================================================
op                 bytes (read + write, each array once)
=================  ===========================================================
copy               2 * 4n
edge_logits        src, col_idx, bias, logits: 16E; Q and K: 2 * 4Nd
segment_softmax    row_ptr 4(N+1), logits 4E, pi 4E
energy_scatter     rev_ptr 4(N+1), rev_pairs (edge, source) 8E, pi 4E, energies 4BN, next 4BN
edge_flow          src 4E, pi 4E, energies 4BN, flow 4BE
step_metrics       src 4E, pi 4E, energies 4BN, next 4BN
=================  ===========================================================

Random gathers (pi and energies by source in energy_scatter, Q/K rows in edge_logits) are
counted once per element although they touch a cache line each.

    python -m benchmarks.bench_gpu_ops [--adapter X] [--size small|large] [--repeats N] [--json out.json]

``--size small`` (default): N = 65,536, E ~ 655k, B = 8. ``--size large``: N = 1M, E = 10M,
B = 8 (``edge_flow`` runs with the largest B whose [B, E] output fits the 128 MiB binding
limit, i.e. 3, and says so).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

import numpy as np

from energetic_wgpu.graph import Graph

from .common import format_table, machine_info, time_fn, write_json

SIZES: dict[str, dict[str, int]] = {
    "small": {"nodes": 65_536, "edges": 655_360, "batch": 8, "dim": 16},
    "large": {"nodes": 1_000_000, "edges": 10_000_000, "batch": 8, "dim": 16},
}
COPY_BYTES = 64 * 2**20  # the copy reference: 64 MiB in, 64 MiB out
DEGREE = 10


def random_graph(nodes: int, edges: int, seed: int = 0) -> Graph:
    """``edges`` edges with uniform random sources (out-degree ~ Poisson(edges/nodes), some
    sinks) and uniform random targets, in CSR order."""
    rng = np.random.default_rng(seed)
    src = np.sort(rng.integers(0, nodes, size=edges, dtype=np.int64))
    row_ptr = np.zeros(nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=nodes), out=row_ptr[1:])
    col = rng.integers(0, nodes, size=edges, dtype=np.int64)
    return Graph.from_csr(row_ptr, col, nodes)


def _ms_stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {
        "median_ms": float(np.median(a)),
        "q1_ms": float(np.percentile(a, 25)),
        "q3_ms": float(np.percentile(a, 75)),
        "min_ms": float(a.min()),
    }


def _sample(backend: Any, name: str, fn: Callable[[], Any]) -> tuple[float, float | None]:
    """One synchronized run of ``fn`` (which encodes one op): (wall ms, GPU ms or None).

    With timestamps, ``Runtime.gpu_time`` submits and reads the timestamps back, so the wall
    time is synchronized either way."""
    rt = backend.runtime
    if rt.has_timestamps:
        gpu: list[float] = []
        wall = time_fn(name, lambda: gpu.append(rt.gpu_time(fn)[1]), repeats=1, warmup=0)
        return wall.samples_ms[0], gpu[0]
    wall = time_fn(name, fn, repeats=1, warmup=0, synchronize=backend.synchronize)
    return wall.samples_ms[0], None


def _summary(name: str, wall: list[float], gpu: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"op": name, "wall": {**_ms_stats(wall), "samples_ms": [round(x, 4) for x in wall]}}
    if gpu:
        out["gpu"] = {**_ms_stats(gpu), "samples_ms": [round(x, 4) for x in gpu]}
        out["ms"], out["timer"] = out["gpu"]["median_ms"], "gpu-timestamp"
    else:
        out["ms"], out["timer"] = out["wall"]["median_ms"], "wall-synchronized"
    return out


def bench_adapter(
    adapter: Any, size: str, repeats: int, warmup: int, seed: int = 0, only: list[str] | None = None
) -> dict[str, Any]:
    """All measurements on one adapter (index or selector string)."""
    from energetic_wgpu.backends.webgpu import WgpuBackend, list_adapters

    info = next((a for a in list_adapters() if a["index"] == adapter), None) if isinstance(adapter, int) else None
    feats = ["timestamp-query"] if info is None or "timestamp-query" in info["features"] else []
    try:
        be = WgpuBackend(adapter=adapter, features=feats)
    except Exception:
        be = WgpuBackend(adapter=adapter)
    cfg = SIZES[size]
    n, e_target, batch, dim = cfg["nodes"], cfg["edges"], cfg["batch"], cfg["dim"]
    rng = np.random.default_rng(seed)
    graph = random_graph(n, e_target, seed)
    e = graph.num_edges
    limit = be.limits["max_storage_buffer_binding_size"]
    flow_batch = max(1, min(batch, limit // (4 * e)))

    # inputs on the device (uploaded once)
    q = be.asarray((rng.standard_normal((n, dim)) * 0.3).astype(np.float32))
    k = be.asarray((rng.standard_normal((n, dim)) * 0.3).astype(np.float32))
    bias = be.asarray((rng.standard_normal(e) * 0.1).astype(np.float32))
    energies = be.asarray(rng.random((batch, n)).astype(np.float32))
    energies_flow = be.asarray(rng.random((flow_batch, n)).astype(np.float32))
    be.graph_data(graph)
    logits = be.edge_logits(graph, q, k, bias)
    pi = be.segment_softmax(graph, logits, 1.0, 4)
    nxt = be.energy_scatter(graph, energies, pi, 1.0)
    n_copy = COPY_BYTES // 4
    copy_src = be.asarray(rng.random(n_copy).astype(np.float32))
    be.synchronize()

    ops: list[tuple[str, Callable[[], Any], int]] = [
        ("copy_vec4 (64 MiB)", lambda: be.copy(copy_src), 2 * 4 * n_copy),
        ("edge_logits", lambda: be.edge_logits(graph, q, k, bias), 16 * e + 8 * n * dim),
        ("segment_softmax top_k=0", lambda: be.segment_softmax(graph, logits, 1.0, 0), 8 * e + 4 * (n + 1)),
        ("segment_softmax top_k=4", lambda: be.segment_softmax(graph, logits, 1.0, 4), 8 * e + 4 * (n + 1)),
        ("energy_scatter", lambda: be.energy_scatter(graph, energies, pi, 1.0), 4 * (n + 1) + 12 * e + 8 * batch * n),
        (
            f"edge_flow (B={flow_batch})",
            lambda: be.edge_flow(graph, energies_flow, pi, 1.0),
            8 * e + 4 * flow_batch * n + 4 * flow_batch * e,
        ),
        ("step_metrics", lambda: be.step_metrics(graph, energies, nxt, pi, 1.0), 8 * e + 8 * batch * n),
    ]
    if only:  # the copy reference always runs
        ops = ops[:1] + [op for op in ops[1:] if any(o in op[0] for o in only)]
    # interleaved rounds: every op (the copy reference included) runs once per round, so a
    # busy machine slows all of them alike and the ratios stay meaningful
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
    for i, (name, fn, nbytes) in enumerate(ops):
        r = _summary(name, walls[i], gpus[i])
        r["bytes"] = nbytes
        r["gb_per_s"] = nbytes / (r["ms"] * 1e6)
        if copy_gbs is None:
            copy_gbs = r["gb_per_s"]
        r["ratio_to_copy"] = r["gb_per_s"] / copy_gbs
        results.append(r)
        print(f"  {name}: {r['ms']:.3f} ms ({r['timer']}), {r['gb_per_s']:.3f} GB/s, x{r['ratio_to_copy']:.2f} of copy",
              file=sys.stderr, flush=True)
    ai = be.adapter_info
    return {
        "adapter": f"{ai.get('device', '?')} via {ai.get('backend_type', '?')}",
        "backend_type": ai.get("backend_type", ""),
        "timer": results[0]["timer"],
        "size": size,
        "nodes": n,
        "edges": e,
        "batch": batch,
        "dim": dim,
        "flow_batch": flow_batch,
        "max_in_degree": graph.max_in_degree,
        "max_out_degree": graph.max_out_degree,
        "copy_gb_per_s": copy_gbs,
        "ops": results,
    }


def _table(res: dict[str, Any]) -> str:
    rows = [
        [r["op"], f"{r['ms']:.3f}", f"{r['wall']['median_ms']:.3f}", f"{r['bytes'] / 1e6:.1f}",
         f"{r['gb_per_s']:.3f}", f"{r['ratio_to_copy']:.2f}"]
        for r in res["ops"]
    ]
    return format_table(["op", "ms", "wall ms", "MB", "GB/s", "ratio to copy"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu_ops", description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", action="append",
                    help="adapter index or name/backend substring (repeatable; default: every adapter)")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only the ops whose name contains NAME (repeatable; the copy always runs)")
    ap.add_argument("--json", metavar="PATH", help="write all results as JSON")
    args = ap.parse_args(argv)

    from energetic_wgpu.backends.webgpu import list_adapters

    selectors: list[Any]
    if args.adapter:
        selectors = [int(a) if a.isdigit() else a for a in args.adapter]
    else:
        selectors = [a["index"] for a in list_adapters()]
    all_results = []
    for sel in selectors:
        print(f"adapter {sel!r}, size {args.size}:", file=sys.stderr, flush=True)
        res = bench_adapter(sel, args.size, args.repeats, args.warmup, only=args.only)
        all_results.append(res)
        print(f"\n{res['adapter']}  N={res['nodes']} E={res['edges']} B={res['batch']} d={res['dim']}  "
              f"timer: {res['timer']}, median of {args.repeats}")
        print(_table(res))
    if args.json:
        write_json(args.json, {
            "benchmark": "gpu_ops",
            "machine": machine_info(("wgpu",)),
            "size": args.size,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "adapters": all_results,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
