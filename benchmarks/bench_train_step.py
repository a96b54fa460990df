"""Benchmark of the full train step (forward, mse, backward, clipped AdamW) on every backend.

The baseline lattice (10 x 1024, local 8, jump 2), B = 64, d = 16, top_k = 4, steps = 1.
For each backend/adapter: the median time of a synchronized step, and for wgpu the host
overhead of one step (encode + submit, timed without waiting; the queue is drained between
samples) and the steady-state work counters per step. Results go to stdout, to a JSON file
with ``--json``, and appended to benchmarks/RESULTS.md under "GPU train step" with ``--append``.

    python -m benchmarks.bench_train_step [--repeats 20] [--json out.json] [--append]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import format_table, machine_info, time_fn, write_json
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.graph import GraphConfig, build_lattice
from energetic_wgpu.optim import AdamW
from energetic_wgpu.router import Router, RouterParams


def _backends() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [("numpy", NumpyBackend())]
    try:
        from energetic_wgpu.backends.webgpu import WgpuBackend, list_adapters

        for a in list_adapters():
            out.append((f"wgpu {a['backend_type']} ({a['name']})", WgpuBackend(adapter=a["index"])))
    except Exception as exc:  # no wgpu: CPU only
        print(f"wgpu unavailable: {exc}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", default=None)
    ap.add_argument("--append", action="store_true", help="append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    graph = build_lattice(GraphConfig(layers=10, nodes_per_layer=1024, local_neighbors=8, jump_neighbors=2))
    params = RouterParams.init(graph, 16, top_k=4, seed=0)
    rng = np.random.default_rng(0)
    en = np.zeros((args.batch, graph.num_nodes), np.float32)
    en[:, :1024] = rng.random((args.batch, 1024))
    tgt = (rng.random((args.batch, graph.num_nodes)) * 0.01).astype(np.float32)
    rows, results = [], []
    for name, be in _backends():
        router = Router(graph, params, be)
        opt = AdamW(router, lr=1e-3, max_grad_norm=1.0)
        e, t = be.asarray(en), be.asarray(tgt)

        def step() -> None:
            router.train_step(e, t, opt)

        timing = time_fn(name, step, repeats=args.repeats, warmup=3, synchronize=be.synchronize)
        host_ms, per_step = float("nan"), {}
        if hasattr(be, "counters"):
            samples = []
            for _ in range(args.repeats):
                be.synchronize()
                t0 = time.perf_counter()
                step()  # encode + one submit, no wait
                samples.append((time.perf_counter() - t0) * 1e3)
            host_ms = float(np.median(samples))
            be.synchronize()
            before = be.counters.snapshot()
            for _ in range(5):
                step()
            be.synchronize()
            after = be.counters.snapshot()
            per_step = {k: (after[k] - before[k]) / 5 for k in ("submits", "dispatches", "buffers_created",
                                                                 "bind_groups_created", "bytes_read_back")}
            per_step["submits"] -= 1 / 5  # the synchronize's own tiny submit
        rows.append([name, f"{timing.median_ms:.2f}", f"{timing.iqr_ms:.2f}", f"{host_ms:.3f}",
                     f"{per_step.get('submits', float('nan')):.0f}", f"{per_step.get('dispatches', float('nan')):.0f}",
                     f"{per_step.get('buffers_created', float('nan')):.0f}"])
        results.append({"backend": name, "timing": timing.as_dict(), "host_overhead_ms": host_ms, "per_step": per_step})
    headers = ["backend", "step ms (median)", "IQR", "host encode+submit ms", "submits", "dispatches", "new buffers"]
    table = format_table(headers, rows)
    print(table)
    info = machine_info(("wgpu",))
    if args.json:
        write_json(args.json, {"machine": info, "graph": repr(graph), "batch": args.batch, "results": results})
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        with path.open("a", encoding="utf-8") as f:
            f.write(
                f"\n## GPU train step\n\nFull `Router.train_step` (forward, mse, backward, clipped AdamW), "
                f"baseline lattice 10x1024, B = {args.batch}, d = 16, top_k = 4, {args.repeats} repeats, "
                f"machine: {info.get('cpu', info)}.\n\n```\n{table}\n```\n"
            )


if __name__ == "__main__":
    main()
