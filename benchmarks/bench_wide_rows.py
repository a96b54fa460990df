"""A Router train step past one binding per batch row (wide rows), on default limits.

One batch row of N nodes is past WebGPU's default 128 MiB binding at N > 33.5 M: the scatter,
its backward, the flow, the metrics and the Router then run row by row over the graph's edge
windows (docs/architecture.md, "Wide rows"). This builds a random graph of ``--nodes`` nodes
with out-degrees 0 .. 2 (mean 1), a Router (d = 1) and AdamW on the wgpu backend's default
limits, runs ``--steps`` train steps on ``--batch`` rows, and reports the build and step times,
the loss, the device bytes by purpose (``backend.memory()``) and the peak host memory. On
lavapipe the device memory is host memory: 34.6 M nodes need about 12 GB.

    python -m benchmarks.bench_wide_rows [--nodes 34603008] [--batch 2] [--steps 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import numpy as np

from energetic_wgpu import AdamW, Graph, Router, RouterParams, get_backend

from .common import machine_info, write_json


def sparse_graph(nodes: int, rng: np.random.Generator) -> Graph:
    """A random graph of ``nodes`` nodes with out-degrees 0 .. 2 (mean 1) and uniform targets."""
    deg = rng.integers(0, 3, nodes)
    ptr = np.zeros(nodes + 1, np.int64)
    np.cumsum(deg, out=ptr[1:])
    del deg
    return Graph.from_csr(ptr, rng.integers(0, nodes, int(ptr[-1])), num_nodes=nodes)


def run(nodes: int, batch: int, steps: int, seed: int = 61) -> dict[str, Any]:
    """Build the graph, Router and AdamW and time ``steps`` train steps (each read back)."""
    be = get_backend("wgpu")
    rng = np.random.default_rng(seed)
    g = sparse_graph(nodes, rng)
    q, k = ((0.3 * rng.standard_normal((nodes, 1))).astype(np.float32) for _ in range(2))
    en = rng.random((batch, nodes), np.float32)
    tgt = (0.1 * rng.random((batch, nodes))).astype(np.float32)
    t0 = time.perf_counter()
    r = Router(g, RouterParams(q, k, np.zeros(g.num_edges, np.float32), tau=0.8, alpha=0.9), be)
    opt = AdamW(r, lr=0.01)
    out: dict[str, Any] = {"nodes": nodes, "edges": g.num_edges, "batch": batch,
                           "ptr_block": be.graph_data(g).ptr_block, "build_s": time.perf_counter() - t0,
                           "steps": []}
    for _ in range(steps):
        t0 = time.perf_counter()
        res = r.train_step(en, tgt, opt, steps=1)
        loss = float(res.loss)
        out["steps"].append({"seconds": time.perf_counter() - t0, "loss": loss, "grad_norm": float(res.grad_norm)})
    out["memory"] = be.memory()
    out["peak_host_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["adapter"] = be.runtime.describe()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2**25 + 2**20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = run(args.nodes, args.batch, args.steps)
    print(f"{res['adapter']}: N = {res['nodes']:,}, E = {res['edges']:,}, B = {res['batch']}, "
          f"pointer blocks of {res['ptr_block']:,} nodes; build {res['build_s']:.1f} s")
    for i, s in enumerate(res["steps"]):
        print(f"step {i}: {s['seconds']:.1f} s, loss {s['loss']:.6g}, gradient norm {s['grad_norm']:.3g}")
    mem = res["memory"]
    print("device bytes: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in mem.items()))
    print(f"peak host RSS {res['peak_host_rss_gb']:.1f} GiB")
    if args.json:
        write_json(args.json, {"machine": machine_info(), **res})


if __name__ == "__main__":
    main()
