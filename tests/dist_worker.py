"""A data-parallel rank for tests/test_distributed.py: trains a small router with
energetic_wgpu.distributed on its shard and writes its parameters to OUT/rank<R>.npz.

Launched by the tests with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set; ``problem`` is
imported by the tests to build the single-process reference on the same data.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import energetic_wgpu as ew

GRAPH = ew.GraphConfig(layers=3, nodes_per_layer=16, local_neighbors=3, jump_neighbors=1, seed=0)
BATCH = 7  # odd: shards of 4 and 3 rows on 2 ranks


def problem():
    """(graph, initial params) shared by the workers and the reference."""
    graph = ew.build_lattice(GRAPH)
    return graph, ew.RouterParams.init(graph, dim=4, top_k=2, seed=0, noise=0.3)


def batch(step: int, n: int, loss: str, masked: bool):
    """The global batch of ``step``: energies, target [BATCH, n] float64, mask or None."""
    rng = np.random.default_rng([7, step])
    x = rng.random((BATCH, n))
    if loss == "cross_entropy":
        t = rng.random((BATCH, n))
        t /= t.sum(axis=1, keepdims=True)
    else:
        t = rng.random((BATCH, n)) * 0.5
    mask = rng.random((BATCH, n)) < 0.6 if masked else None
    return x, t, mask


def step_kwargs(loss: str) -> dict:
    return {"loss": loss, "entropy_lambda": 0.01, "steps": 2}


def make_optimizer(router):
    return ew.AdamW(router, lr=0.05, weight_decay=0.01, max_grad_norm=0.5)


def backend_for(spec: str, rank: int):
    """"numpy64", "numpy32" or "wgpu:A,B" (rank r on adapter index [A, B][r % 2])."""
    if spec == "numpy64":
        return ew.get_backend("numpy", dtype="float64")
    if spec == "numpy32":
        return ew.get_backend("numpy")
    adapters = [int(a) for a in spec.split(":", 1)[1].split(",")]
    return ew.get_backend("wgpu", adapter=adapters[rank % len(adapters)])


def torch_module():
    """The problem as an energetic_wgpu.torch.EnergeticRouter in float64 (NumPy backend)."""
    import torch
    from energetic_wgpu.torch import EnergeticRouter

    graph, params = problem()
    module = EnergeticRouter(graph, dim=4, top_k=2, steps=2, backend="numpy").double()
    with torch.no_grad():
        for name in ("q", "k", "bias"):
            getattr(module, name).copy_(torch.from_numpy(getattr(params, name)))
    return module


def torch_train(module, steps: int, dp=None):
    """A plain torch loop (masked mse, torch.optim.AdamW, clip_grad_norm_) on the module; with
    ``dp`` each rank trains on its shard and all-reduces the module's gradients. Returns the losses."""
    import torch
    from energetic_wgpu import distributed as ewd

    opt = torch.optim.AdamW(module.parameters(), lr=0.05, weight_decay=0.01)
    n = module.graph.num_nodes
    lo, hi = (0, BATCH) if dp is None else ewd.shard_bounds(BATCH, dp.rank, dp.world_size)
    losses = []
    for step in range(1, steps + 1):
        x, t, mask = (torch.from_numpy(a[lo:hi]) for a in batch(step, n, "mse", True))
        count = float(mask.sum())
        loss = (((module(x) - t) ** 2) * mask).sum() / max(count, 1.0)
        opt.zero_grad()
        loss.backward()
        value = float(loss.detach())
        if dp is not None:
            value = dp.all_reduce_gradients(module, weight=count, loss=value).loss
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.5)
        opt.step()
        losses.append(value)
    return losses


def run_scenario(dp, backend_spec: str, loss: str, masked: bool, steps: int):
    """Train ``steps`` data-parallel steps; returns (router, losses, counters per step)."""
    from energetic_wgpu import distributed as ewd

    if backend_spec == "torch64":
        module = torch_module()
        losses = torch_train(module, steps, dp)
        return module._router(module.q.dtype), losses, []

    graph, params = problem()
    router = ew.Router(graph, params, backend_for(backend_spec, dp.rank))
    opt = make_optimizer(router)
    lo, hi = ewd.shard_bounds(BATCH, dp.rank, dp.world_size)
    losses, counts = [], []
    # wgpu only (the NumPy backend's counters() are all 0): backend.counters() is a snapshot dict
    counters = router.backend.counters if getattr(router.backend, "runtime", None) is not None else None
    for step in range(1, steps + 1):
        x, t, mask = batch(step, graph.num_nodes, loss, masked)
        before = None if counters is None else counters()
        res = ewd.data_parallel_step(
            dp, router, opt, x[lo:hi], t[lo:hi], mask=None if mask is None else mask[lo:hi], **step_kwargs(loss)
        )
        losses.append(res.loss)
        if counters is not None:  # what this step cost on the device (the next step submits its AdamW)
            after = counters()
            counts.append([after[k] - before[k] for k in COUNTED])
    return router, losses, counts


#: wgpu counters recorded per data-parallel step
COUNTED = ("readbacks", "submits", "buffers_created")


def main() -> int:
    from energetic_wgpu import distributed as ewd

    ap = argparse.ArgumentParser()
    ap.add_argument("--scenarios", default="numpy64:mse:mask",
                    help="comma list of BACKEND:LOSS[:mask] (BACKEND as backend_for)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    world = ewd.init_from_env(timeout=args.timeout)
    dp = ewd.DataParallel()
    for spec in args.scenarios.split(","):
        backend_spec, loss, *flag = spec.split(":") if not spec.startswith("wgpu") else _split_wgpu(spec)
        router, losses, counts = run_scenario(dp, backend_spec, loss, flag == ["mask"], args.steps)
        checksum = dp.check_replicas(router, args.steps)
        p = router.params()
        name = spec.replace(":", "-").replace(";", "_")
        np.savez(
            os.path.join(args.out, f"{name}-rank{world.rank}.npz"), q=p.q, k=p.k, bias=p.bias,
            losses=np.array(losses), checksum=np.array(checksum), counts=np.array(counts, dtype=np.int64),
        )
    return 0


def _split_wgpu(spec: str) -> list[str]:
    """"wgpu:0;1:mse" -> ["wgpu:0,1", "mse"] (adapters separated by ';' inside a scenario)."""
    _, adapters, *rest = spec.split(":")
    return ["wgpu:" + adapters.replace(";", ","), *rest]


if __name__ == "__main__":
    sys.exit(main())
