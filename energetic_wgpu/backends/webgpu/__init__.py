"""The wgpu backend: WGSL compute shaders run through wgpu-py (Vulkan, Metal, DX12, OpenGL)."""

from __future__ import annotations

from .backend import WgpuBackend
from .runtime import DeviceArray, list_adapters

__all__ = ["WgpuBackend", "DeviceArray", "list_adapters"]
