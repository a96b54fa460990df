"""Losses (SPEC §5), each returning ``(loss: float, grad)``.

The functions accept numpy arrays (computed by a NumPy backend of the arrays' float
precision) or backend arrays (computed on that backend; the returned ``grad`` is a backend
array and the loss is read back). Inside a GPU training step use the backend methods
(``backend.mse`` ...) directly: they return the loss as a device array with no readback.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Backend
from .errors import InvalidArgumentError, ShapeError
from .graph import Graph
from .validation import check_float, check_not_foreign, float_array, mask_array

__all__ = ["mse", "cross_entropy", "entropy_regularization", "LOSSES"]

#: loss names accepted by ``Router.train_step``
LOSSES = ("mse", "cross_entropy")


def _backend_of(*arrays: Any) -> Backend:
    for a in arrays:
        be = getattr(a, "backend", None)
        if isinstance(be, Backend):
            return be
    from .backends.numpy_backend import NumpyBackend

    dtypes = []
    for a in arrays:
        if a is not None and not isinstance(a, (bool, np.bool_)):
            try:
                dtypes.append(np.asarray(a).dtype)
            except (ValueError, TypeError):  # ragged: refused with its name by _float
                pass
    dt = np.result_type(*dtypes) if dtypes else np.dtype(np.float32)
    return NumpyBackend("float64" if dt == np.float64 else "float32")


def _float(be: Backend, value: Any, name: str) -> Any:
    """``value`` as a float array of ``be``: finite in the backend's dtype, named on error."""
    if be.is_array(value) and be.name != "numpy":
        if np.dtype(value.dtype) != be.dtype:
            raise ShapeError(f"{name} must have dtype {be.dtype}, got {value.dtype}")
        return value
    check_not_foreign(be, value, name)
    return be.asarray(float_array(value, name, None, be.dtype))


def _mask(be: Backend, mask: Any) -> Any:
    """A bool mask of ``be``: bool, or numbers that are all 0 or 1."""
    if be.is_array(mask) and be.name != "numpy":
        if np.dtype(mask.dtype) != np.bool_:
            raise ShapeError(f"mask must be a bool array on the device, got dtype {mask.dtype}")
        return mask
    check_not_foreign(be, mask, "mask")
    return be.asarray(mask_array(mask, "mask"))


def _same_shape(a: Any, b: Any, name_a: str, name_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"{name_b} must have the shape of {name_a} {tuple(a.shape)}, got {tuple(b.shape)}")


def mse(pred: Any, target: Any, mask: Any = None) -> tuple[float, Any]:
    """Mean squared error over the elements where ``mask`` is True (all when None).

    ``mask``: bool, or a numeric array whose values are all 0 or 1 (the shape of ``pred``).
    Returns ``(loss, grad)`` with grad = 2 (pred - target) / count on masked elements and 0
    elsewhere; an all-False mask gives loss 0 and grad 0.
    """
    be = _backend_of(pred, target)
    p, t = _float(be, pred, "pred"), _float(be, target, "target")
    _same_shape(p, t, "pred", "target")
    m = None
    if mask is not None:
        m = _mask(be, mask)
        _same_shape(p, m, "pred", "mask")
    loss, grad = be.mse(p, t, m)
    return float(be.to_numpy(loss)[0]), grad


def cross_entropy(pred: Any, target: Any, eps: float = 1e-12) -> tuple[float, Any]:
    """``-sum target * log(max(pred, eps))`` averaged over the batch (rows of a [B, N]
    input; an [N] input is one row). grad = -target / max(pred, eps) / B, 0 where clamped.
    Finite for pred = 0. ``eps``: > 0 and finite, also in float32."""
    eps = check_float(eps, "eps", positive=True)
    be = _backend_of(pred, target)
    p, t = _float(be, pred, "pred"), _float(be, target, "target")
    _same_shape(p, t, "pred", "target")
    if len(p.shape) not in (1, 2):
        raise ShapeError(f"pred must be [N] or [B, N], got shape {tuple(p.shape)}")
    loss, grad = be.cross_entropy(p, t, float(eps))
    return float(be.to_numpy(loss)[0]), grad


def entropy_regularization(pi: Any, lam: float, graph: Graph) -> tuple[float, Any]:
    """``-lam * sum pi log pi`` over the kept (pi > 0) edges; grad ``-lam (log pi + 1)`` there,
    0 elsewhere. pi: float [E] of ``graph``."""
    if not isinstance(graph, Graph):
        raise InvalidArgumentError(f"graph must be a Graph, got {type(graph).__name__}")
    lam = check_float(lam, "lam")
    be = _backend_of(pi)
    p = _float(be, pi, "pi")
    if tuple(p.shape) != (graph.num_edges,):
        raise ShapeError(f"pi must have shape ({graph.num_edges},) (one per edge), got {tuple(p.shape)}")
    loss, grad = be.entropy_regularization(graph, p, float(lam))
    return float(be.to_numpy(loss)[0]), grad
