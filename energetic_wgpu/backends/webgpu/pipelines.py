"""Shader modules, bind group layouts and compute pipelines, each built once and cached.

A kernel's pipeline is keyed by its name, sources, entry point, bindings and override
constants; a compile or build failure raises :class:`ShaderCompileError` with wgpu's message.
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import ShaderCompileError
from ...wgsl import shader_source
from .device import require_wgpu
from .kernels import KernelSpec

__all__ = ["PipelineCache"]


class PipelineCache:
    """The compiled objects of one device. ``emit_built(kind)`` is told of each creation."""

    def __init__(self, device: Any, emit_built: Callable[[str], None]) -> None:
        self.device = device
        self.emit_built = emit_built
        self._modules: dict[tuple[str, ...], Any] = {}
        self._pipelines: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._layouts: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def shader_module(self, sources: tuple[str, ...], code: str | None = None) -> Any:
        """The shader module of the concatenated ``sources`` (cached). ``code`` overrides the
        text (tests feed bad WGSL this way)."""
        key = sources if code is None else sources + ("\0code", code)
        mod = self._modules.get(key)
        if mod is not None:
            return mod
        text = code if code is not None else "\n".join(shader_source(s) for s in sources)
        name = "+".join(sources)
        try:
            mod = self.device.create_shader_module(label=name, code=text)
        except Exception as exc:
            raise ShaderCompileError(f"shader {name} failed to compile:\n{exc}") from exc
        self.emit_built("shader_module")
        self._modules[key] = mod
        return mod

    def _layout(self, spec: KernelSpec) -> tuple[Any, Any]:
        key = spec.bindings
        hit = self._layouts.get(key)
        if hit is not None:
            return hit
        w = require_wgpu()
        kinds = {
            "uniform": w.BufferBindingType.uniform,
            "read": w.BufferBindingType.read_only_storage,
            "read_write": w.BufferBindingType.storage,
        }
        entries = [
            {"binding": i, "visibility": w.ShaderStage.COMPUTE, "buffer": {"type": kinds[b]}}
            for i, b in enumerate(spec.bindings)
            if b is not None
        ]
        bgl = self.device.create_bind_group_layout(entries=entries)
        pl = self.device.create_pipeline_layout(bind_group_layouts=[bgl])
        self._layouts[key] = (bgl, pl)
        return bgl, pl

    def pipeline(self, spec: KernelSpec, constants: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """(pipeline, bind group layout) of ``spec`` with override ``constants`` (cached)."""
        consts = spec.override_constants()
        if constants:
            consts.update(constants)
        key = (spec.name, spec.sources, spec.entry_point, spec.bindings, tuple(sorted(consts.items())))
        hit = self._pipelines.get(key)
        if hit is not None:
            return hit
        module = self.shader_module(spec.sources)
        bgl, pl = self._layout(spec)
        try:
            pipe = self.device.create_compute_pipeline(
                label=spec.name,
                layout=pl,
                compute={"module": module, "entry_point": spec.entry_point, "constants": consts},
            )
        except Exception as exc:
            raise ShaderCompileError(
                f"pipeline {spec.name} (entry point {spec.entry_point} of {'+'.join(spec.sources)}) "
                f"failed to build:\n{exc}"
            ) from exc
        self.emit_built("pipeline")
        self._pipelines[key] = (pipe, bgl)
        return pipe, bgl
