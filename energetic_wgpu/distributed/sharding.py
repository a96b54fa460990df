"""Rank-sharded data: which rows of a global batch each rank trains on.

The global batch of B rows is cut into ``world_size`` contiguous shards in rank order; the
first ``B % world_size`` ranks get one row more (``numpy.array_split``'s rule), so shards
differ by at most one row and depend only on (B, rank, world_size) — never on timing.
These helpers need no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..tasks import Batch, DataSource

__all__ = ["shard_bounds", "shard_batch", "ShardedData", "SHARDING"]

#: the sharding rule, as recorded in checkpoints
SHARDING = "contiguous rows in rank order; the first B % world_size ranks get one more"


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def shard_bounds(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)``: the rows ``[start, stop)`` of a global batch of ``batch_size`` rows
    that ``rank`` (0-based, < ``world_size``) trains on."""
    b = _int(batch_size, "batch_size", 0)
    w = _int(world_size, "world_size", 1)
    r = _int(rank, "rank", 0)
    if r >= w:
        raise InvalidArgumentError(f"rank must be in [0, world_size - 1 = {w - 1}], got {r}")
    base, extra = divmod(b, w)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def _rows(x: Any, start: int, stop: int) -> Any:
    if x is None:
        return None
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)  # a device array is read back
    if arr.ndim != 2:
        raise InvalidArgumentError(f"a sharded batch needs [B, N] arrays, got shape {arr.shape}")
    return arr[start:stop]


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """The rows of ``batch`` (energies, target and mask [B, N]) that ``rank`` trains on. numpy
    arrays are sliced without a copy; backend arrays are read back first (prefer numpy)."""
    start, stop = shard_bounds(int(np.shape(batch.energies)[0]), rank, world_size)
    return Batch(_rows(batch.energies, start, stop), _rows(batch.target, start, stop), _rows(batch.mask, start, stop))


class ShardedData:
    """A :class:`~energetic_wgpu.tasks.DataSource` giving ``rank``'s shard of every global
    batch of ``source``. Every rank draws the same global batch (so the source's state, saved
    in checkpoints, does not depend on the world size) and keeps its rows. A source with a
    ``batch_rows(step, start, stop)`` method (the built-in teacher task) builds only its rows.
    """

    def __init__(self, source: DataSource, rank: int, world_size: int, batch_size: int) -> None:
        self.source = source
        self.rank = _int(rank, "rank", 0)
        self.world_size = _int(world_size, "world_size", 1)
        self.batch_size = _int(batch_size, "batch_size", 1)
        self.start, self.stop = shard_bounds(self.batch_size, self.rank, self.world_size)

    def batch(self, step: int) -> Batch:
        """This rank's rows of the global batch of ``step``."""
        rows = getattr(self.source, "batch_rows", None)
        if rows is not None:
            return rows(step, self.start, self.stop)
        return shard_batch(self.source.batch(step), self.rank, self.world_size)

    def state(self) -> dict[str, Any]:
        """The source's state: the global data order, the same on every rank."""
        return self.source.state()

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore the source's state (from a checkpoint of any world size)."""
        self.source.load_state(state)
