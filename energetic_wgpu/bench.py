"""A minimal benchmark (``energetic-wgpu bench``): forward and train-step time of the
router on every backend and wgpu adapter.

Each measurement is the median of ``repeats`` runs after ``warmup`` runs; the backend is
synchronized before the clock stops, so queued GPU work is counted. The full benchmark
suite lives in the repository's ``benchmarks/`` folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import numpy as np

from .backends import Backend, get_backend

__all__ = ["time_it", "bench_backend", "list_bench_targets", "run"]


def time_it(fn: Callable[[], Any], backend: Backend, repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median/min/max seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    backend.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        backend.synchronize()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def bench_backend(
    backend: Backend, config: Any, batch: int, repeats: int = 10, warmup: int = 2
) -> dict[str, Any]:
    """{"forward": timing, "train_step": timing} on ``backend`` (an op that fails gives
    {"error": reason} instead of a timing)."""
    from .graph import build_lattice
    from .optim import AdamW
    from .router import Router, RouterParams

    r = config.router
    graph = build_lattice(config.graph.to_graph_config())
    router = Router(graph, RouterParams.init(graph, dim=r.dim, tau=r.tau, alpha=r.alpha, top_k=r.top_k), backend)
    rng = np.random.default_rng(0)
    energies = backend.asarray(rng.random((batch, graph.num_nodes), dtype=np.float32))
    target = backend.asarray(rng.random((batch, graph.num_nodes), dtype=np.float32))
    out: dict[str, Any] = {"num_nodes": graph.num_nodes, "num_edges": graph.num_edges, "batch": batch}

    def forward() -> None:
        router.forward(energies, steps=r.steps, retain_sinks=r.retain_sinks)

    opt = AdamW(router, lr=1e-3, max_grad_norm=1.0)

    def train_step() -> None:
        router.train_step(energies, target, opt, steps=r.steps, retain_sinks=r.retain_sinks)

    for name, fn in (("forward", forward), ("train_step", train_step)):
        try:
            t = time_it(fn, backend, repeats, warmup)
            t["items_per_s"] = batch / t["median_s"] if t["median_s"] > 0 else float("inf")
            out[name] = t
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
    return out


def list_bench_targets(backend: str | None = None, adapter: str | int | None = None) -> list[tuple[str, Callable[[], Backend]]]:
    """(label, factory) for NumPy and every wgpu adapter (filtered by ``backend``/``adapter``)."""
    targets: list[tuple[str, Callable[[], Backend]]] = []
    if backend in (None, "numpy", "all"):
        targets.append(("numpy", lambda: get_backend("numpy")))
    if backend in (None, "wgpu", "all"):
        from .check import list_targets

        targets.extend(list_targets(adapter)[0])
    return targets


def run(args: argparse.Namespace | None = None, echo: Callable[[str], None] = print) -> int:
    """Entry point of ``energetic-wgpu bench``; ``args`` carries config, set, backend,
    adapter, batch, repeats, warmup, json. Returns 0 unless no target could run."""
    from .config import load_config

    a = vars(args) if args is not None else {}
    config = load_config(a.get("config"), a.get("set") or [])
    batch = a.get("batch") or config.train.batch_size
    repeats, warmup = a.get("repeats") or 10, a.get("warmup") if a.get("warmup") is not None else 2
    results = []
    for label, factory in list_bench_targets(a.get("backend"), a.get("adapter")):
        try:
            be = factory()
        except Exception as exc:
            results.append({"target": label, "error": f"{type(exc).__name__}: {exc}"})
            continue
        res = bench_backend(be, config, batch, repeats, warmup)
        results.append({"target": label, "device": be.describe(), **res})
    if a.get("json"):
        echo(json.dumps({"batch": batch, "repeats": repeats, "warmup": warmup, "results": results}, indent=1))
    else:
        g = config.graph
        echo(f"graph {g.layers} x {g.nodes_per_layer}, batch {batch}, median of {repeats} runs after {warmup} warm-up")
        echo(f"{'target':<18} {'forward ms':>11} {'train_step ms':>14} {'train rows/s':>13}  device")
        for r in results:
            if "error" in r:
                echo(f"{r['target']:<18} {'FAIL':>11} {'':>14} {'':>13}  {r['error']}")
                continue
            cells = []
            for k in ("forward", "train_step"):
                t = r[k]
                cells.append("FAIL" if "error" in t else f"{t['median_s'] * 1e3:.2f}")
            tput = r["train_step"].get("items_per_s")
            echo(f"{r['target']:<18} {cells[0]:>11} {cells[1]:>14} {'-' if tput is None else f'{tput:,.0f}':>13}  "
                 f"{r['device']}")
            for k in ("forward", "train_step"):
                if "error" in r[k]:
                    echo(f"{'':<18} {k}: {r[k]['error']}")
    return 0 if any("error" not in r for r in results) else 1
