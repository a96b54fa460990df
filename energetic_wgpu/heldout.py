"""The held-out set of a training run and its ``val_loss``.

:class:`HeldOut` keeps held-out rows on the backend (uploaded once, in chunks of at most
``chunk`` rows) and evaluates the training objective on them without any update: a forward,
the loss of ``train.loss`` and, when ``entropy_lambda`` != 0, the same entropy term as the
training loss, so ``val_loss`` and ``loss`` are on one scale. The trainer calls it every
``train.log_every`` steps, when it reads the training loss back anyway.

The chunks' losses are combined on the host with the weights that make the result the loss
of one forward over all rows: the counted elements for mse (the masked ones, or rows x N),
the rows for cross-entropy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Backend
from .errors import InvalidArgumentError, ShapeError

__all__ = ["HeldOut"]


class HeldOut:
    """Held-out rows on a backend.

    Args:
        backend: where the rows live and the evaluation runs.
        energies: float [S, N] inputs (S >= 1).
        targets: float [S, N] targets.
        mask: bool [S, N] or None: the target elements the mse loss counts.
        chunk: rows per forward (bounds the evaluation's memory).
    """

    def __init__(self, backend: Backend, energies: Any, targets: Any, mask: Any = None, chunk: int = 64) -> None:
        e = np.asarray(energies, dtype=np.float32)
        t = np.asarray(targets, dtype=np.float32)
        if e.ndim != 2 or e.shape[0] == 0:
            raise ShapeError(f"energies must be [S, N] with S >= 1, got shape {e.shape}")
        if t.shape != e.shape:
            raise ShapeError(f"targets must have the shape of energies {e.shape}, got {t.shape}")
        m = None if mask is None else np.asarray(mask)
        if m is not None and (m.dtype != np.bool_ or m.shape != e.shape):
            raise ShapeError(f"mask must be bool {e.shape}, got {m.dtype} {m.shape}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise InvalidArgumentError(f"chunk must be an int >= 1, got {chunk!r}")
        self.backend = backend
        self.num_samples = e.shape[0]
        self.has_mask = m is not None
        self.chunks: list[tuple[Any, Any, Any, int, int]] = []  # energies, targets, mask, rows, counted
        for lo in range(0, e.shape[0], chunk):
            sl = slice(lo, lo + chunk)
            mc = None if m is None else m[sl]
            counted = int(e[sl].size if mc is None else np.count_nonzero(mc))
            self.chunks.append((
                backend.asarray(np.ascontiguousarray(e[sl])),
                backend.asarray(np.ascontiguousarray(t[sl])),
                None if mc is None else backend.asarray(np.ascontiguousarray(mc)),
                e[sl].shape[0],
                counted,
            ))

    def evaluate(
        self,
        router: Any,
        loss: str = "mse",
        steps: int = 1,
        retain_sinks: bool = False,
        entropy_lambda: float = 0.0,
        eps: float = 1e-12,
    ) -> float:
        """The objective of ``Router.train_step`` over every held-out row, with no update
        (reads back one float per chunk).

        Args:
            router: a :class:`~energetic_wgpu.Router` on this object's backend.
            loss: "mse" or "cross_entropy" (a mask needs "mse").
            steps, retain_sinks: the forward's propagation, as in training.
            entropy_lambda: weight of the entropy term (added once, as in training).
        """
        if loss not in ("mse", "cross_entropy"):
            raise InvalidArgumentError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
        if loss != "mse" and self.has_mask:
            raise InvalidArgumentError("a held-out mask is only supported with loss='mse'")
        be = self.backend
        parts: list[tuple[Any, int]] = []
        pi = None
        for energies, targets, mask, rows, counted in self.chunks:
            out = router.forward(energies, steps=steps, retain_sinks=retain_sinks, keep_history=False)
            pi = out.edge_pi
            if loss == "mse":
                value, _ = be.mse(out.next_energies, targets, mask)
                parts.append((value, counted))
            else:
                value, _ = be.cross_entropy(out.next_energies, targets, float(eps))
                parts.append((value, rows))
        total_weight = sum(w for _, w in parts)
        values = [float(be.to_numpy(v)[0]) for v, _ in parts]
        if len(parts) == 1 or not total_weight:
            result = values[0] if total_weight else 0.0
        else:
            result = sum(v * w for v, (_, w) in zip(values, parts)) / total_weight
        if entropy_lambda != 0.0 and pi is not None:
            ent, _ = be.entropy_regularization(router.graph, pi, float(entropy_lambda))
            result += float(be.to_numpy(ent)[0])
        return float(result)
