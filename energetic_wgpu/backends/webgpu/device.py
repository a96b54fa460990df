"""The wgpu device of one runtime: the wgpu import, adapters, limits and device creation.

``open_device`` picks an adapter (None: wgpu's default; an int index; a substring of the
adapter's name, description or backend type), requests a device with WebGPU's default limits
(portable) or the adapter's own, and the requested optional features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...environment import ensure_xdg_runtime_dir
from ...errors import BackendUnavailable, InvalidArgumentError

__all__ = ["DEFAULT_LIMITS", "Device", "list_adapters", "open_device", "require_wgpu", "MAX_WORKGROUPS_PER_DIM"]

try:  # imported lazily so that a missing wgpu gives BackendUnavailable with the reason
    import wgpu  # type: ignore

    _WGPU_IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the environment
    wgpu = None  # type: ignore
    _WGPU_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

#: WebGPU's default limits (the portable baseline requested with limits="default").
DEFAULT_LIMITS: dict[str, int] = {
    "max-texture-dimension-1d": 8192,
    "max-texture-dimension-2d": 8192,
    "max-texture-dimension-3d": 2048,
    "max-texture-array-layers": 256,
    "max-bind-groups": 4,
    "max-bind-groups-plus-vertex-buffers": 24,
    "max-bindings-per-bind-group": 1000,
    "max-dynamic-uniform-buffers-per-pipeline-layout": 8,
    "max-dynamic-storage-buffers-per-pipeline-layout": 4,
    "max-sampled-textures-per-shader-stage": 16,
    "max-samplers-per-shader-stage": 16,
    "max-storage-buffers-per-shader-stage": 8,
    "max-storage-textures-per-shader-stage": 4,
    "max-uniform-buffers-per-shader-stage": 12,
    "max-uniform-buffer-binding-size": 65536,
    "max-storage-buffer-binding-size": 134217728,
    "min-uniform-buffer-offset-alignment": 256,
    "min-storage-buffer-offset-alignment": 256,
    "max-vertex-buffers": 8,
    "max-buffer-size": 268435456,
    "max-vertex-attributes": 16,
    "max-vertex-buffer-array-stride": 2048,
    "max-inter-stage-shader-variables": 16,
    "max-color-attachments": 8,
    "max-color-attachment-bytes-per-sample": 32,
    "max-compute-workgroup-storage-size": 16384,
    "max-compute-invocations-per-workgroup": 256,
    "max-compute-workgroup-size-x": 256,
    "max-compute-workgroup-size-y": 256,
    "max-compute-workgroup-size-z": 64,
    "max-compute-workgroups-per-dimension": 65535,
}

#: WebGPU's maxComputeWorkgroupsPerDimension default (dispatches are folded to stay under it)
MAX_WORKGROUPS_PER_DIM = 65535

def _snake(key: str) -> str:
    return key.replace("-", "_")


def require_wgpu() -> Any:
    if wgpu is None:
        raise BackendUnavailable(f"wgpu cannot be imported: {_WGPU_IMPORT_ERROR}")
    return wgpu


def _enumerate() -> list[Any]:
    w = require_wgpu()
    ensure_xdg_runtime_dir()  # before the drivers load: Mesa complains without it
    try:
        return list(w.gpu.enumerate_adapters_sync())
    except Exception as exc:
        raise BackendUnavailable(f"wgpu could not enumerate adapters: {type(exc).__name__}: {exc}") from exc


def _adapter_dict(index: int, adapter: Any) -> dict[str, Any]:
    info = adapter.info
    return {
        "index": index,
        "name": info.get("device", ""),
        "description": info.get("description", ""),
        "backend_type": info.get("backend_type", ""),
        "adapter_type": info.get("adapter_type", ""),
        "vendor": info.get("vendor", ""),
        "limits": {_snake(k): v for k, v in dict(adapter.limits).items()},
        "features": sorted(str(f) for f in adapter.features),
    }


def list_adapters() -> list[dict[str, Any]]:
    """Every adapter wgpu offers here: dicts with index, name, description, backend_type,
    adapter_type, limits (snake_case keys) and features (sorted).

    Raises:
        BackendUnavailable: wgpu cannot be imported or cannot enumerate adapters.
    """
    return [_adapter_dict(i, a) for i, a in enumerate(_enumerate())]


def _describe_adapters(adapters: list[Any]) -> str:
    if not adapters:
        return "no adapters found"
    return "; ".join(
        f"[{i}] {a.info.get('device', '?')} ({a.info.get('backend_type', '?')}, {a.info.get('description', '')})"
        for i, a in enumerate(adapters)
    )


def _select_adapter(selector: Any) -> Any:
    w = require_wgpu()
    ensure_xdg_runtime_dir()  # before the drivers load: Mesa complains without it
    if selector is None:
        try:
            adapter = w.gpu.request_adapter_sync(power_preference="high-performance")
        except Exception as exc:
            raise BackendUnavailable(f"wgpu found no adapter: {type(exc).__name__}: {exc}") from exc
        if adapter is None:
            raise BackendUnavailable("wgpu found no adapter")
        return adapter
    adapters = _enumerate()
    if isinstance(selector, bool) or not isinstance(selector, (int, np.integer, str)):
        raise InvalidArgumentError(
            f"adapter must be None, an int index or a str matched against the adapter's name, "
            f"description or backend type, got {selector!r}"
        )
    if isinstance(selector, str) and selector.strip().isdigit():
        selector = int(selector.strip())  # "1" from a command line or config means index 1, not a substring
    if isinstance(selector, (int, np.integer)):
        if not 0 <= int(selector) < len(adapters):
            raise BackendUnavailable(
                f"adapter index {selector} out of range; adapters found: {_describe_adapters(adapters)}"
            )
        return adapters[int(selector)]
    needle = selector.strip().lower()
    for a in adapters:
        info = a.info
        hay = [str(info.get(k, "")).lower() for k in ("device", "description", "backend_type", "vendor")]
        if any(needle and needle in h for h in hay):
            return a
    raise BackendUnavailable(f"no adapter matches {selector!r}; adapters found: {_describe_adapters(adapters)}")


@dataclass
class Device:
    """An open wgpu device: ``adapter``, ``device``, ``queue``, ``adapter_info``, ``limits``
    (snake_case keys, ints), ``limits_mode`` ("default" or "adapter") and ``features``."""

    adapter: Any
    device: Any
    queue: Any
    adapter_info: dict[str, Any]
    limits: dict[str, int]
    limits_mode: str
    features: frozenset[str]

    def describe(self) -> str:
        info = self.adapter_info
        return f"wgpu: {info.get('device', '?')} via {info.get('backend_type', '?')}"


def open_device(adapter: Any = None, limits: str = "default", features: Sequence[str] = (),
                check_limits: Any = None) -> Device:
    """Select an adapter and create a device on it. ``check_limits(limits)``, when given, sees
    the limits that will be requested (snake_case keys) before the device is created (it
    raises to refuse them).

    Raises:
        InvalidArgumentError: a bad ``limits``, ``features`` or ``adapter`` selector.
        BackendUnavailable: wgpu is missing, no adapter matches, the adapter lacks a requested
            feature, or the device cannot be created.
    """
    require_wgpu()
    if limits not in ("default", "adapter"):
        raise InvalidArgumentError(f"limits must be 'default' or 'adapter', got {limits!r}")
    if isinstance(features, str) or not all(isinstance(f, str) for f in features):
        raise InvalidArgumentError(f"features must be a sequence of feature names (str), got {features!r}")
    chosen = _select_adapter(adapter)
    info = dict(chosen.info)
    adapter_features = {str(f) for f in chosen.features}
    missing = [f for f in features if f not in adapter_features]
    if missing:
        raise BackendUnavailable(
            f"adapter {info.get('device', '?')} ({info.get('backend_type', '?')}) "
            f"lacks the requested features {missing}"
        )
    adapter_limits = dict(chosen.limits)
    if limits == "default":
        required = {k: v for k, v in DEFAULT_LIMITS.items() if k in adapter_limits}
        # never ask for more than the adapter has (a "max" limit) or less alignment freedom
        for k, v in list(required.items()):
            if k.startswith("max") and adapter_limits[k] < v:
                required[k] = adapter_limits[k]
            if k.startswith("min") and adapter_limits[k] > v:
                required[k] = adapter_limits[k]
    else:
        required = None
    if check_limits is not None:
        check_limits({_snake(k): int(v) for k, v in (adapter_limits if required is None else required).items()})
    try:
        device = chosen.request_device_sync(required_limits=required, required_features=list(dict.fromkeys(features)))
    except Exception as exc:
        raise BackendUnavailable(
            f"could not create a device on {info.get('device', '?')}: {type(exc).__name__}: {exc}"
        ) from exc
    return Device(
        adapter=chosen,
        device=device,
        queue=device.queue,
        adapter_info=info,
        limits={_snake(k): int(v) for k, v in dict(device.limits).items()},
        limits_mode=limits,
        features=frozenset(str(f) for f in device.features),
    )
