"""Backend registry: lazy imports, remembered failure reasons, an environment default.

``get_backend("auto")`` honours ``ENERGETIC_BACKEND``; otherwise it uses wgpu on a hardware
adapter when there is one and the NumPy backend when every adapter is a CPU/software one
(``backends/auto.py``), saying which in one log line; it falls back to NumPy with one
warning when wgpu fails. An explicitly requested backend that cannot start raises
:class:`BackendUnavailable` with the reason.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InvalidArgumentError
from .auto import AutoChoice, choose
from .base import METRIC_NAMES, Backend

__all__ = [
    "Backend",
    "METRIC_NAMES",
    "available_backends",
    "backend_status",
    "explain_auto",
    "get_backend",
    "list_adapters",
    "to_numpy",
    "ENV_VAR",
]

#: environment variable naming the default backend ("numpy", "wgpu", "auto")
ENV_VAR = "ENERGETIC_BACKEND"

# name -> (module, class name); order = preference in auto mode
_REGISTRY: dict[str, tuple[str, str]] = {
    "wgpu": ("energetic_wgpu.backends.webgpu", "WgpuBackend"),
    "numpy": ("energetic_wgpu.backends.numpy_backend", "NumpyBackend"),
}

log = logging.getLogger("energetic_wgpu")

_lock = threading.Lock()
_instances: dict[tuple[str, tuple[tuple[str, Any], ...]], Backend] = {}
_failures: dict[str, str] = {}
_warned_fallback = False
_auto_choice: AutoChoice | None = None  # auto mode's decision, made once per process


def _backend_class(name: str) -> type[Backend]:
    module_name, cls_name = _REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or a broken native library
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {type(exc).__name__}: {exc}") from exc
    return getattr(module, cls_name)


def _freeze(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = []
    for k, v in sorted(options.items()):
        if isinstance(v, (list, dict, set)):
            v = repr(v)
        elif isinstance(v, np.dtype) or isinstance(v, type):
            v = str(np.dtype(v))
        items.append((k, v))
    return tuple(items)


def _create(name: str, options: dict[str, Any]) -> Backend:
    key = (name, _freeze(options))
    with _lock:
        if key in _instances:
            return _instances[key]
    try:
        backend = _backend_class(name)(**options)
    except BackendUnavailable as exc:
        _failures[name] = str(exc)
        raise
    except (TypeError, ValueError):
        raise  # bad options: the caller's mistake, not an unavailable backend
    except Exception as exc:
        reason = f"backend {name!r} failed to start: {type(exc).__name__}: {exc}"
        _failures[name] = reason
        raise BackendUnavailable(reason) from exc
    with _lock:
        _instances.setdefault(key, backend)
        _failures.pop(name, None)
        return _instances[key]


def get_backend(name: str = "auto", **options: Any) -> Backend:
    """Return a backend object (cached per name and options).

    Args:
        name: "numpy", "wgpu" or "auto". "auto" uses ``$ENERGETIC_BACKEND`` when set; else
            wgpu on a hardware adapter when there is one, and numpy when every adapter is a
            CPU/software one (logged once at INFO; :func:`explain_auto` says why) or when
            wgpu fails (one ``RuntimeWarning`` with the reason). Passing ``adapter=`` with
            "auto" asks for wgpu on that adapter (numpy, with the warning, if it fails).
        **options: passed to the backend's constructor, e.g. ``dtype="float64"`` for numpy,
            ``adapter="opengl"`` for wgpu.

    Raises:
        BackendUnavailable: an explicitly requested backend cannot start (the reason is in
            the message).
        InvalidArgumentError: unknown backend name.

    To get several independent instances of one backend, construct its class directly.
    """
    if isinstance(name, Backend):
        return name
    if not isinstance(name, str):
        raise InvalidArgumentError(f"backend name must be a str, got {type(name).__name__}")
    name = name.strip().lower()
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env != "auto":
            if env not in _REGISTRY:
                raise InvalidArgumentError(
                    f"${ENV_VAR}={env!r} is not a backend; choose one of {sorted(_REGISTRY)} or 'auto'"
                )
            return _create(env, options)
        if options.get("adapter") is not None:
            return _wgpu_or_fallback(options)
        choice = _choose_auto()
        if choice.name == "wgpu":
            return _wgpu_or_fallback({**options, "adapter": choice.adapter})
        if choice.error:
            _warn_fallback(choice.reason)
        return _create("numpy", _numpy_options(options))
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"unknown backend {name!r}; choose one of {sorted(_REGISTRY)} or 'auto'")
    return _create(name, options)


def _choose_auto() -> AutoChoice:
    global _auto_choice
    if _auto_choice is None:
        _auto_choice = choose(list_adapters)
        log.info("energetic_wgpu: backend auto -> %s", _auto_choice.reason)
    return _auto_choice


def _wgpu_or_fallback(options: dict[str, Any]) -> Backend:
    try:
        return _create("wgpu", options)
    except BackendUnavailable as exc:
        _warn_fallback(f"numpy, since wgpu failed: {exc}")
        return _create("numpy", _numpy_options(options))


def _warn_fallback(reason: str) -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(f"energetic_wgpu: backend auto -> {reason}", RuntimeWarning, stacklevel=4)


def explain_auto() -> str:
    """One line saying which backend ``get_backend("auto")`` picks here and why (lists the
    wgpu adapters once per process; does not start a backend)."""
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env and env != "auto":
        return f"{env}, since ${ENV_VAR}={env}"
    if "wgpu" in _failures and _auto_choice is not None and _auto_choice.name == "wgpu":
        return f"numpy, since wgpu failed: {_failures['wgpu']}"
    return _choose_auto().reason


def list_adapters() -> list[dict[str, Any]]:
    """Every wgpu adapter here: dicts with index, name, description, backend_type,
    adapter_type ("DiscreteGPU", "IntegratedGPU", "CPU", ...), vendor, limits and features.

    Raises:
        BackendUnavailable: wgpu cannot be imported or cannot enumerate adapters.
    """
    try:
        from .webgpu import list_adapters as _list
    except Exception as exc:  # ImportError, or a broken native library
        raise BackendUnavailable(f"wgpu cannot be imported: {type(exc).__name__}: {exc}") from exc
    return _list()


def _numpy_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options that make sense for the NumPy backend of an auto request (drop GPU ones)."""
    return {k: v for k, v in options.items() if k in ("dtype",)}


def backend_status() -> dict[str, tuple[bool, str]]:
    """name -> (works, reason or description) for every registered backend (starts each one)."""
    out: dict[str, tuple[bool, str]] = {}
    for name in _REGISTRY:
        try:
            out[name] = (True, get_backend(name).describe())
        except BackendUnavailable as exc:
            out[name] = (False, str(exc))
    return out


def available_backends() -> list[str]:
    """Names of the backends that can start here; always includes "numpy"."""
    return [name for name, (ok, _) in backend_status().items() if ok]


def to_numpy(x: Any) -> np.ndarray:
    """Convert a numpy array, a Python scalar/list or any backend's array to a numpy array."""
    if isinstance(x, np.ndarray):
        return x
    backend = getattr(x, "backend", None)
    if isinstance(backend, Backend):
        return backend.to_numpy(x)
    return np.asarray(x)
