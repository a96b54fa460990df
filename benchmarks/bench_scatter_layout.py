"""The scatter and its backward kernels, and the T-step train step, on one wgpu adapter.

For each graph (random N = 100K, E = 1M, B = 8; the baseline lattice 10 x 1024, B = 64): the
copy kernel's bandwidth, then the forward gather, ``scatter_bwd_pi`` alone
(``grad_energies=False``) and with the input-energy gradient, timed with GPU timestamps
(median of ``--repeats`` after 2 warm-ups); each kernel's effective bandwidth (minimum bytes /
time) and its ratio to the copy measured just before. Then a steady-state mse train step on
the lattice at T = 1 and T = 3: its GPU time and dispatches.

On a checkout with the node-major state (``Backend.scatter_step``) the kernels are timed as the
Router runs them (node-major in and out, plus the one transpose per forward); on an older one
as the public [B, N] ops. So the same script measures both sides of an A/B: run it from each
checkout in turn, interleaved, and compare the ratios (absolute times on a shared machine drift).

    python -m benchmarks.bench_scatter_layout [--adapter vulkan] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

import numpy as np

from energetic_wgpu import AdamW, GraphConfig, Router, RouterParams, build_lattice
from energetic_wgpu.backends.webgpu import WgpuBackend
from energetic_wgpu.benchmarking.ops import lattice_graph, random_graph

from .common import machine_info, write_json

COPY_FLOATS = 16 << 20


def _gpu_ms(be: Any, fn: Callable[[], Any], repeats: int) -> float:
    rt = be.runtime
    for _ in range(2):
        rt.gpu_time(fn)
    return float(np.median([rt.gpu_time(fn)[1] for _ in range(repeats)]))


def _copy_gbps(be: Any, src: Any, repeats: int) -> float:
    return 8 * COPY_FLOATS / _gpu_ms(be, lambda: be.copy(src), repeats) / 1e6


def _kernels(be: Any, graph: Any, batch: int, repeats: int, copy_src: Any) -> dict[str, float]:
    rng = np.random.default_rng(1)
    n, e = graph.num_nodes, graph.num_edges
    en = be.asarray(rng.random((batch, n)).astype(np.float32))
    pi = be.asarray(rng.random(e).astype(np.float32))
    gn = be.asarray(rng.standard_normal((batch, n)).astype(np.float32))
    be.graph_data(graph)
    out: dict[str, float] = {"copy_GBps": _copy_gbps(be, copy_src, repeats)}
    if hasattr(be, "scatter_step_backward"):  # node-major state: the ops the Router runs
        st, act = be.scatter_state(graph, en, None)
        gst, _ = be.scatter_state(graph, gn, None)
        ops = {
            "scatter": lambda: be.scatter_step(graph, st, pi, 1.0, act, False, False),
            "bwd_pi": lambda: be.scatter_step_backward(graph, st, pi, gst, 1.0, act, False, False, None, False),
            "bwd_both": lambda: be.scatter_step_backward(graph, st, pi, gst, 1.0, act, False, True, None, False),
        }
        out["transpose_ms"] = _gpu_ms(be, lambda: be.scatter_state(graph, en, None), repeats)
    else:  # the public [B, N] ops
        ops = {
            "scatter": lambda: be.energy_scatter(graph, en, pi, 1.0),
            "bwd_pi": lambda: be.energy_scatter_backward(graph, en, pi, gn, 1.0, grad_energies=False),
            "bwd_both": lambda: be.energy_scatter_backward(graph, en, pi, gn, 1.0),
        }
    for name, fn in ops.items():
        out[f"{name}_ms"] = _gpu_ms(be, fn, repeats)
    out["bwd_energy_ms"] = out["bwd_both_ms"] - out["bwd_pi_ms"]
    min_bytes = {"scatter": 4 * (n + 1) + 12 * e + 8 * batch * n, "bwd_pi": 12 * e + 8 * batch * n,
                 "bwd_energy": 4 * (n + 1) + 8 * e + 8 * batch * n}
    for name, nbytes in min_bytes.items():
        out[f"{name}_GBps"] = nbytes / out[f"{name}_ms"] / 1e6
        out[f"{name}_vs_copy"] = out[f"{name}_GBps"] / out["copy_GBps"]
    return out


def _train_steps(be: Any, repeats: int, copy_src: Any) -> dict[str, dict[str, float]]:
    graph = build_lattice(GraphConfig(layers=10, nodes_per_layer=1024, local_neighbors=8, jump_neighbors=2))
    rng = np.random.default_rng(0)
    en = np.zeros((64, graph.num_nodes), np.float32)
    en[:, :1024] = rng.random((64, 1024))
    tgt = (rng.random((64, graph.num_nodes)) * 0.01).astype(np.float32)
    r = Router(graph, RouterParams.init(graph, 16, top_k=4, seed=0), be)
    opt = AdamW(r, lr=1e-3, max_grad_norm=1.0)
    e, t = be.asarray(en), be.asarray(tgt)
    out = {}
    for steps in (1, 3):
        copy = _copy_gbps(be, copy_src, repeats)
        ms = _gpu_ms(be, lambda: r.train_step(e, t, opt, steps=steps), repeats)
        be.synchronize()
        d0 = be.counters()["dispatches"]
        r.train_step(e, t, opt, steps=steps)
        out[f"T={steps}"] = {"gpu_ms": ms, "dispatches": be.counters()["dispatches"] - d0, "copy_GBps": copy}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_scatter_layout", description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", default="vulkan", help="adapter index or name/backend substring")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)
    adapter = int(args.adapter) if args.adapter.isdigit() else args.adapter
    be = WgpuBackend(adapter=adapter, features=["timestamp-query"])
    copy_src = be.asarray(np.random.default_rng(0).random(COPY_FLOATS).astype(np.float32))
    res: dict[str, Any] = {"adapter": be.describe()}
    for name, graph, batch in (("random N=100K E=1M B=8", random_graph(100_000, 1_000_000), 8),
                               ("lattice 10x1024 B=64", lattice_graph(10240), 64)):
        res[name] = _kernels(be, graph, batch, args.repeats, copy_src)
        print(name, json.dumps({k: round(v, 4) for k, v in res[name].items()}), flush=True)
    res["train_step"] = _train_steps(be, args.repeats, copy_src)
    print("train step", json.dumps(res["train_step"]), flush=True)
    if args.json:
        write_json(args.json, {"benchmark": "scatter_layout", "machine": machine_info(("wgpu",)), **res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
