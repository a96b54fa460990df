"""The declarative kernel table of the wgpu backend.

Each :class:`KernelSpec` names the WGSL files it is built from (concatenated in order), its
entry point, its bindings in ``@binding`` order (``"uniform"``, ``"read"``, ``"read_write"``,
or ``None`` for an unused binding number), its workgroup size (the ``WG`` override constant)
and other override constants. The runtime builds explicit bind group layouts from
``bindings``; the whole table is describable as data (``to_json``) so a dispatch plan can be
replayed elsewhere (e.g. Dawn in a browser).

Portability budget of every kernel (WebGPU default limits, core WGSL): at most 8 storage
bindings, at most 256 invocations per workgroup, at most 16 KiB of workgroup memory, no f32
atomics, no f16, no subgroups.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KernelSpec",
    "KERNELS",
    "kernel",
    "kernel_sources",
    "SHADER_LIBS",
    "BINDING_KINDS",
    "SMALL_DEGREE_MAX",
    "REDUCE_ITEMS",
]

BINDING_KINDS = ("uniform", "read", "read_write")

#: segments / in-degrees up to this are handled thread-per-node; larger ones workgroup-per-node
SMALL_DEGREE_MAX = 256
#: elements per thread in the reduction kernels (reduce.wgsl, metrics.wgsl)
REDUCE_ITEMS = 16

#: WGSL library files (no entry points) a kernel file needs, concatenated in this order between
#: common.wgsl and the file itself. workgroup_reduce.wgsl: LWG, red_a/red_b and tree_sum.
SHADER_LIBS: dict[str, tuple[str, ...]] = {
    f: ("workgroup_reduce.wgsl",)
    for f in (
        "segment_softmax.wgsl",
        "energy_scatter.wgsl",
        "reduce.wgsl",
        "losses.wgsl",
        "adamw.wgsl",
        "scatter_backward.wgsl",
        "softmax_backward.wgsl",
        "logits_backward.wgsl",
    )
}


def kernel_sources(file: str) -> tuple[str, ...]:
    """The ``sources`` of a kernel whose entry point is in ``file``: common.wgsl, the libraries
    ``file`` needs (:data:`SHADER_LIBS`), then ``file`` (always last)."""
    return ("common.wgsl", *SHADER_LIBS.get(file, ()), file)


@dataclass(frozen=True)
class KernelSpec:
    name: str
    sources: tuple[str, ...]
    entry_point: str
    bindings: tuple[str | None, ...]
    workgroup_size: int = 64
    constants: tuple[tuple[str, float | int], ...] = field(default=())

    def __post_init__(self) -> None:
        for b in self.bindings:
            if b is not None and b not in BINDING_KINDS:
                raise ValueError(f"kernel {self.name}: binding kind {b!r} not in {BINDING_KINDS}")
        n_storage = sum(1 for b in self.bindings if b in ("read", "read_write"))
        if n_storage > 8:
            raise ValueError(f"kernel {self.name}: {n_storage} storage bindings > 8 (WebGPU default)")
        if not 1 <= self.workgroup_size <= 256:
            raise ValueError(f"kernel {self.name}: workgroup_size {self.workgroup_size} not in [1, 256]")

    @property
    def storage_bindings(self) -> tuple[int, ...]:
        """Binding numbers of the storage buffers, in order (what ``dispatch`` takes)."""
        return tuple(i for i, b in enumerate(self.bindings) if b in ("read", "read_write"))

    @property
    def uniform_binding(self) -> int | None:
        for i, b in enumerate(self.bindings):
            if b == "uniform":
                return i
        return None

    def override_constants(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"WG": self.workgroup_size}
        out.update(dict(self.constants))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sources": list(self.sources),
            "entry_point": self.entry_point,
            "bindings": list(self.bindings),
            "workgroup_size": self.workgroup_size,
            "constants": self.override_constants(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _k(name: str, file: str, bindings: tuple[str | None, ...], wg: int = 64, entry: str | None = None) -> KernelSpec:
    return KernelSpec(name, kernel_sources(file), entry or name, bindings, wg)


U, R, W = "uniform", "read", "read_write"

KERNELS: dict[str, KernelSpec] = {
    k.name: k
    for k in (
        _k("copy_vec4", "copy.wgsl", (U, R, W), 64),
        _k("add", "elementwise.wgsl", (U, R, R, W), 64),
        _k("edge_logits", "edge_logits.wgsl", (U, R, R, R, R, R, W), 64),
        _k("softmax_small", "segment_softmax.wgsl", (U, R, R, W), 64),
        _k("softmax_small_k4", "segment_softmax.wgsl", (U, R, R, W), 64),
        _k("softmax_large", "segment_softmax.wgsl", (U, R, R, W, R), 256),
        _k("scatter_transpose", "energy_scatter.wgsl", (U, None, None, None, R, R, None, None, None, None, W), 64),
        _k("scatter_small", "energy_scatter.wgsl", (U, R, R, R, R, None, R, W, None, R), 64),
        _k("scatter_large", "energy_scatter.wgsl", (U, R, R, R, R, R, R, W, R), 256),
        _k("edge_flow", "edge_flow.wgsl", (U, R, R, R, R, W), 64),
        _k("metrics_partials", "metrics.wgsl", (U, R, R, R, R, R, W), 256),
        _k("metrics_final", "metrics.wgsl", (U, None, None, None, None, None, W, W), 256),
        _k("sumsq_partials", "reduce.wgsl", (U, R, W), 256),
        _k("sum_final", "reduce.wgsl", (U, R, W), 256),
    )
}


def kernel(name: str) -> KernelSpec:
    try:
        return KERNELS[name]
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; known: {', '.join(sorted(KERNELS))}") from None


def register(spec: KernelSpec) -> KernelSpec:
    """Add a kernel to the table (used by the backward/training modules)."""
    KERNELS[spec.name] = spec
    return spec
