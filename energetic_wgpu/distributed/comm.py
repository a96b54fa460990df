"""Gradients and checks across the ranks of a torch.distributed process group.

:class:`DataParallel` wraps an existing process group (gloo: CPU, TCP). Per step it reads a
router's gradients back as ONE packed array (a single readback on wgpu), sums them across
ranks with ONE ``all_reduce`` — weighted, so that the result is the full-batch gradient —
and uploads the result into the same backend arrays; every rank then runs the same optimizer
update, so the replicas stay identical (:meth:`DataParallel.check_replicas` asserts it).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..backends import Backend
from ..errors import DistributedError, InvalidArgumentError, ShapeError
from ._torch import require_torch

__all__ = ["DataParallel", "ReduceResult"]


@dataclass
class ReduceResult:
    """What :meth:`DataParallel.all_reduce_gradients` returns.

    Attributes:
        total_weight: the sum of the ranks' weights.
        loss: the weight-averaged loss over the ranks (the full-batch loss), or None when no
            loss was passed.
        flags: the ranks' ``flags`` summed, element by element (floats).
        gradient_values: how many gradient values went through the all-reduce.
        seconds: wall time of {"readback", "all_reduce", "upload"} on this rank.
    """

    total_weight: float
    loss: float | None
    flags: tuple[float, ...]
    gradient_values: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Packed:
    """How to read a set of gradients as one flat numpy array and to write it back."""

    read: Callable[[], np.ndarray]  # -> [gradient values (+ the loss, when loss_inside)]
    write: Callable[[np.ndarray], None]  # the same layout, written in place
    size: int  # number of gradient values
    loss_inside: bool  # the loss is the last value of read() / write()


def _backend_packed(grads: Any, loss: Any) -> _Packed:
    """A router's Gradients (and a loss array of its backend): one readback, one upload each."""
    glist, be = list(grads.as_list()), grads.backend
    loss_inside = loss is not None and be.is_array(loss)
    arrays = glist + ([loss] if loss_inside else [])
    size = int(sum(int(np.prod(g.shape)) for g in glist))
    return _Packed(lambda: be.read_packed(arrays), lambda flat: be.write_packed(flat, arrays), size, loss_inside)


def _torch_packed(torch: Any, grads: Any) -> _Packed:
    """The ``.grad`` of a torch module's parameters, or a sequence of CPU torch tensors."""
    if isinstance(grads, torch.nn.Module):
        tensors = []
        for name, p in grads.named_parameters():
            if p.requires_grad:
                if p.grad is None:
                    raise InvalidArgumentError(f"grads: parameter {name!r} has no .grad (call backward() first)")
                tensors.append(p.grad)
    else:
        tensors = list(grads)
        bad = [i for i, t in enumerate(tensors) if not isinstance(t, torch.Tensor) or t.device.type != "cpu"]
        if bad:
            got = type(tensors[bad[0]]).__name__
            raise InvalidArgumentError(f"grads[{bad[0]}] must be a CPU torch tensor, got {got}")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise InvalidArgumentError(f"grads must share one dtype, got {sorted(map(str, dtypes))}")
    sizes = [t.numel() for t in tensors]

    def read() -> np.ndarray:
        parts = [t.detach().reshape(-1).numpy() for t in tensors]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def write(flat: np.ndarray) -> None:
        offset = 0
        for t, n in zip(tensors, sizes):
            t.copy_(torch.from_numpy(flat[offset : offset + n]).view_as(t))
            offset += n

    return _Packed(read, write, int(sum(sizes)), False)


def _weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"weight must be a finite number >= 0, got {value!r:.200}")
    w = float(value)
    if not np.isfinite(w) or w < 0:
        raise InvalidArgumentError(f"weight must be a finite number >= 0, got {w}")
    return w


class DataParallel:
    """Data-parallel helpers over an initialized torch.distributed process group.

    Args:
        group: a process group (default: the world group). Initialize it first, e.g. with
            ``torch.distributed.init_process_group("gloo")`` or
            :func:`energetic_wgpu.distributed.init_from_env`.

    Attributes:
        rank, world_size: this process's rank in ``group`` and the group's size.

    Raises:
        BackendUnavailable: torch is not installed (names the ``distributed`` extra).
        DistributedError: no process group is initialized.
    """

    def __init__(self, group: Any = None) -> None:
        torch = require_torch()
        self._torch = torch
        self._dist = torch.distributed
        if not self._dist.is_initialized():
            raise DistributedError(
                "torch.distributed is not initialized: call torch.distributed.init_process_group('gloo', ...) "
                "or energetic_wgpu.distributed.init_from_env() first"
            )
        self.group = group
        self.rank = int(self._dist.get_rank(group))
        self.world_size = int(self._dist.get_world_size(group))

    def _collective(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a torch.distributed collective; a dead, crashed or silent peer (gloo reports a
        closed connection at once, a hang after the group's timeout) becomes DistributedError."""
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:  # gloo errors are RuntimeError subclasses (DistBackendError ...)
            text = " ".join(str(exc).split())[:300]
            raise DistributedError(
                f"rank {self.rank}: {what} failed, another rank died, crashed or timed out: "
                f"{type(exc).__name__}: {text}"
            ) from None

    # ------------------------------------------------------------------ gradients
    def all_reduce_gradients(
        self,
        grads: Any,
        weight: float = 1.0,
        *,
        loss: Any = None,
        flags: Sequence[float] = (),
    ) -> ReduceResult:
        """Replace ``grads`` **in place** with ``sum_r weight_r * grads_r / sum_r weight_r`` over
        the ranks. ``grads``: a router's :class:`~energetic_wgpu.router.Gradients` (q, k, bias),
        or for a torch model (e.g. :class:`energetic_wgpu.torch.EnergeticRouter`) the module
        (the ``.grad`` of its trainable parameters) or a list of CPU tensors.

        With each rank's gradient being that of the *mean* loss over its shard and
        ``weight`` the shard's share of the mean (its element count for "mse", counting a
        mask's True elements; its row count for "cross_entropy"; see
        :func:`~energetic_wgpu.distributed.shard_weight`), the result is the gradient of the
        full-batch loss on every rank. A term that does not depend on the batch (entropy
        regularization of pi) is kept once, since the weights are normalized. When every
        weight is 0, the local gradients are kept.

        Args:
            grads: read as ONE packed array (one readback on wgpu), summed with ONE all_reduce
                in their dtype, written back.
            weight: this rank's weight (>= 0).
            loss: this rank's loss (a float [1] backend array or a number), averaged with the
                same weights in the same all_reduce; a backend array is overwritten with the
                average (so an optimizer's non-finite guard decides the same on every rank).
            flags: numbers summed across ranks in the same all_reduce (e.g. a stop request).

        On a world of one rank the gradients are left untouched (no scaling, no upload).
        """
        if hasattr(grads, "as_list") and isinstance(getattr(grads, "backend", None), Backend):
            packed = _backend_packed(grads, loss)
        elif isinstance(grads, (list, tuple)) or isinstance(grads, self._torch.nn.Module):
            packed = _torch_packed(self._torch, grads)
        else:
            raise InvalidArgumentError(
                "grads must be the Gradients of Router.backward / Router.loss_and_grads, a torch module or a list "
                f"of torch tensors, got {type(grads).__name__}"
            )
        w = _weight(weight)
        flags = [float(f) for f in flags]
        loss_dev = packed.loss_inside
        t0 = time.perf_counter()
        flat = packed.read()
        t1 = time.perf_counter()
        ng = packed.size
        if flat.size != ng + (1 if loss_dev else 0):
            raise ShapeError(f"the packed gradients hold {flat.size} values, expected {ng + (1 if loss_dev else 0)}")
        local_loss = None if loss is None else float(flat[ng] if loss_dev else loss)
        buf = np.empty(ng + 2 + len(flags), dtype=flat.dtype)
        if self.world_size == 1:
            buf[:ng] = flat[:ng]
        else:
            np.multiply(flat[:ng], w, out=buf[:ng])
        buf[ng] = 0.0 if local_loss is None else w * local_loss
        buf[ng + 1] = w
        buf[ng + 2 :] = flags
        self._collective("the gradient all-reduce", self._dist.all_reduce, self._torch.from_numpy(buf),
                         op=self._dist.ReduceOp.SUM, group=self.group)
        t2 = time.perf_counter()
        total = float(buf[ng + 1])
        if local_loss is None:
            mean_loss = None
        elif self.world_size == 1 or total <= 0:
            mean_loss = local_loss
        else:
            mean_loss = float(buf[ng]) / total
        if self.world_size > 1 and total > 0:
            np.divide(buf[:ng], buf[ng + 1], out=buf[:ng])
            if loss_dev:  # the full-batch loss replaces the local one (the same on every rank)
                buf[ng] = mean_loss
            packed.write(buf[: ng + (1 if loss_dev else 0)])
        # total == 0: every shard is empty; the local gradients (batch-independent terms only) stay
        t3 = time.perf_counter()
        return ReduceResult(
            total_weight=total,
            loss=mean_loss,
            flags=tuple(float(x) for x in buf[ng + 2 :]),
            gradient_values=ng,
            seconds={"readback": t1 - t0, "all_reduce": t2 - t1, "upload": t3 - t2},
        )

    # ------------------------------------------------------------------ agreement
    def all_gather(self, obj: Any) -> list[Any]:
        """Collective: every rank's ``obj`` (picklable, small), in rank order."""
        gathered: list[Any] = [None] * self.world_size
        self._collective("an exchange between the ranks", self._dist.all_gather_object, gathered, obj,
                         group=self.group)
        return gathered

    def raise_if_any_failed(self, error: str | None, what: str) -> None:
        """Collective: every rank passes its error text (None: fine); if any rank failed,
        raise :class:`DistributedError` on every rank naming each failed rank and its reason."""
        gathered = self.all_gather(error)
        failed = [(r, e) for r, e in enumerate(gathered) if e is not None]
        if failed:
            raise DistributedError("; ".join(f"rank {r} {what}: {e}" for r, e in failed))

    def check_replicas(self, router: Any, step: int) -> str:
        """Collective: compare a checksum of ``router``'s parameters (and tau, alpha, top_k)
        across the ranks; returns it, or raises :class:`DistributedError` naming ``step``
        when the replicas differ. Costs one parameter readback and one small all_reduce."""
        be = router.backend
        flat = be.read_packed(router.parameters())
        h = hashlib.blake2b(flat.tobytes(), digest_size=7)
        h.update(repr((float(router.tau), float(router.alpha), int(router.top_k))).encode())
        value = int.from_bytes(h.digest(), "little")  # 56 bits: +-value fits in int64
        t = self._torch.tensor([value, -value], dtype=self._torch.int64)
        self._collective(f"the replica check of step {step}", self._dist.all_reduce, t,
                         op=self._dist.ReduceOp.MAX, group=self.group)
        hi, lo = int(t[0]), -int(t[1])
        if hi != lo:
            raise DistributedError(
                f"the replicas diverged at step {step}: the parameters differ across ranks (checksums "
                f"{lo:014x} .. {hi:014x}; this rank {self.rank} has {value:014x}); the last checkpoint is kept"
            )
        return f"{value:014x}"
