"""One data-parallel training step (forward, loss, backward, all-reduce, the same AdamW on
every rank) and the weight of a rank's shard in the full-batch loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..router import TrainStepResult
from .comm import DataParallel, ReduceResult

__all__ = ["shard_weight", "data_parallel_step", "DataParallelStepResult"]


def shard_weight(loss: str, shape: tuple[int, ...], mask: Any = None) -> float:
    """How much a shard counts in the full-batch mean loss: for "mse" its element count (the
    True elements of ``mask`` when given), for "cross_entropy" its row count (an [N] input is
    one row). ``shape`` is the prediction's shape, [B, N] or [N]. A backend ``mask`` is read
    back (pass numpy masks to avoid it)."""
    shape = tuple(int(s) for s in shape)
    if loss == "mse":
        if mask is None:
            return float(np.prod(shape))
        return float(np.count_nonzero(np.asarray(mask)))
    if loss == "cross_entropy":
        return float(shape[0]) if len(shape) == 2 else 1.0
    raise InvalidArgumentError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")


@dataclass
class DataParallelStepResult(TrainStepResult):
    """A :class:`~energetic_wgpu.router.TrainStepResult` whose ``loss`` is the full-batch
    loss (weight-averaged over the ranks, already on the host), ``grad_norm`` the norm of the
    all-reduced gradient (the same on every rank) and ``metrics`` those of this rank's shard.

    Attributes:
        stop_votes: how many ranks asked to stop at this step (0: none).
        reduce: the :class:`~energetic_wgpu.distributed.ReduceResult` of the all-reduce.
    """

    global_loss: float = 0.0
    stop_votes: int = 0
    reduce: ReduceResult | None = field(default=None, repr=False)

    @property
    def loss(self) -> float:  # type: ignore[override]
        """The full-batch loss (the same on every rank)."""
        return self.global_loss

    @property
    def stop(self) -> bool:
        """True on every rank when any rank asked to stop at this step."""
        return self.stop_votes > 0


def data_parallel_step(
    dp: DataParallel,
    router: Any,
    optimizer: Any,
    energies: Any,
    target: Any,
    *,
    loss: str = "mse",
    mask: Any = None,
    stop: bool = False,
    **options: Any,
) -> DataParallelStepResult:
    """One training step of ``router`` on this rank's shard (``energies``, ``target``, ``mask``:
    its rows of the global batch), equal to a :meth:`Router.train_step` on the global batch:
    :meth:`~energetic_wgpu.Router.loss_and_grads`, one packed readback, one all-reduce
    (weighted by :func:`shard_weight`; the loss is averaged in the same all-reduce), upload,
    then ``optimizer.step`` (the same clipped AdamW, and the same non-finite guard decision, on
    every rank). ``options`` are the other arguments of ``loss_and_grads`` (``active``,
    ``steps``, ``retain_sinks``, ``entropy_lambda``, ``eps``). ``stop`` is this rank's vote to
    stop after this step; the result's ``stop`` is True on every rank when any rank voted (so
    all stop after the same step).
    """
    if getattr(optimizer, "router", None) is not router:
        raise InvalidArgumentError("optimizer must be an optimizer built over this router")
    lg = router.loss_and_grads(energies, target, loss=loss, mask=mask, **options)
    weight = shard_weight(loss, tuple(lg.output.next_energies.shape), mask)
    red = dp.all_reduce_gradients(lg.grads, weight, loss=lg.loss_array, flags=(1.0 if stop else 0.0,))
    norm = optimizer.step(lg.grads, loss=lg.loss_array)  # the full-batch loss: every rank skips alike
    return DataParallelStepResult(
        backend=router.backend, output=lg.output, loss_array=lg.loss_array, grad_norm_array=norm, grads=lg.grads,
        skipped_array=getattr(optimizer, "last_skipped", None), global_loss=float(red.loss),
        stop_votes=int(round(red.flags[0])), reduce=red,
    )
