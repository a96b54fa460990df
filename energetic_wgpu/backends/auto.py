"""How ``get_backend("auto")`` chooses: a hardware wgpu adapter when there is one, else NumPy.

On a machine whose only wgpu adapters are CPU/software rasterizers (Mesa's lavapipe and
llvmpipe, SwiftShader, Microsoft's Basic Render Driver) the wgpu backend runs several times
slower than the vectorized NumPy backend, so auto mode uses NumPy there. A wgpu adapter
counts as software when wgpu reports its ``adapter_type`` as "CPU" or its name names a
known software rasterizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["AutoChoice", "choose", "is_software_adapter"]

_SOFTWARE_NAMES = ("llvmpipe", "lavapipe", "swiftshader", "softpipe", "microsoft basic render")
# preference among hardware adapters (lower first); other types (virtual, unknown) come last
_RANK = {"discretegpu": 0, "integratedgpu": 1}


@dataclass(frozen=True)
class AutoChoice:
    """The outcome of auto mode.

    Attributes:
        name: "wgpu" or "numpy".
        adapter: the wgpu adapter index (``list_adapters()[i]["index"]``) for "wgpu", else None.
        reason: one line saying why.
        error: True when NumPy was chosen because wgpu failed (not because it is slower).
    """

    name: str
    adapter: int | None
    reason: str
    error: bool = False


def is_software_adapter(adapter: dict[str, Any]) -> bool:
    """True for an adapter dict of ``list_adapters()`` that is a CPU/software rasterizer."""
    if str(adapter.get("adapter_type", "")).strip().lower() == "cpu":
        return True
    hay = " ".join(str(adapter.get(k, "")) for k in ("name", "description", "vendor")).lower()
    return any(s in hay for s in _SOFTWARE_NAMES)


def _label(a: dict[str, Any]) -> str:
    return f"[{a.get('index')}] {a.get('name') or '?'} ({a.get('backend_type') or '?'}, {a.get('adapter_type') or '?'})"


def choose(list_adapters: Callable[[], list[dict[str, Any]]]) -> AutoChoice:
    """Pick the backend of auto mode from the adapters ``list_adapters()`` reports."""
    try:
        adapters = list_adapters()
    except Exception as exc:  # wgpu missing or broken: NumPy, with a warning
        return AutoChoice("numpy", None, f"numpy, since wgpu is unavailable: {exc}", error=True)
    hardware = [a for a in adapters if not is_software_adapter(a)]
    if hardware:
        best = min(hardware, key=lambda a: (_RANK.get(str(a.get("adapter_type", "")).lower(), 2), a["index"]))
        return AutoChoice("wgpu", int(best["index"]), f"wgpu on the hardware adapter {_label(best)}")
    if not adapters:
        return AutoChoice("numpy", None, "numpy, since wgpu found no adapter")
    names = "; ".join(_label(a) for a in adapters)
    return AutoChoice(
        "numpy",
        None,
        f"numpy, since every wgpu adapter is a CPU/software one ({names}) and the NumPy backend is faster "
        "there (ENERGETIC_BACKEND=wgpu forces wgpu)",
    )
