"""Data-parallel training over several processes, adapters and machines with torch.distributed.

Optional extra: ``pip install 'energetic_wgpu[distributed]'`` (torch; the CPU build is
enough — gloo runs over TCP). Importing this module does not import torch; the functions
that need it raise :class:`~energetic_wgpu.errors.BackendUnavailable` naming the extra.

Each rank holds a replica of the graph and parameters on its own backend/adapter and
computes the gradient of its shard of the global batch; the gradients are summed across the
ranks with one all-reduce (weighted so that the sum is the full-batch gradient) and every
rank runs the same optimizer update, so the replicas stay identical.

In your own loop (any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, e.g.
``torchrun --nproc-per-node 2 my_script.py``)::

    import energetic_wgpu as ew
    from energetic_wgpu import distributed as ewd

    world = ewd.init_from_env()                    # init_process_group("gloo"); destroyed at exit
    dp = ewd.DataParallel()                         # or wrap a process group you made yourself
    router = ew.Router(graph, ew.RouterParams.init(graph, dim=16, seed=0), "numpy")  # same seed on every rank
    opt = ew.AdamW(router, lr=1e-2, max_grad_norm=1.0)
    for step in range(1, 101):
        x, y = global_batch(step)                   # float [B, N]: the same global batch on every rank
        lo, hi = ewd.shard_bounds(len(x), dp.rank, dp.world_size)
        res = ewd.data_parallel_step(dp, router, opt, x[lo:hi], y[lo:hi])
        if step % 50 == 0:
            dp.check_replicas(router, step)         # raises DistributedError naming the step on divergence

or, step by step: ``lg = router.loss_and_grads(x, y)``,
``ewd.all_reduce_gradients(lg.grads, weight=ewd.shard_weight("mse", x.shape))``,
``opt.step(lg.grads)``.

The command line does all of this: ``energetic-wgpu train --nproc 2`` (see the README).
"""

from __future__ import annotations

from typing import Any, Sequence

from ._torch import EXTRA_HINT, require_torch, torch_available
from .comm import DataParallel, ReduceResult
from .env import WorldEnv, free_port, init_from_env, world_from_env
from .sharding import SHARDING, ShardedData, shard_batch, shard_bounds
from .step import DataParallelStepResult, data_parallel_step, shard_weight

__all__ = [
    "DataParallel",
    "DataParallelStepResult",
    "EXTRA_HINT",
    "ReduceResult",
    "SHARDING",
    "ShardedData",
    "WorldEnv",
    "all_reduce_gradients",
    "check_replicas",
    "data_parallel_step",
    "free_port",
    "init_from_env",
    "require_torch",
    "shard_batch",
    "shard_bounds",
    "shard_weight",
    "torch_available",
    "world_from_env",
]


def all_reduce_gradients(
    grads: Any, weight: float = 1.0, *, group: Any = None, loss: Any = None, flags: Sequence[float] = ()
) -> ReduceResult:
    """:meth:`DataParallel.all_reduce_gradients` over ``group`` (default: the world group):
    ``grads`` become ``sum_r weight_r grads_r / sum_r weight_r`` in place, with one packed
    readback and one all-reduce."""
    return DataParallel(group).all_reduce_gradients(grads, weight, loss=loss, flags=flags)


def check_replicas(router: Any, step: int, *, group: Any = None) -> str:
    """:meth:`DataParallel.check_replicas`: raises DistributedError naming ``step`` when the
    ranks' parameters differ."""
    return DataParallel(group).check_replicas(router, step)
