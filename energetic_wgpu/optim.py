"""AdamW with global-norm gradient clipping (the torch.optim.AdamW + clip_grad_norm_
convention, docs/definitions.md §6) and learning-rate schedules.

The optimizer state (m, v and the step count t) lives on the router's backend; on a GPU
backend the whole update (norm, clipping, AdamW) runs on the device with no readback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InvalidArgumentError, ShapeError
from .shortrepr import short_repr
from .validation import check_float, float_array

_F32_MAX = float(np.finfo(np.float32).max)

__all__ = [
    "AdamW",
    "Schedule",
    "ConstantLR",
    "StepLR",
    "CosineLR",
    "WarmupLR",
    "make_schedule",
]


# ------------------------------------------------------------------ schedules
class Schedule:
    """A learning-rate schedule: ``schedule(t)`` is the lr of update number ``t`` (1-based)."""

    def __call__(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A hyper-parameter: a number, finite in float32 (it reaches float32 uniforms), >= 0
    (> 0, also in float32, unless ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number, got {short_repr(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond float64
        v = math.inf
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InvalidArgumentError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {short_repr(value)}"
        )
    return check_float(v, name, positive=not allow_zero)  # finite (and > 0) in float32 too


def _steps(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be an int >= 1, got {short_repr(value)}")
    return int(value)


@dataclass(frozen=True)
class ConstantLR(Schedule):
    """The same learning rate ``lr`` at every step."""
    lr: float

    def __call__(self, t: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepLR(Schedule):
    """lr * gamma ** ((t - 1) // step_size)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _steps(self.step_size, "step_size")
        _positive(self.gamma, "gamma")

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** ((t - 1) // self.step_size)


@dataclass(frozen=True)
class CosineLR(Schedule):
    """min_lr + (lr - min_lr) * (1 + cos(pi * min(t - 1, total_steps) / total_steps)) / 2."""

    lr: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _steps(self.total_steps, "total_steps")
        _positive(self.min_lr, "min_lr", allow_zero=True)

    def __call__(self, t: int) -> float:
        frac = min(max(t - 1, 0), self.total_steps) / self.total_steps
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass(frozen=True)
class WarmupLR(Schedule):
    """Linear warm-up: after(t) * min(1, t / warmup_steps)."""

    after: Schedule
    warmup_steps: int

    def __post_init__(self) -> None:
        _steps(self.warmup_steps, "warmup_steps")

    def __call__(self, t: int) -> float:
        return self.after(t) * min(1.0, t / self.warmup_steps)


def make_schedule(
    name: str,
    lr: float,
    *,
    total_steps: int | None = None,
    step_size: int | None = None,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
) -> Schedule:
    """Build a schedule by name: "constant", "step", "cosine"; ``warmup_steps > 0`` wraps it in
    a linear warm-up."""
    lr = _positive(lr, "lr", allow_zero=True)
    if name == "constant":
        sched: Schedule = ConstantLR(lr)
    elif name == "step":
        if step_size is None:
            raise InvalidArgumentError("schedule 'step' needs step_size")
        sched = StepLR(lr, step_size, gamma)
    elif name == "cosine":
        if total_steps is None:
            raise InvalidArgumentError("schedule 'cosine' needs total_steps")
        sched = CosineLR(lr, total_steps, min_lr)
    else:
        raise InvalidArgumentError(f"unknown schedule {name!r}; choose 'constant', 'step' or 'cosine'")
    if warmup_steps:
        sched = WarmupLR(sched, warmup_steps)
    return sched


# ---------------------------------------------------------------------- AdamW
class AdamW:
    """AdamW over a router's parameters ``q``, ``k``, ``bias``.

    The defaults are ``torch.optim.AdamW``'s: lr 1e-3, betas (0.9, 0.999), eps 1e-8,
    weight_decay 0.01. Every value must be finite in float32 (they reach float32 uniforms).

    Args:
        router: the :class:`~energetic_wgpu.Router` whose parameters are updated in place.
        lr: learning rate (>= 0), or use ``schedule``.
        betas: (beta1, beta2), each in [0, 1).
        eps: > 0.
        weight_decay: >= 0 (decoupled, torch convention ``p *= 1 - lr * wd``).
        max_grad_norm: clip the global gradient norm to this value before the update (None: off).
        schedule: a :class:`Schedule` or callable ``t -> lr``; overrides ``lr``.

    Non-finite guard (as torch's ``GradScaler`` skips ``optimizer.step()`` on ``found_inf``):
    when the gradients' sum of squares (in float32 on a float32 backend) or the ``loss`` passed
    to :meth:`step` is NaN or inf, the update is skipped on the device, with no readback:
    parameters, moments and the device step count (the ``t`` of the bias corrections) keep
    their values, and two device counters (consecutive and total skipped steps,
    :meth:`skip_counts`) grow. The host's ``t`` counts :meth:`step` calls, applied or
    skipped, and indexes the schedule: like a torch lr scheduler stepped every iteration, the
    learning rate moves on over a skipped step, and ``state()`` stores what a resume needs to
    continue both counts.
    """

    NAMES = ("q", "k", "bias")

    def __init__(
        self,
        router: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = None,
        schedule: Schedule | Callable[[int], float] | None = None,
    ) -> None:
        self.lr = _positive(lr, "lr", allow_zero=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise InvalidArgumentError(f"betas must be a pair (beta1, beta2), got {short_repr(betas)}")
        for i, b in enumerate(betas):
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= float(b) < 1.0:
                raise InvalidArgumentError(f"betas[{i}] must be in [0, 1), got {short_repr(b)}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _positive(eps, "eps")
        self.weight_decay = _positive(weight_decay, "weight_decay", allow_zero=True)
        self.max_grad_norm = None if max_grad_norm is None else _positive(max_grad_norm, "max_grad_norm")
        if schedule is not None and not callable(schedule):
            raise InvalidArgumentError(f"schedule must be callable t -> lr, got {short_repr(schedule)}")
        self.schedule = schedule
        self.router = router
        self.t = 0
        self._init_state()

    def _init_state(self) -> None:
        be = self.router.backend
        self.backend = be
        params = self.router.parameters()
        # the parameters' layout (one flat buffer on wgpu: the fused update applies)
        self.exp_avg = be.zeros_like_packed(params)
        self.exp_avg_sq = be.zeros_like_packed(params)
        # [t (applied updates), consecutive skipped steps, total skipped steps]
        self.step_count = be.zeros((3,))
        be.tag_memory([*self.exp_avg, *self.exp_avg_sq, self.step_count], "optimizer")  # backend.memory()
        self.last_grad_norm: Any = None
        self.last_skipped: Any = None

    def lr_at(self, t: int) -> float:
        """The learning rate of update number ``t`` (1-based)."""
        return float(self.schedule(t)) if self.schedule is not None else self.lr

    def _follow_backend(self) -> None:
        """If the router moved to another backend, move the state with it (same values)."""
        if self.router.backend is not self.backend:
            state = self.state()
            self._init_state()
            self.load_state(state)

    def step(self, grads: Any, loss: Any = None) -> Any:
        """Apply one update (or skip it: see the class docstring).

        Args:
            grads: a :class:`~energetic_wgpu.router.Gradients` (from ``Router.backward``: the
                device guard decides) or a list [q, k, bias] of arrays with the parameters'
                shapes. Host (numpy) arrays in the list must be finite in the backend's dtype
                (else :class:`InvalidArgumentError` naming the array, e.g. ``grads.bias``, and
                nothing changes); arrays of this backend go through the device guard.
            loss: optional float [1] backend array of the step's loss; a NaN/inf loss skips
                the update too.

        Returns the pre-clip global gradient norm as a float [1] backend array
        (``float(to_numpy(x)[0])`` reads it); ``last_skipped`` is a float [1] backend array,
        1.0 when the update was skipped (no readback)."""
        self._follow_backend()
        be = self.backend
        from_backward = hasattr(grads, "as_list")
        glist = grads.as_list() if from_backward else list(grads)
        params = self.router.parameters()
        if len(glist) != len(params):
            raise ShapeError(f"grads must hold {len(params)} arrays (q, k, bias), got {len(glist)}")
        arrays = []
        for name, g, p in zip(self.NAMES, glist, params):
            label = f"grads.{name}"
            other = getattr(g, "backend", None)
            if other is not None and other is not be and not isinstance(g, np.ndarray):
                raise InvalidArgumentError(
                    f"{label} is an array of another backend ({other.describe()}), not of the optimizer's "
                    f"({be.describe()})"
                )
            if tuple(np.shape(g)) != tuple(p.shape):
                raise ShapeError(f"{label} must have shape {tuple(p.shape)}, got {tuple(np.shape(g))}")
            if from_backward and be.is_array(g):
                arrays.append(g)
            elif be.is_array(g) and not isinstance(g, np.ndarray):
                arrays.append(g)  # a device array: the device guard decides
            else:
                arrays.append(float_array(g, label, tuple(p.shape), be.dtype))
        if loss is not None and not be.is_array(loss):
            raise InvalidArgumentError(
                f"loss must be a float [1] array of the optimizer's backend, got {type(loss).__name__}"
            )
        glist = [g if be.is_array(g) else be.asarray(g) for g in arrays]
        lr = self.lr_at(self.t + 1)
        wdf = 1.0 - lr * self.weight_decay
        ok = 0.0 <= lr <= _F32_MAX and -_F32_MAX <= wdf <= _F32_MAX  # (NaN fails both)
        if not ok and math.isfinite(lr) and lr >= 0:  # near float32 max: decide in float32
            with np.errstate(over="ignore"):
                ok = bool(np.isfinite(np.float32(lr)) and np.isfinite(np.float32(wdf)))
        if not ok:
            raise InvalidArgumentError(
                f"lr of update {self.t + 1} (from the schedule) must be >= 0 and finite in float32 "
                f"(also 1 - lr * weight_decay), got {lr}"
            )
        b1, b2 = self.betas
        norm, skipped = be.adamw_step(
            params, glist, self.exp_avg, self.exp_avg_sq, self.step_count, lr, b1, b2, self.eps,
            self.weight_decay, self.max_grad_norm, loss=loss, return_skipped=True,
        )
        self.t += 1
        self.last_grad_norm = norm
        self.last_skipped = skipped
        return norm

    def skip_counts(self) -> tuple[int, int]:
        """(consecutive, total) steps skipped by the non-finite guard (reads back the device
        counters; an applied update resets the consecutive count to 0)."""
        c = self.backend.to_numpy(self.step_count)
        return int(round(float(c[1]))), int(round(float(c[2])))

    def state(self) -> dict[str, Any]:
        """{"t", "skipped_consecutive", "skipped_total": int, "m": {name: array}, "v": {name:
        array}} as numpy (reads back from a GPU). ``t`` is the device's count of applied updates
        (the bias corrections' t); ``t + skipped_total`` is the number of :meth:`step` calls
        (the schedule's position)."""
        be = self.backend
        c = be.to_numpy(self.step_count)
        return {
            "t": int(round(float(c[0]))),
            "skipped_consecutive": int(round(float(c[1]))),
            "skipped_total": int(round(float(c[2]))),
            "m": {n: be.to_numpy(a) for n, a in zip(self.NAMES, self.exp_avg)},
            "v": {n: be.to_numpy(a) for n, a in zip(self.NAMES, self.exp_avg_sq)},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state` dict (shapes must match the router's parameters; the skip
        counts are optional, 0 when absent)."""
        be = self.backend
        try:
            t = int(state["t"])
            ms, vs = state["m"], state["v"]
            counts = [int(state.get(k, 0)) for k in ("skipped_consecutive", "skipped_total")]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgumentError(f"state must be a dict with 't', 'm' and 'v', got {short_repr(state)}") from exc
        if t < 0:
            raise InvalidArgumentError(f"state['t'] must be >= 0, got {t}")
        if min(counts) < 0 or counts[0] > counts[1]:
            raise InvalidArgumentError(
                f"state's skip counts must satisfy 0 <= skipped_consecutive <= skipped_total, got {counts}"
            )
        new_m, new_v = [], []
        params = self.router.parameters()
        for name, p in zip(self.NAMES, params):
            for key, store, out in (("m", ms, new_m), ("v", vs, new_v)):
                if name not in store:
                    raise InvalidArgumentError(f"state['{key}'] has no entry {name!r}")
                out.append(float_array(store[name], f"state['{key}']['{name}']", tuple(p.shape), be.dtype))
        # pack: the layout depends only on the sizes, so it matches packed parameters (the
        # bias, an [E] array, in the graph's own layout where the backend cuts it into windows)
        g = self.router.graph
        new_m[-1], new_v[-1] = be.edge_input(g, new_m[-1]), be.edge_input(g, new_v[-1])
        self.exp_avg, self.exp_avg_sq = be.pack(new_m), be.pack(new_v)
        self.step_count = be.asarray(np.array([t, *counts], dtype=be.dtype))
        be.tag_memory([*self.exp_avg, *self.exp_avg_sq, self.step_count], "optimizer")
        self.t = t + counts[1]

    def __repr__(self) -> str:
        return (
            f"AdamW(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay}, "
            f"max_grad_norm={self.max_grad_norm}, t={self.t})"
        )
