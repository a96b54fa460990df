"""Per-op GPU benchmark of the wgpu backend's forward kernels, on each adapter (a thin
wrapper: the code is :mod:`energetic_wgpu.benchmarking.ops`, which ``energetic-wgpu bench``
also runs, there with the backward ops and on NumPy too).

For every adapter: the bandwidth of the plain ``copy_vec4`` kernel over a 64 MiB buffer
(the adapter's reference), then ``edge_logits``, ``segment_softmax`` (top_k 0 and 4), the fused
forward ``edge_probs`` (top_k 4),
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
edge_probs         seg_list 4N, row_ptr 4(N+1), col_idx, bias, pi: 12E; Q and K: 2 * 4Nd
energy_scatter     rev_ptr 4(N+1), rev_pairs (edge, source) 8E, pi 4E, energies 4BN, next 4BN
edge_flow          src 4E, pi 4E, energies 4BN, flow 4BE
step_metrics       src 4E, pi 4E, energies 4BN, next 4BN
=================  ===========================================================

Random gathers (pi and energies by source in energy_scatter, Q/K rows in edge_logits) are
counted once per element although they touch a cache line each.

    python -m benchmarks.bench_gpu_ops [--adapter X] [--size small|large] [--graph random|lattice]
                                       [--repeats N] [--json out.json]

``--graph random`` (default): out-degree Poisson(10), uniform random targets (every gather a
cache miss). ``--graph lattice``: the router's layered lattice, 10 layers of N/10 nodes, 8
local + 2 jump neighbours (E ~ 9.8N; at the large size N = 1M, E = 9.8M).

``--size small`` (default): N = 65,536, E ~ 655k, B = 8. ``--size large``: N = 1M, E = 10M,
B = 8 (``edge_flow`` runs with the largest B whose [B, E] output fits the 128 MiB binding
limit, i.e. 3, and says so).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from energetic_wgpu.benchmarking.ops import COPY_BYTES, DEGREE, GRAPHS, SIZES, bench_adapter, random_graph  # noqa: F401
from energetic_wgpu.benchmarking.ops import ops_table as _table

from .common import machine_info, write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu_ops", description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", action="append",
                    help="adapter index or name/backend substring (repeatable; default: every adapter)")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--graph", choices=GRAPHS, default="random",
                    help="random (uniform targets: every gather a cache miss) or lattice (10 layers of N/10, "
                         "8 local + 2 jump neighbours: the router's workload)")
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
        print(f"adapter {sel!r}, size {args.size}, graph {args.graph}:", file=sys.stderr, flush=True)
        res = bench_adapter(sel, args.size, args.repeats, args.warmup, only=args.only, graph_kind=args.graph,
                            echo=lambda s: print(s, file=sys.stderr, flush=True))
        all_results.append(res)
        print(f"\n{res['adapter']}  graph={res['graph']} N={res['nodes']} E={res['edges']} B={res['batch']} "
              f"d={res['dim']}  "
              f"timer: {res['timer']}, median of {args.repeats}")
        print(_table(res))
    if args.json:
        write_json(args.json, {
            "benchmark": "gpu_ops",
            "machine": machine_info(("wgpu",)),
            "size": args.size,
            "graph": args.graph,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "adapters": all_results,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
