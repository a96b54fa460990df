"""The one place that imports torch for :mod:`energetic_wgpu.distributed` (lazily: the core
never imports torch)."""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import BackendUnavailable

__all__ = ["EXTRA_HINT", "torch_available", "require_torch"]

#: how to get torch.distributed
EXTRA_HINT = "pip install 'energetic_wgpu[distributed]' (installs torch; the CPU build is enough)"


def torch_available() -> bool:
    """True when ``import torch`` would find a module (does not import it)."""
    return importlib.util.find_spec("torch") is not None


def require_torch(what: str = "data-parallel training") -> Any:
    """``torch`` (with ``torch.distributed`` usable), or :class:`BackendUnavailable` naming the
    extra to install."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        raise BackendUnavailable(
            f"{what} needs torch.distributed, which is not installed ({exc}); {EXTRA_HINT}"
        ) from None
    if not dist.is_available():
        raise BackendUnavailable(f"{what} needs torch.distributed, but this torch build has no distributed support")
    return torch
