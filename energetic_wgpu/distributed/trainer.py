"""The trainer of one data-parallel rank (what ``energetic-wgpu train --nproc N`` and
``torchrun ... -m energetic_wgpu train`` run in every process).

Every rank builds the same graph, parameters (same seed) and optimizer on its own backend or
adapter, draws the same global batch and trains on its shard; the gradients are all-reduced
each step, so every rank applies the same update. Rank 0 alone writes the metrics, the
summary and the checkpoints (with the world size and the sharding recorded). A checkpoint
holds the global state only (parameters, optimizer, global data order), so a run can resume
with another world size and the same ``train.batch_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..backends import Backend, get_backend
from ..config import Config
from ..errors import EnergeticError
from ..metrics import RunSummary
from ..trainer import Trainer, make_backend
from .comm import DataParallel
from .env import WorldEnv
from .sharding import SHARDING, ShardedData, shard_bounds
from .step import data_parallel_step

__all__ = ["DistributedTrainer", "backend_for_rank", "open_rank_backend"]


def backend_for_rank(config: Config, local_rank: int) -> Backend:
    """The backend of the rank with ``local_rank`` on its machine (``distributed.adapter_per_rank``):
    "numpy" — the NumPy backend; "same" — ``config.backend`` as a single process would use it;
    "round_robin" — when ``config.backend`` resolves to wgpu, adapter ``local_rank`` modulo the
    number of adapters (``backend.adapter`` is ignored), else ``config.backend``."""
    mode = config.distributed.adapter_per_rank
    if mode == "numpy" or config.backend.name == "numpy":
        return get_backend("numpy")
    if mode == "same":
        return make_backend(config)
    if config.backend.name == "auto" and make_backend(config).name != "wgpu":
        return make_backend(config)
    from ..backends.webgpu import list_adapters  # type: ignore[attr-defined]

    adapters = list_adapters()
    if not adapters:
        return make_backend(config)  # raises BackendUnavailable with the reason
    return get_backend("wgpu", adapter=adapters[local_rank % len(adapters)]["index"])


def open_rank_backend(dp: DataParallel, config: Config, world: WorldEnv) -> Backend:
    """Collective: open this rank's backend; if any rank cannot, every rank raises
    DistributedError naming each failed rank and its reason (before step 1)."""
    backend, error = None, None
    try:
        backend = backend_for_rank(config, world.local_rank)
    except (EnergeticError, ValueError, TypeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    dp.raise_if_any_failed(error, "cannot open its backend/adapter")
    assert backend is not None
    return backend


class DistributedTrainer(Trainer):
    """A :class:`~energetic_wgpu.trainer.Trainer` for one rank of a data-parallel run.

    Args:
        config: the run configuration (the same on every rank; ``train.batch_size`` is global).
        dp: the :class:`DataParallel` of the process group.
        backend: this rank's backend (see :func:`open_rank_backend`).
        out_dir, progress, echo: as for Trainer; used on rank 0 only (the others write and
            print nothing).
    """

    def __init__(
        self,
        config: Config,
        dp: DataParallel,
        *,
        backend: Backend,
        out_dir: str | Path | None = None,
        progress: bool = True,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        lead = dp.rank == 0
        super().__init__(
            config, backend=backend, out_dir=out_dir if lead else None, progress=progress and lead,
            echo=echo if lead else (lambda _s: None), write_files=lead,
        )
        self.dp = dp
        self.data = ShardedData(self.data, dp.rank, dp.world_size, config.train.batch_size)

    def _train_step(self, step: int, batch: Any, stop_requested: bool) -> Any:
        tr, r = self.config.train, self.config.router
        res = data_parallel_step(
            self.dp, self.router, self.optimizer, batch.energies, batch.target, loss=tr.loss, mask=batch.mask,
            stop=stop_requested, steps=r.steps, retain_sinks=r.retain_sinks, entropy_lambda=tr.entropy_lambda,
        )
        every = self.config.distributed.check_every
        if every and step % every == 0:
            self.dp.check_replicas(self.router, step)
        return res

    def _stop_now(self, result: Any, requested: bool) -> bool:
        return bool(result.stop)  # the vote of every rank, taken in the step's all-reduce

    def val_loss(self) -> float | None:
        """The held-out loss, evaluated on rank 0 only (the only rank that logs it; the
        parameters are the same on every rank)."""
        return super().val_loss() if self.dp.rank == 0 else None

    @property
    def shard_rows(self) -> list[int]:
        """The rows of the global batch each rank trains on, in rank order (the batch size of
        the data source: ``train.batch_size``, or fewer when the data has fewer samples)."""
        b = int(getattr(self.data.source, "batch_size", self.config.train.batch_size))
        return [hi - lo for lo, hi in (shard_bounds(b, r, self.dp.world_size) for r in range(self.dp.world_size))]

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {
            "distributed": {
                "world_size": self.dp.world_size,
                "backend": self.config.distributed.backend,
                "global_batch": sum(self.shard_rows),
                "shard_rows": self.shard_rows,
                "sharding": SHARDING,
            }
        }

    def resume_all(self, path: str | Path) -> int:
        """Collective: every rank restores the checkpoint at ``path`` (on several machines the
        run folder must be readable at the same path on each, e.g. shared storage); if any
        rank cannot, every rank raises DistributedError naming it and the reason."""
        step, error = 0, None
        try:
            step = self.resume(path)
        except (EnergeticError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.dp.raise_if_any_failed(error, "cannot resume")
        return step

    def run(self, steps: int | None = None) -> RunSummary:
        """Train every rank to the same step; checks the replicas before the first step and
        after the last (raises DistributedError naming the step if they differ)."""
        self.dp.check_replicas(self.router, self.step)
        summary = super().run(steps)
        self.dp.check_replicas(self.router, self.step)
        return summary
