"""What a resumed run keeps from its checkpoint and what it takes from the new config.

* ``graph.*`` and ``router.dim`` cannot change: the checkpoint's parameters belong to that
  graph and width (:func:`check_resumable` refuses, naming the key).
* Every other key (``router.tau``, ``alpha``, ``top_k``, ``steps``, ``retain_sinks``,
  ``optimizer.*``, ``train.*``, ``backend.*``) takes the new config's value;
  :func:`config_changes` lists them so that each is reported once as
  ``router.tau: 1.0 (checkpoint) -> 0.5``.
* The learning-rate schedule resolved when the run started (e.g. a cosine over its 200
  steps) is stored in the checkpoint and kept, so ``--steps 300`` continues the same
  curve instead of stretching it; a key of ``optimizer.schedule`` (or ``optimizer.lr``)
  that the new config changes replaces the stored one (:func:`resumed_schedule`).
"""

from __future__ import annotations

from typing import Any, Mapping

from .config import Config, from_dict
from .errors import ConfigError
from .optim import Schedule, make_schedule
from .shortrepr import short_repr

__all__ = [
    "SCHEDULE_KEYS",
    "resolve_schedule",
    "schedule_from_spec",
    "config_changes",
    "check_resumable",
    "describe_change",
    "resumed_schedule",
]

#: the keys of a resolved schedule (a flat JSON object stored under the checkpoint's "optimizer")
SCHEDULE_KEYS = ("name", "lr", "total_steps", "min_lr", "step_size", "gamma", "warmup_steps")
#: keys whose change the run's bookkeeping makes (never reported)
_QUIET = ("train.out_dir",)


def _fixed(key: str) -> bool:
    return key.startswith("graph.") or key == "router.dim"


def resolve_schedule(config: Config) -> dict[str, Any]:
    """The schedule of ``config`` with its total resolved (``total_steps`` null: ``train.steps``)."""
    s = config.optimizer.schedule
    return {
        "name": s.name,
        "lr": config.optimizer.lr,
        "total_steps": s.total_steps or config.train.steps,
        "min_lr": s.min_lr,
        "step_size": s.step_size,
        "gamma": s.gamma,
        "warmup_steps": s.warmup_steps,
    }


def schedule_from_spec(spec: Mapping[str, Any]) -> Schedule:
    """The :class:`~energetic_wgpu.optim.Schedule` of a :func:`resolve_schedule` dict."""
    return make_schedule(
        spec["name"], spec["lr"], total_steps=spec["total_steps"], step_size=spec["step_size"],
        gamma=spec["gamma"], min_lr=spec["min_lr"], warmup_steps=spec["warmup_steps"],
    )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def config_changes(saved: Mapping[str, Any] | None, config: Config) -> list[tuple[str, Any, Any]]:
    """``[(key path, checkpoint value, new value)]`` for every key that differs between the
    checkpoint's config dict ``saved`` (None: nothing known, no changes) and ``config``."""
    if not isinstance(saved, Mapping):
        return []
    try:
        old = _flatten(from_dict(saved).to_dict())  # fills keys an older version did not write
    except ConfigError:
        old = _flatten(saved)
    new = _flatten(config.to_dict())
    return [(k, old.get(k), v) for k, v in new.items() if k not in _QUIET and old.get(k) != v]


def check_resumable(changes: list[tuple[str, Any, Any]]) -> None:
    """Raise ConfigError for the first change of a key that a resumed run cannot change."""
    for key, old, new in changes:
        if _fixed(key):
            raise ConfigError(
                f"{key} cannot change when resuming (checkpoint: {_fmt(old)}, requested: {_fmt(new)}): "
                "the checkpoint's parameters belong to its graph and router.dim; start a new run "
                "(another --out) to change it"
            )


def _fmt(value: Any) -> str:
    """A value as it would be written in the YAML config (null, true, 0.5, cosine)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else short_repr(value)


def describe_change(key: str, old: Any, new: Any) -> str:
    """``"router.tau: 1.0 (checkpoint) -> 0.5"``."""
    return f"{key}: {_fmt(old)} (checkpoint) -> {_fmt(new)}"


def resumed_schedule(
    stored: Any, changes: list[tuple[str, Any, Any]], config: Config
) -> dict[str, Any]:
    """The schedule a resumed run follows: the checkpoint's ``stored`` one (a
    :func:`resolve_schedule` dict; anything else: resolve from ``config``), except the keys
    the new config changes (``optimizer.schedule.<key>``, ``optimizer.lr``)."""
    fresh = resolve_schedule(config)
    if not isinstance(stored, Mapping):
        return fresh
    changed = {key for key, _, _ in changes}
    spec = {k: stored.get(k, fresh[k]) for k in SCHEDULE_KEYS}
    for k in SCHEDULE_KEYS:
        if (f"optimizer.schedule.{k}" if k != "lr" else "optimizer.lr") in changed:
            spec[k] = fresh[k]
    return spec
