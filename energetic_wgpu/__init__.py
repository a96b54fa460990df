"""energetic_wgpu: the energetic router as WGSL compute shaders (wgpu) and a NumPy reference.

Quick start::

    import energetic_wgpu as ew
    graph = ew.build_lattice(ew.GraphConfig(layers=10, nodes_per_layer=1024))
    router = ew.Router(graph, ew.RouterParams.init(graph, dim=16, top_k=4))
    out = router.forward(energies)           # energies: float [N] or [B, N]
    print(ew.to_numpy(out.next_energies), out.metrics)
"""

from __future__ import annotations

from . import losses
from .backends import (
    Backend,
    available_backends,
    backend_status,
    explain_auto,
    get_backend,
    list_adapters,
    to_numpy,
)
from .errors import (
    BackendUnavailable,
    CheckpointError,
    ConfigError,
    DeviceError,
    DeviceLimitError,
    EnergeticError,
    InvalidArgumentError,
    RunLockedError,
    ShaderCompileError,
    ShapeError,
    TrainingError,
)
from .graph import Graph, GraphConfig, build_lattice, build_lattice_3d
from .optim import AdamW, ConstantLR, CosineLR, StepLR, WarmupLR, make_schedule
from .router import Gradients, Router, RouterOutput, RouterParams

__version__ = "0.1.0"

__all__ = [
    "AdamW",
    "Backend",
    "BackendUnavailable",
    "CheckpointError",
    "ConfigError",
    "ConstantLR",
    "CosineLR",
    "DeviceError",
    "DeviceLimitError",
    "EnergeticError",
    "Gradients",
    "Graph",
    "GraphConfig",
    "InvalidArgumentError",
    "Router",
    "RouterOutput",
    "RouterParams",
    "RunLockedError",
    "ShaderCompileError",
    "ShapeError",
    "StepLR",
    "TrainingError",
    "WarmupLR",
    "available_backends",
    "backend_status",
    "build_lattice",
    "build_lattice_3d",
    "explain_auto",
    "get_backend",
    "list_adapters",
    "losses",
    "make_schedule",
    "to_numpy",
    "__version__",
]
