"""Data sources for the trainer: the built-in synthetic routing task and user arrays.

A data source gives the batch of a (1-based) training step and saves/restores its own
state, so that a resumed run sees exactly the batches an uninterrupted run would have:

* :class:`TeacherTask` — a "teacher" router with other seeded parameters routes random
  energies; the student learns to reproduce the teacher's next energies. Batch ``s`` is a
  pure function of ``(seed, s)``: it needs no state at all.
* :class:`ArrayDataset` — user arrays ``energies [n, N]`` / ``targets [n, N]``, served in
  batches in a seeded shuffled order, epoch after epoch; its state (epoch, position and the
  generator state at the start of the epoch) goes into checkpoints.

:func:`make_data` builds what a config's ``train.task`` says: the teacher task, or the rows
of the ``train.task.path`` file split into an :class:`ArrayDataset` and a held-out
:class:`~energetic_wgpu.heldout.HeldOut` set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .backends import Backend
from .errors import InvalidArgumentError, ShapeError
from .graph import Graph
from .router import Router, RouterParams

__all__ = ["Batch", "DataSource", "TeacherTask", "ArrayDataset", "make_task", "make_data"]


@dataclass
class Batch:
    """One training batch: ``energies`` and ``target`` float [B, N] (numpy or backend arrays),
    ``mask`` bool [B, N] or None (mse only)."""

    energies: Any
    target: Any
    mask: Any = None


class DataSource(Protocol):
    """What the trainer needs from a data source."""

    def batch(self, step: int) -> Batch:
        """The batch of training step ``step`` (1-based; steps are asked for in order)."""

    def state(self) -> dict[str, Any]:
        """A JSON-serializable state to save in a checkpoint."""

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state` (None: an old checkpoint without one — restart the order)."""


class TeacherTask:
    """The built-in synthetic routing task.

    Args:
        graph: the routing graph.
        backend: the backend the student trains on (the teacher runs there too, so on a GPU
            the targets never leave the device).
        dim, tau, alpha, top_k: the teacher's hyper-parameters (normally the student's).
        steps, retain_sinks: propagation of the teacher's forward (normally the student's).
        batch_size: rows per batch.
        seed: data seed; batch ``s`` uses ``numpy.random.default_rng([seed, s])``.
        teacher_seed, teacher_noise: the teacher's ``RouterParams.init`` seed and noise.
        inject: "all" (random energy on every node) or "layer0" (only the first lattice layer).
    """

    def __init__(
        self,
        graph: Graph,
        backend: Backend,
        *,
        dim: int,
        tau: float = 1.0,
        alpha: float = 1.0,
        top_k: int = 0,
        steps: int = 1,
        retain_sinks: bool = False,
        batch_size: int = 64,
        seed: int = 0,
        teacher_seed: int = 1,
        teacher_noise: float = 0.5,
        inject: str = "all",
    ) -> None:
        if inject not in ("all", "layer0"):
            raise InvalidArgumentError(f"inject must be 'all' or 'layer0', got {inject!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.graph = graph
        self.backend = backend
        self.batch_size = batch_size
        self.seed = int(seed)
        self.steps = steps
        self.retain_sinks = retain_sinks
        params = RouterParams.init(
            graph, dim=dim, tau=tau, alpha=alpha, top_k=top_k, seed=teacher_seed, noise=teacher_noise
        )
        self.teacher = Router(graph, params, backend)
        if inject == "layer0":
            self._inject = (graph.positions[:, 0] == graph.positions[:, 0].min()).astype(np.float32)
        else:
            self._inject = None

    def energies(self, step: int) -> np.ndarray:
        """float32 [B, N]: the input energies of step ``step`` (uniform in [0, 1))."""
        rng = np.random.default_rng([self.seed, int(step)])
        e = rng.random((self.batch_size, self.graph.num_nodes), dtype=np.float32)
        if self._inject is not None:
            e *= self._inject
        return e

    def batch(self, step: int) -> Batch:
        return self.batch_rows(step, 0, self.batch_size)

    def batch_rows(self, step: int, start: int, stop: int) -> Batch:
        """Rows ``[start, stop)`` of the batch of ``step`` (the teacher routes only these; a
        data-parallel rank asks for its shard)."""
        e = self.backend.asarray(self.energies(step)[start:stop])
        target = self.teacher.forward(e, steps=self.steps, retain_sinks=self.retain_sinks).next_energies
        return Batch(e, target)

    def state(self) -> dict[str, Any]:
        return {"kind": "teacher", "seed": self.seed}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state is not None and state.get("kind") not in (None, "teacher"):
            raise InvalidArgumentError(f"cannot restore a {state.get('kind')!r} data state into a TeacherTask")


class ArrayDataset:
    """Batches of user arrays in a seeded shuffled order.

    Args:
        energies: float [n, N] input energies, one row per example.
        targets: float [n, N] target next energies.
        batch_size: rows per batch (clamped to n); the last incomplete batch of an epoch is
            dropped so that every batch has the same shape.
        seed: seed of the shuffling generator.
        shuffle: False serves the rows in order.
        mask: optional bool [n, N] (mse only).
    """

    def __init__(
        self,
        energies: Any,
        targets: Any,
        batch_size: int = 64,
        seed: int = 0,
        shuffle: bool = True,
        mask: Any = None,
    ) -> None:
        e = np.asarray(energies, dtype=np.float32)
        t = np.asarray(targets, dtype=np.float32)
        if e.ndim != 2:
            raise ShapeError(f"energies must be [n, N], got shape {e.shape}")
        if t.shape != e.shape:
            raise ShapeError(f"targets must have the shape of energies {e.shape}, got {t.shape}")
        if e.shape[0] == 0:
            raise ShapeError("energies must hold at least one row")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        m = None
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype != np.bool_ or m.shape != e.shape:
                raise ShapeError(f"mask must be bool {e.shape}, got {m.dtype} {m.shape}")
        self.energies_np, self.targets_np, self.mask_np = e, t, m
        self.n = e.shape[0]
        self.batch_size = min(batch_size, self.n)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self._rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self.pos = 0
        self._start_epoch(self._rng.bit_generator.state)

    def _start_epoch(self, rng_state: dict[str, Any]) -> None:
        self._epoch_rng_state = rng_state
        self._rng.bit_generator.state = rng_state
        self._perm = self._rng.permutation(self.n) if self.shuffle else np.arange(self.n)

    def batch(self, step: int) -> Batch:
        if self.pos + self.batch_size > self.n:
            self.epoch += 1
            self.pos = 0
            self._start_epoch(self._rng.bit_generator.state)
        idx = self._perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        mask = None if self.mask_np is None else self.mask_np[idx]
        return Batch(self.energies_np[idx], self.targets_np[idx], mask)

    def state(self) -> dict[str, Any]:
        return {"kind": "arrays", "epoch": self.epoch, "pos": self.pos, "rng": self._epoch_rng_state}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state is None:  # an old checkpoint without data state: restart the order
            self.__init__(self.energies_np, self.targets_np, self.batch_size, self.seed, self.shuffle, self.mask_np)
            return
        if state.get("kind") != "arrays":
            raise InvalidArgumentError(f"cannot restore a {state.get('kind')!r} data state into an ArrayDataset")
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        self._start_epoch(state["rng"])


def make_task(config: Any, graph: Graph, backend: Backend) -> TeacherTask:
    """The data source a :class:`~energetic_wgpu.config.Config` describes (``train.task``)."""
    r, t = config.router, config.train
    return TeacherTask(
        graph,
        backend,
        dim=r.dim,
        tau=r.tau,
        alpha=r.alpha,
        top_k=r.top_k,
        steps=r.steps,
        retain_sinks=r.retain_sinks,
        batch_size=t.batch_size,
        seed=t.seed,
        teacher_seed=t.task.teacher_seed,
        teacher_noise=t.task.teacher_noise,
        inject=t.task.inject,
    )


def _rows(a: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[rows]


def make_data(config: Any, graph: Graph, backend: Backend) -> tuple[DataSource, Any]:
    """``(data source, held-out set or None)`` for ``config.train.task``.

    "teacher": (:func:`make_task`, None). "arrays": the rows of ``train.task.path`` (see
    :func:`energetic_wgpu.userdata.load_arrays`) split by
    :func:`~energetic_wgpu.userdata.split_holdout` with ``train.task.val_fraction`` and
    ``train.seed``: an :class:`ArrayDataset` of the training rows (``train.batch_size``,
    seeded by ``train.seed``) and a :class:`~energetic_wgpu.heldout.HeldOut` of the others
    (None when ``val_fraction`` is 0).

    Raises:
        DataError: the data file is missing, malformed or does not fit ``graph``.
    """
    from .errors import DataError
    from .userdata import load_arrays, split_holdout
    from .heldout import HeldOut

    task, tr = config.train.task, config.train
    if task.name != "arrays":
        return make_task(config, graph, backend), None
    energies, targets, mask = load_arrays(task.path, graph.num_nodes)
    if mask is not None and tr.loss != "mse":
        raise DataError(f"{task.path}: a mask is only supported with train.loss: mse (got {tr.loss!r})")
    try:
        train_rows, val_rows = split_holdout(energies.shape[0], task.val_fraction, tr.seed)
    except DataError as exc:
        raise DataError(f"{task.path}: {exc}") from None
    data = ArrayDataset(energies[train_rows], targets[train_rows], batch_size=tr.batch_size, seed=tr.seed,
                        mask=_rows(mask, train_rows))
    held = None
    if val_rows.size:
        held = HeldOut(backend, energies[val_rows], targets[val_rows], _rows(mask, val_rows),
                       chunk=max(tr.batch_size, 1))
    return data, held
