"""Benchmark of the full train step (forward, mse, backward, clipped AdamW) on every backend.

The baseline lattice (10 x 1024, local 8, jump 2), B = 64, d = 16, top_k = 4, steps = 1 (``--steps T``
for a T-step forward and backward).
For each backend/adapter: the median time of a synchronized step, and for wgpu the host
overhead of one step (encode + submit, timed without waiting; the queue is drained before
each sample; also split into encode and submit, and as the thread's CPU time; see
``_host_overhead``) and the steady-state work counters per step. Results go to stdout, to a JSON file
with ``--json``, and appended to benchmarks/RESULTS.md under "GPU train step" with ``--append``.

    python -m benchmarks.bench_train_step [--repeats 20] [--host-repeats 200] [--steps 1] [--json out.json] [--append]
"""

from __future__ import annotations

import argparse
import os
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


def _host_overhead(be: object, step: object, repeats: int) -> dict[str, float]:
    """Host side of one steady-state step, medians over ``repeats`` samples, each taken with
    the queue drained first (``synchronize``) so that no earlier work is in flight:

    * step_ms: wall time of ``step()`` = encode + its one submit, no wait for the GPU;
    * encode_ms / submit_ms: the same step with the submit held back (steps_per_submit set
      high), then the ``flush()`` that submits it, timed apart;
    * cpu_ms: the calling thread's CPU time for ``step()`` (``time.thread_time``), which leaves
      out time the thread was descheduled (the software adapters run on the same CPUs).
    """
    from energetic_wgpu.backends.webgpu import ops_train

    wall, cpu, enc, sub = [], [], [], []
    for _ in range(repeats):
        be.synchronize()  # type: ignore[attr-defined]
        t0, c0 = time.perf_counter(), time.thread_time()
        step()  # type: ignore[operator]
        c1, t1 = time.thread_time(), time.perf_counter()
        wall.append((t1 - t0) * 1e3)
        cpu.append((c1 - c0) * 1e3)
    ops_train.set_steps_per_submit(be, 1 << 30)
    try:
        for _ in range(repeats):
            be.synchronize()  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            step()  # type: ignore[operator]
            t1 = time.perf_counter()
            be.flush()  # type: ignore[attr-defined]
            t2 = time.perf_counter()
            enc.append((t1 - t0) * 1e3)
            sub.append((t2 - t1) * 1e3)
    finally:
        ops_train.set_steps_per_submit(be, 1)
    return {
        "step_ms": float(np.median(wall)),
        "step_p10_ms": float(np.percentile(wall, 10)),
        "cpu_ms": float(np.median(cpu)),
        "encode_ms": float(np.median(enc)),
        "submit_ms": float(np.median(sub)),
        "repeats": repeats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--host-repeats", type=int, default=200, help="samples of the host overhead")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1, help="router steps T per train step")
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
            router.train_step(e, t, opt, steps=args.steps)

        timing = time_fn(name, step, repeats=args.repeats, warmup=3, synchronize=be.synchronize)
        host: dict[str, float] = {}
        per_step: dict[str, float] = {}
        if hasattr(be, "runtime"):  # a wgpu backend
            host = _host_overhead(be, step, args.host_repeats)
            be.synchronize()
            before = be.counters.snapshot()
            for _ in range(5):
                step()
            be.synchronize()
            after = be.counters.snapshot()
            per_step = {k: (after[k] - before[k]) / 5 for k in ("submits", "dispatches", "buffers_created",
                                                                 "bind_groups_created", "uniform_buffers_created",
                                                                 "bytes_read_back")}
            per_step["submits"] -= 1 / 5  # the synchronize's own tiny submit
        nan = float("nan")
        rows.append([name, f"{timing.median_ms:.2f}", f"{timing.iqr_ms:.2f}",
                     f"{host.get('step_ms', nan):.3f}", f"{host.get('encode_ms', nan):.3f}",
                     f"{host.get('submit_ms', nan):.3f}", f"{host.get('cpu_ms', nan):.3f}",
                     f"{per_step.get('submits', nan):.0f}", f"{per_step.get('dispatches', nan):.0f}",
                     f"{per_step.get('buffers_created', nan):.0f}"])
        results.append({"backend": name, "timing": timing.as_dict(), "host_overhead_ms": host.get("step_ms", nan),
                        "host": host, "per_step": per_step})
    headers = ["backend", "step ms (median)", "IQR", "host encode+submit ms", "encode ms", "submit ms",
               "host CPU ms", "submits", "dispatches", "new buffers"]
    table = format_table(headers, rows)
    print(table)
    info = machine_info(("wgpu",))
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    if args.json:
        write_json(args.json, {"machine": info, "graph": repr(graph), "batch": args.batch, "steps": args.steps,
                               "results": results})
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        with path.open("a", encoding="utf-8") as f:
            f.write(
                f"\n## GPU train step\n\nFull `Router.train_step` (forward, mse, backward, clipped AdamW), "
                f"baseline lattice 10x1024, B = {args.batch}, d = 16, top_k = 4, T = {args.steps}, "
                f"{args.repeats} repeats, {args.host_repeats} host samples, machine: {info.get('cpu', info)}, "
                f"load average "
                f"{load[0]:.1f} on {os.cpu_count()} CPUs.\n\n```\n{table}\n```\n"
            )


if __name__ == "__main__":
    main()
