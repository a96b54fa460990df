"""Size sweep of the train step: time and bytes per edge against the number of edges E.

A random graph with out-degree 10 (N = E / 10 nodes), d = 16, top_k = 0, one `Router.train_step`
(forward, mse, backward, AdamW) per sample, for each size E (default 10^4 .. 10^8 in half
decades) and batch B (default 1 and 8):

* NumPy (one process): median step time; host bytes: the backend's persistent arrays
  (``backend.memory()``: graph index arrays, parameters, AdamW state) plus the inputs, and the
  transient peak of one step (``tracemalloc``). A size whose estimated bytes (from the bytes
  per edge of the last size run) exceed the available RAM is not run: the sweep stops there
  and says so.
* wgpu on each adapter (lavapipe in CI), WebGPU's default limits: median step time and the
  device bytes a size adds by the end of its steps (``backend.memory()`` after minus before:
  total, and by purpose; the pool's free buffers are the step's reused transients). Sizes run until one
  is refused (the refusal's message is recorded as the wall: today one storage binding,
  128 MiB, caps every array) or a step would pass ``--gpu-max-seconds``; then the larger
  sizes are only built (Router, AdamW, inputs; no step) until one is refused, to find the wall.

Each row also gives the minimum bytes a train step needs (the arrays the math uses: the CSR
graph, parameters, gradients, AdamW's two moments, pi, and energies, target and next
energies [B, N]) and the ratio of the measured bytes to it. The log-log slope of time
against E (1.0: linear) is reported per backend and batch. Output: a table on stdout, JSON
with ``--json``, a plot with ``--plot`` (needs matplotlib; skipped with a message without it).

    python -m benchmarks.bench_size_sweep [--min-edges 1e4] [--max-edges 1e7] [--batches 1,8]
        [--json out.json] [--plot sweep.png] [--gpu-max-seconds 60] [--no-gpu] [--no-numpy] [--dry-run]

``--dry-run`` runs two tiny sizes (E = 1,000 and 3,000, B = 1, one repeat): a smoke test.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
import tracemalloc
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.common import loglog_slope, machine_info, write_json
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.errors import DeviceLimitError
from energetic_wgpu.graph import Graph
from energetic_wgpu.optim import AdamW
from energetic_wgpu.router import Router, RouterParams

DEGREE = 10
DIM = 16
DEFAULT_SIZES = tuple(int(round(10 ** (k / 2))) for k in range(8, 17))  # 1e4, 3.2e4, ..., 1e8


def make_graph(num_edges: int, seed: int = 0) -> Graph:
    """A random graph with out-degree ``DEGREE`` (N = E / DEGREE), targets uniform."""
    n = max(1, num_edges // DEGREE)
    rng = np.random.default_rng(seed)
    row_ptr = np.arange(n + 1, dtype=np.int64) * DEGREE
    col = rng.integers(0, n, size=n * DEGREE, dtype=np.int64).astype(np.int32)
    return Graph.from_csr(row_ptr, col, num_nodes=n)


def min_bytes(n: int, e: int, b: int, dim: int = DIM) -> int:
    """Bytes of the arrays a train step needs (float32, u32 indices): the CSR graph (row_ptr,
    col_idx), parameters, their gradients and AdamW's two moments (4 x (2 N d + E)), pi [E],
    and energies, target and next energies [B, N]."""
    params = 2 * n * dim + e
    return 4 * ((n + 1) + e + 4 * params + e + 3 * b * n)


def available_ram() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _setup(be: Any, graph: Graph, b: int, seed: int = 0) -> Callable[[], Any]:
    """A train step closure on backend ``be`` (Router + AdamW + device inputs)."""
    rng = np.random.default_rng(seed)
    n, e = graph.num_nodes, graph.num_edges
    params = RouterParams(
        q=(rng.standard_normal((n, DIM), dtype=np.float32) * 0.3),
        k=(rng.standard_normal((n, DIM), dtype=np.float32) * 0.3),
        bias=np.zeros(e, np.float32), tau=1.0, alpha=0.9, top_k=0,
    )
    router = Router(graph, params, be)
    opt = AdamW(router, lr=1e-3, max_grad_norm=1.0)
    x = be.asarray(rng.random((b, n), dtype=np.float32))
    t = be.asarray(rng.random((b, n), dtype=np.float32) * 0.1)

    def step() -> Any:
        return router.train_step(x, t, opt)

    step.keep = (router, opt, x, t)  # type: ignore[attr-defined]
    return step


def _time_step(be: Any, step: Callable[[], Any], repeats: int, min_seconds: float) -> list[float]:
    """Wall seconds of synchronized steps: ``repeats`` samples, more while under ``min_seconds``."""
    out: list[float] = []
    while len(out) < repeats or (sum(out) < min_seconds and len(out) < 10 * repeats):
        be.synchronize()
        t0 = time.perf_counter()
        step()
        be.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def _numpy_row(be: NumpyBackend, graph: Graph, b: int, repeats: int, min_seconds: float) -> dict[str, Any]:
    step = _setup(be, graph, b)
    step()  # warm-up: builds the graph caches
    persistent = be.memory()["total"]
    inputs = 2 * b * graph.num_nodes * 4
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times = _time_step(be, step, repeats, min_seconds)
    return {"seconds": float(np.median(times)), "samples": len(times),
            "bytes": int(persistent + inputs + peak), "persistent_bytes": int(persistent + inputs),
            "step_peak_bytes": int(peak)}


def _gpu_row(be: Any, graph: Graph, b: int, repeats: int, min_seconds: float) -> dict[str, Any]:
    be.synchronize()
    be.runtime.trim()  # the pool starts empty: what it holds after the steps is this size's
    m0 = be.memory()
    step = _setup(be, graph, b)
    step()
    be.synchronize()
    times = _time_step(be, step, repeats, min_seconds)
    m1 = be.memory()
    # what this size added (the pool's free buffers are the step's transient arrays, reused by
    # every step: counted)
    mem = {k: m1[k] - m0[k] for k in m1}
    return {"seconds": float(np.median(times)), "samples": len(times), "bytes": int(mem["total"]),
            "bytes_in_arrays": int(mem["total"] - mem["pool_free"]), "memory": mem}


def sweep(name: str, make: Callable[[], Any], sizes: Sequence[int], batches: Sequence[int], repeats: int,
          min_seconds: float, max_seconds: float, numpy: bool) -> dict[str, Any]:
    """Run one backend over ``sizes`` x ``batches``; stops a batch's sweep at the wall (a
    refusal, the RAM estimate, or the time estimate) and records why."""
    be = make()
    result: dict[str, Any] = {"backend": name, "rows": [], "walls": {}}
    for b in batches:
        last: dict[str, Any] | None = None
        for e in sizes:
            n = max(1, e // DEGREE)
            e_real = n * DEGREE
            if last is not None:  # estimates from the last size run
                scale = e_real / last["edges"]
                need = last["bytes"] * scale
                est = last["seconds"] * scale
                if numpy and need * 1.3 > available_ram():
                    result["walls"][str(b)] = (f"stopped before E = {e_real}: needs about {need / 2**30:.1f} GiB "
                                               f"(x1.3 margin), {available_ram() / 2**30:.1f} GiB available")
                    break
                if est * (repeats + 2) > max_seconds:
                    why = (f"stopped timing before E = {e_real}: about {est:.1f} s per step, over the "
                           f"{max_seconds:.0f} s budget per size")
                    result["walls"][str(b)] = why if numpy else why + "; " + _probe(be, sizes, e_real, b)
                    break
            gc.collect()
            graph = make_graph(e_real)
            try:
                row = (_numpy_row if numpy else _gpu_row)(be, graph, b, repeats, min_seconds)
            except DeviceLimitError as exc:
                result["walls"][str(b)] = f"refused at E = {e_real}, B = {b}: {exc}"
                break
            finally:
                del graph
                gc.collect()
            row.update(edges=e_real, nodes=n, batch=b, min_bytes=min_bytes(n, e_real, b))
            row["bytes_per_edge"] = row["bytes"] / e_real
            row["ratio_to_min"] = row["bytes"] / row["min_bytes"]
            result["rows"].append(row)
            last = row
            print(f"  {name:<28} B={b:<3} E={e_real:>10,}  {row['seconds'] * 1e3:10.2f} ms  "
                  f"{row['bytes_per_edge']:8.1f} B/edge  x{row['ratio_to_min']:.2f} of min", flush=True)
        rows = [r for r in result["rows"] if r["batch"] == b]
        result.setdefault("slope", {})[str(b)] = loglog_slope([r["edges"] for r in rows], [r["seconds"] for r in rows])
    return result


def _probe(be: Any, sizes: Sequence[int], first: int, b: int) -> str:
    """Build (Router, AdamW, inputs; no step) at each size from ``first`` on until one is
    refused: where the wall is, without timing steps that take too long."""
    fits = []
    for e in (s for s in sizes if max(1, s // DEGREE) * DEGREE >= first):
        graph = make_graph(e)
        try:
            _setup(be, graph, b)
            fits.append(graph.num_edges)
        except DeviceLimitError as exc:
            return f"built untimed at E = {fits}; refused at E = {graph.num_edges}, B = {b}: {exc}"
        finally:
            del graph
            gc.collect()
    return f"built untimed at E = {fits}; no refusal up to the largest size"


def _plot(results: list[dict[str, Any]], path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for res in results:
        for b, slope in res["slope"].items():
            rows = [r for r in res["rows"] if str(r["batch"]) == b]
            if not rows:
                continue
            lbl = f"{res['backend']} B={b} (slope {slope:.2f})"
            ax_t.loglog([r["edges"] for r in rows], [r["seconds"] for r in rows], "o-", label=lbl)
            ax_m.semilogx([r["edges"] for r in rows], [r["bytes_per_edge"] for r in rows], "o-", label=lbl)
    ax_t.set_xlabel("edges E")
    ax_t.set_ylabel("train step (s)")
    ax_m.set_xlabel("edges E")
    ax_m.set_ylabel("bytes per edge")
    ax_t.legend(fontsize=7)
    ax_m.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


def _gpu_makers(adapters: str | None) -> list[tuple[str, Callable[[], Any]]]:
    try:
        from energetic_wgpu.backends.webgpu import WgpuBackend, list_adapters

        found = list_adapters()
    except Exception as exc:  # no wgpu here: NumPy only
        print(f"wgpu unavailable: {exc}")
        return []
    out = []
    for a in found:
        if adapters is not None and adapters.lower() not in f"{a['backend_type']} {a['name']}".lower():
            continue
        out.append((f"wgpu {a['backend_type']} ({a['name'].split(' (')[0]})", lambda i=a["index"]: WgpuBackend(adapter=i)))
    return out


def main(argv: Sequence[str] | None = None, gpu: Sequence[tuple[str, Any]] | None = None) -> dict[str, Any]:
    """Run the sweep; returns the JSON report. ``gpu``: (name, backend) pairs to use instead of
    a new backend per adapter found (the tests pass their session's backends)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-edges", type=float, default=1e8, help="largest E (default 1e8)")
    ap.add_argument("--min-edges", type=float, default=0, help="smallest E (default: all sizes)")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per size (at least)")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="time each size at least this long")
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="skip NumPy sizes whose estimated steps take longer (per size and batch)")
    ap.add_argument("--gpu-max-seconds", type=float, default=60.0, help="the same for wgpu")
    ap.add_argument("--adapter", default="vulkan", help="wgpu adapters whose backend/name contain this ('': all)")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="PNG path (needs matplotlib)")
    ap.add_argument("--dry-run", action="store_true", help="two tiny sizes, B = 1, one repeat")
    args = ap.parse_args(argv)
    batches = [int(x) for x in args.batches.split(",") if x.strip()]
    sizes = [s for s in DEFAULT_SIZES if args.min_edges <= s <= args.max_edges]
    repeats, min_s = args.repeats, args.min_seconds
    if args.dry_run:
        sizes, batches, repeats, min_s = [1000, 3000], [1], 1, 0.0
    results = []
    if not args.no_numpy:
        results.append(sweep("numpy", NumpyBackend, sizes, batches, repeats, min_s, args.max_seconds, numpy=True))
    if not args.no_gpu:
        makers = _gpu_makers(args.adapter or None) if gpu is None else [(n, lambda b=b: b) for n, b in gpu]
        for name, make in makers:
            results.append(sweep(name, make, sizes, batches, repeats, min_s, args.gpu_max_seconds, numpy=False))
    print("\nlog-log slope of step time against E (goal <= 1.1):")
    for res in results:
        for b, slope in res["slope"].items():
            print(f"  {res['backend']:<28} B={b:<3} slope {slope:.3f}")
        for b, wall in res["walls"].items():
            print(f"  {res['backend']:<28} B={b:<3} wall: {wall}")
    report = {"machine": machine_info(("wgpu",)), "degree": DEGREE, "dim": DIM, "sizes": sizes,
              "batches": batches, "dry_run": args.dry_run, "results": results,
              "load_average": list(os.getloadavg())}
    if args.plot:
        report["plot"] = _plot(results, args.plot)
        print(report["plot"])
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
