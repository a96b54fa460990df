"""Before/after of the train step, side by side in one run: two source trees, alternating processes.

For each wgpu adapter and each tree (e.g. commit 155c083 and the working tree), a fresh process
imports that tree's ``energetic_wgpu`` and measures, on the same workloads:

* **default** (the lattice of benchmarks/bench_train_step.py: 10 x 1024, E = 90,112, B = 64,
  d = 16, top_k = 4; T = 1 and T = 3): per steady-state ``train_step`` the dispatches, submits and
  new buffers; the host time of encode + submit (wall time of ``train_step`` with the queue
  drained first, no wait); the encode's thread CPU time; the synchronized step time (medians);
* **large** (a random graph, N nodes with Poisson(10) out-degrees, B = 8, d = 16, top_k = 4):
  the device time of each phase of the step (forward, mse loss, backward, AdamW; GPU timestamp
  queries where the adapter has them, else synchronized wall time), the minimum bytes each phase
  must move (:func:`min_bytes`), the achieved GB/s and its ratio to the same adapter's
  elementwise bandwidth (``backend.add`` of two 64 MiB arrays: 192 MiB moved).

Processes alternate tree A, tree B, A, B ... (``--rounds``) so that a drift of the machine's load
affects both; the medians over rounds are reported. Trees are folders (``git archive COMMIT |
tar -x -C DIR``)::

    mkdir -p /tmp/tree_155 && git archive 155c083 | tar -x -C /tmp/tree_155
    python benchmarks/bench_ab.py /tmp/tree_155 . --rounds 3 --json ab.json

The worker (``--worker TREE ADAPTER``) prints one JSON line; only the public API common to both
trees is used (``Router.train_step``, ``forward``, ``backward``, ``backend.mse``, ``AdamW.step``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
F32 = 4


def min_bytes(n: int, e: int, b: int, d: int) -> dict[str, int]:
    """Bytes a phase must move at least (each array it needs read once, each output written
    once; float32 and u32 words). T = 1, mse without a mask.

    forward: Q, K [N, d] and bias [E] read, the CSR (row_ptr [N+1], col_idx [E]) read, pi [E]
    written; the scatter reads pi, the reverse index (rev_ptr [N+1], in-edge ids [E]), x [B, N]
    and writes next [B, N]. loss: pred and target read, the gradient written ([B, N] each).
    backward: x and the output gradient ([B, N] each), the CSR and the reverse index, pi [E],
    Q and K read; dQ, dK [N, d] and dlogits (= dbias) [E] written, and dlogits read once more by
    dK (it is segmented by target node, dQ and the softmax backward by source node; d(pi) can be
    formed inside the per-source pass and never stored). AdamW: P = 2Nd + E parameters: p, g, m,
    v read, p, m, v written."""
    p = 2 * n * d + e
    return {
        "forward": F32 * (2 * n * d + e + (n + 1) + e + e + e + (n + 1) + e + 2 * b * n),
        "loss": F32 * 3 * b * n,
        "backward": F32 * (2 * b * n + 2 * (n + 1) + e + e + e + 2 * n * d + 2 * n * d + e + e),
        "optimizer": F32 * 7 * p,
    }


# --------------------------------------------------------------------------- worker


def _worker(tree: str, adapter: int, large_nodes: int, reps: int) -> dict[str, Any]:
    sys.path.insert(0, tree)
    sys.path.insert(1, str(HERE))
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    import numpy as np

    import energetic_wgpu
    from energetic_wgpu.backends.webgpu import WgpuBackend, ops_train
    from energetic_wgpu.graph import Graph
    from energetic_wgpu.optim import AdamW
    from energetic_wgpu.router import Router, RouterParams

    assert energetic_wgpu.__file__.startswith(tree), energetic_wgpu.__file__
    be = WgpuBackend(adapter=adapter)
    rt = be.runtime

    def counters() -> dict[str, int]:
        c = be.counters
        return dict(c() if callable(c) else c.snapshot())

    def drain() -> None:
        be.synchronize()

    out: dict[str, Any] = {"tree": tree, "adapter": be.describe()}
    # ---- default workload
    from refactor_invariants import baseline_step  # the benchmark lattice (benchmarks/ is on sys.path)

    for steps in (1, 3):
        step = baseline_step(be, steps)
        for _ in range(5):
            step()
        drain()
        c0 = counters()
        for _ in range(5):
            step()
        drain()
        c1 = counters()
        per = {k: (c1[k] - c0[k]) / 5 for k in ("dispatches", "submits", "buffers_created")}
        per["submits"] -= 1 / 5  # the synchronize's own submit
        host, cpu, sync = [], [], []
        for _ in range(reps):
            drain()
            t0, u0 = time.perf_counter(), time.thread_time()
            step()
            u1, t1 = time.thread_time(), time.perf_counter()
            host.append((t1 - t0) * 1e3)
            cpu.append((u1 - u0) * 1e3)
        for _ in range(max(5, reps // 4)):
            drain()
            t0 = time.perf_counter()
            step()
            drain()
            sync.append((time.perf_counter() - t0) * 1e3)
        out[f"default_T{steps}"] = {
            **per,
            "host_ms": float(np.median(host)),
            "host_cpu_ms": float(np.median(cpu)),
            "step_ms": float(np.median(sync)),
        }
    ops_train.set_steps_per_submit(be, 1)
    del step
    # ---- large workload: per-phase device time and bandwidth
    if large_nodes:
        rng = np.random.default_rng(1)
        n = large_nodes
        deg = rng.poisson(10, n).astype(np.int64)
        row_ptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)
        col = rng.integers(0, n, int(row_ptr[-1])).astype(np.int64)
        g = Graph.from_csr(row_ptr, col)
        b, d = 8, 16
        r = Router(g, RouterParams.init(g, d, top_k=4, seed=0), be)
        o = AdamW(r, lr=1e-3, max_grad_norm=1.0)
        x = be.asarray(rng.random((b, n)).astype(np.float32))
        tg = be.asarray((rng.random((b, n)) * 0.01).astype(np.float32))
        timed = getattr(rt, "gpu_time", None)
        use_ts = bool(getattr(rt, "has_timestamps", False))

        def dev_time(fn: Any) -> tuple[Any, float]:
            drain()
            if use_ts and timed is not None:
                return timed(fn)
            t0 = time.perf_counter()
            res = fn()
            drain()
            return res, (time.perf_counter() - t0) * 1e3

        phases: dict[str, list[float]] = {"forward": [], "loss": [], "backward": [], "optimizer": [], "step": []}
        for i in range(4):
            fw, tf = dev_time(lambda: r.forward(x))
            (ls, gr), tl = dev_time(lambda: be.mse(fw.next_energies, tg))
            grads, tb = dev_time(lambda: r.backward(fw, gr))
            _, to = dev_time(lambda: o.step(grads))
            _, ts = dev_time(lambda: r.train_step(x, tg, o))
            if i:  # the first round compiles pipelines
                for k, v in zip(phases, (tf, tl, tb, to, ts)):
                    phases[k].append(v)
        a = be.asarray(np.ones(16 << 20, np.float32))
        bb = be.asarray(np.ones(16 << 20, np.float32))
        be.add(a, bb)
        ref = []
        for _ in range(3):
            _, ta = dev_time(lambda: be.add(a, bb))
            ref.append(ta)
        mb = min_bytes(n, g.num_edges, b, d)
        mb["step"] = sum(mb.values())
        ref_gbs = 3 * (16 << 20) * F32 / (min(ref) * 1e-3) / 1e9
        out["large"] = {
            "nodes": n, "edges": int(g.num_edges), "batch": b, "dim": d, "timestamps": use_ts,
            "elementwise_gbs": ref_gbs,
            "phases": {
                k: {"ms": float(np.median(v)), "min_bytes": mb[k],
                    "gbs": mb[k] / (float(np.median(v)) * 1e-3) / 1e9,
                    "of_elementwise": mb[k] / (float(np.median(v)) * 1e-3) / 1e9 / ref_gbs}
                for k, v in phases.items()
            },
        }
    return out


# --------------------------------------------------------------------------- driver


def _run_worker(tree: str, adapter: int, large: int, reps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", tree, str(adapter), "--large-nodes", str(large), "--reps", str(reps)]
    env = {**os.environ, "PYTHONPATH": ""}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    if res.returncode != 0:
        raise SystemExit(f"worker {tree} adapter {adapter} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of every number in the runs' common structure."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: _merge([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return _median([float(r) for r in runs])
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="*", help="two source trees: before, after")
    ap.add_argument("--worker", nargs=2, metavar=("TREE", "ADAPTER"), help=argparse.SUPPRESS)
    ap.add_argument("--adapters", default="0", help="comma-separated wgpu adapter indices (default 0)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=60, help="host-time samples per round")
    ap.add_argument("--large-nodes", type=int, default=100_000, help="N of the large workload (0: skip it)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.worker:
        tree, adapter = args.worker
        print(json.dumps(_worker(str(Path(tree).resolve()), int(adapter), args.large_nodes, args.reps)))
        return
    if len(args.trees) != 2:
        ap.error("give two trees: BEFORE AFTER")
    trees = [str(Path(t).resolve()) for t in args.trees]
    results: dict[str, Any] = {}
    for adapter in (int(a) for a in args.adapters.split(",")):
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
        for _ in range(args.rounds):
            for t in trees:
                runs[t].append(_run_worker(t, adapter, args.large_nodes, args.reps))
        merged = {t: _merge(runs[t]) for t in trees}
        results[str(adapter)] = merged
        _print(adapter, trees, merged)
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs); "
          f"medians over {args.rounds} alternating rounds")
    if args.json:
        Path(args.json).write_text(json.dumps({"trees": trees, "rounds": args.rounds, "results": results}, indent=1))


def _print(adapter: int, trees: list[str], merged: dict[str, Any]) -> None:
    a, b = (merged[t] for t in trees)
    print(f"\nadapter {adapter}: {a['adapter']}")
    print("| workload | tree | dispatches | submits | new buffers | host encode+submit ms | encode CPU ms | step ms |")
    print("|---|---|---|---|---|---|---|---|")
    for key in ("default_T1", "default_T3"):
        for name, m in (("before", a), ("after", b)):
            r = m[key]
            print(f"| {key} | {name} | {r['dispatches']:.0f} | {r['submits']:.0f} | {r['buffers_created']:.0f} | "
                  f"{r['host_ms']:.3f} | {r['host_cpu_ms']:.3f} | {r['step_ms']:.2f} |")
        print(f"| {key} | after/before | | | | {b[key]['host_ms'] / a[key]['host_ms']:.2f} | "
              f"{b[key]['host_cpu_ms'] / a[key]['host_cpu_ms']:.2f} | {b[key]['step_ms'] / a[key]['step_ms']:.2f} |")
    if "large" in a and "large" in b:
        la, lb = a["large"], b["large"]
        print(f"\nlarge: N = {la['nodes']:.0f}, E = {la['edges']:.0f}, B = {la['batch']:.0f}, d = {la['dim']:.0f}; elementwise "
              f"bandwidth {la['elementwise_gbs']:.2f} / {lb['elementwise_gbs']:.2f} GB/s (before / after); "
              f"{'GPU timestamps' if la['timestamps'] else 'synchronized wall time'}")
        print("| phase | min MB | before ms | before GB/s (of elementwise) | after ms | after GB/s (of elementwise) |")
        print("|---|---|---|---|---|---|")
        for k, pa in la["phases"].items():
            pb = lb["phases"][k]
            print(f"| {k} | {pa['min_bytes'] / 1e6:.1f} | {pa['ms']:.2f} | {pa['gbs']:.2f} ({pa['of_elementwise']:.0%}) | "
                  f"{pb['ms']:.2f} | {pb['gbs']:.2f} ({pb['of_elementwise']:.0%}) |")


if __name__ == "__main__":
    main()
