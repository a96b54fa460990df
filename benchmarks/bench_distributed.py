"""Data-parallel training on this machine, and a model of how it scales to N machines.

1. Steps/s of the train step on the baseline lattice (10 x 1024, d = 16, top_k = 4,
   global batch 64, NumPy float32): one process (``Router.train_step``) vs 2 ranks over
   loopback gloo (``energetic_wgpu.distributed.data_parallel_step``, 32 rows each), with the
   2-rank step split into compute (forward, loss, backward), packed gradient readback,
   all-reduce, upload and optimizer.
2. The time of one gloo all-reduce vs the gradient size (float32 values), 2 ranks.
3. The ring all-reduce model: each rank sends and receives 2 (N - 1) / N of the gradient bytes
   per step, so the communication time tends to 2 G / bandwidth as N grows, while the compute
   per rank falls as 1 / N (a fixed global batch).

    python -m benchmarks.bench_distributed [--steps 40] [--json out.json]

Runs its own ranks (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, a free port); needs torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import format_table, machine_info, ms_stats, write_json

SIZES = (1_000, 10_000, 100_000, 417_792, 1_000_000, 4_000_000)
BATCH = 64


def _problem():
    import energetic_wgpu as ew

    graph = ew.build_lattice(ew.GraphConfig(layers=10, nodes_per_layer=1024, local_neighbors=8, jump_neighbors=2))
    params = ew.RouterParams.init(graph, dim=16, top_k=4, seed=0)
    router = ew.Router(graph, params, "numpy")
    return graph, router, ew.AdamW(router, lr=0.01, max_grad_norm=1.0)


def _batch(step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([3, step])
    return rng.random((BATCH, n), dtype=np.float32), rng.random((BATCH, n), dtype=np.float32)


def single_process(steps: int, warmup: int = 3) -> dict:
    """ms per Router.train_step with the whole batch (no torch)."""
    graph, router, opt = _problem()
    samples = []
    for step in range(1, warmup + steps + 1):
        x, t = _batch(step, graph.num_nodes)
        t0 = time.perf_counter()
        router.train_step(x, t, opt)
        if step > warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
    return {"step": ms_stats(samples), "gradient_values": sum(int(np.prod(p.shape)) for p in router.parameters())}


def rank_main(out: str, steps: int, warmup: int = 3, repeats: int = 15) -> None:
    """One rank: timed data-parallel steps, then all-reduces of each size (rank 0 writes ``out``)."""
    import torch
    import torch.distributed as dist

    from energetic_wgpu import distributed as ewd

    ewd.init_from_env(timeout=120)
    dp = ewd.DataParallel()
    graph, router, opt = _problem()
    lo, hi = ewd.shard_bounds(BATCH, dp.rank, dp.world_size)
    names = ("step", "compute", "readback", "all_reduce", "upload", "optimizer")
    parts: dict[str, list[float]] = {k: [] for k in names}
    for step in range(1, warmup + steps + 1):
        x, t = _batch(step, graph.num_nodes)
        t0 = time.perf_counter()
        lg = router.loss_and_grads(x[lo:hi], t[lo:hi])
        t1 = time.perf_counter()
        red = dp.all_reduce_gradients(lg.grads, ewd.shard_weight("mse", (hi - lo, graph.num_nodes)), loss=lg.loss_array)
        t2 = time.perf_counter()
        opt.step(lg.grads)
        t3 = time.perf_counter()
        if step > warmup:
            parts["step"].append((t3 - t0) * 1e3)
            parts["compute"].append((t1 - t0) * 1e3)
            parts["optimizer"].append((t3 - t2) * 1e3)
            for k in ("readback", "all_reduce", "upload"):
                parts[k].append(red.seconds[k] * 1e3)
    dp.check_replicas(router, warmup + steps)
    sweep = []
    for size in SIZES:
        buf = torch.zeros(size, dtype=torch.float32)
        for _ in range(3):
            dist.all_reduce(buf)
        samples = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            samples.append((time.perf_counter() - t0) * 1e3)
        sweep.append({"values": size, "bytes": size * 4, **ms_stats(samples)})
    if dp.rank == 0:
        payload = {"world_size": dp.world_size, "parts": {k: ms_stats(v) for k, v in parts.items()}, "sweep": sweep,
                   "gradient_values": red.gradient_values}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(payload, f)
    dist.destroy_process_group()


def launch_ranks(nproc: int, steps: int) -> dict:
    from energetic_wgpu.distributed import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.json")
        procs = []
        for rank in range(nproc):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_distributed", "--rank-out", out, "--steps", str(steps)],
                env=env,
            ))
        codes = [p.wait(timeout=1800) for p in procs]
        if any(codes):
            raise SystemExit(f"a rank failed: exit codes {codes}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def ring_model(gradient_values: int, compute_ms_one: float, machines=(1, 2, 4, 8, 16, 64),
               gbits=(1.0, 10.0, 100.0)) -> list[list[str]]:
    """Rows: N, bytes sent per rank per step, communication ms at each bandwidth, modeled steps/s
    (compute / N + communication; latency terms ignored)."""
    grad_bytes = gradient_values * 4
    rows = []
    for n in machines:
        sent = 2 * (n - 1) / n * grad_bytes
        comm = [sent * 8 / (g * 1e9) * 1e3 for g in gbits]
        sps = [1e3 / (compute_ms_one / n + c) for c in comm]
        rows.append([str(n), f"{sent / 1e6:.2f}", *(f"{c:.2f}" for c in comm), *(f"{s:.1f}" for s in sps)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--rank-out", help=argparse.SUPPRESS)  # internal: run as a rank
    args = ap.parse_args()
    if args.rank_out:
        rank_main(args.rank_out, args.steps)
        return
    one = single_process(args.steps)
    two = launch_ranks(2, args.steps)
    g = two["gradient_values"]
    print(f"machine: {machine_info(('torch',))}")
    print(f"\nbaseline lattice, global batch {BATCH}, NumPy float32, {args.steps} timed steps (median ms):")
    p = two["parts"]
    one_ms, two_ms = one["step"]["median_ms"], p["step"]["median_ms"]
    rows = [["1 process", f"{one_ms:.1f}", f"{1e3 / one_ms:.1f}", "", "", "", "", ""],
            ["2 ranks (gloo)", f"{two_ms:.1f}", f"{1e3 / two_ms:.1f}", f"{p['compute']['median_ms']:.1f}",
             *(f"{p[k]['median_ms']:.2f}" for k in ("readback", "all_reduce", "upload")),
             f"{p['optimizer']['median_ms']:.1f}"]]
    print(format_table(["run", "step ms", "steps/s", "compute", "readback", "all-reduce", "upload", "AdamW"], rows))
    print(f"\ngloo all-reduce, 2 ranks on loopback (gradient of the baseline: {g:,} values = {g * 4 / 1e6:.2f} MB):")
    print(format_table(["float32 values", "MB", "median ms", "IQR ms", "GB/s (bytes / time)"], [
        [f"{s['values']:,}", f"{s['bytes'] / 1e6:.3f}", f"{s['median_ms']:.3f}", f"{s['q3_ms'] - s['q1_ms']:.3f}",
         f"{s['bytes'] / s['median_ms'] / 1e6:.2f}"] for s in two["sweep"]]))
    compute = one["step"]["median_ms"]
    print(f"\nring all-reduce model, {g:,} float32 values per step, compute {compute:.1f} ms per global batch on one "
          "machine like this one:")
    print(format_table(["N machines", "MB sent/rank/step", "comm ms 1 Gb/s", "10 Gb/s", "100 Gb/s",
                        "steps/s 1 Gb/s", "10 Gb/s", "100 Gb/s"], ring_model(g, compute)))
    if args.json:
        write_json(args.json, {"machine": machine_info(("torch",)), "single": one, "two_ranks": two,
                               "ring_model": ring_model(g, compute)})


if __name__ == "__main__":
    main()
