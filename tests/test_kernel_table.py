"""The kernel table (energetic_wgpu/backends/webgpu/kernels.py) against the WGSL it names.

Every row's storage bindings exist in its file with the access mode the layout uses, its
uniform struct's fields and types are the WGSL struct's, in order, and the table is static
data (no registration at import). These tests need no GPU.
"""

from __future__ import annotations

import re

import pytest

from energetic_wgpu.backends.webgpu import kernels as kmod
from energetic_wgpu.backends.webgpu.kernels import KERNELS, kernel_sources, wgsl_bindings
from energetic_wgpu.wgsl import shader_names, shader_source

_STRUCT = re.compile(r"struct\s+(\w+)\s*\{([^}]*)\}", re.S)
_FIELD = re.compile(r"(\w+)\s*:\s*([\w<>]+)\s*,?")


def _wgsl_structs(sources: tuple[str, ...]) -> dict[str, tuple[tuple[str, str], ...]]:
    text = re.sub(r"//[^\n]*", "", "\n".join(shader_source(s) for s in sources))
    return {m.group(1): tuple(_FIELD.findall(m.group(2))) for m in _STRUCT.finditer(text)}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_bindings_match_the_wgsl(name):
    spec = KERNELS[name]
    text = "\n".join(shader_source(s) for s in spec.sources)
    lines = {m.group(3): (int(m.group(1)), m.group(2))
             for m in re.finditer(r"@binding\((\d+)\)\s*var<([^>]*)>\s*(\w+)", text)}
    assert spec.names and len(spec.names) == len(set(spec.names)) <= 8
    for n in spec.names:
        assert n in lines, f"{name}: no @binding line for {n}"
        number, space = lines[n]
        assert spec.slots[n][0] == number
        assert spec.bindings[number] == ("read_write" if "read_write" in space else "read"), (name, n)
    assert spec.bindings.count("uniform") == 1
    assert [b for b in spec.bindings if b is not None].__len__() == len(spec.names) + 1
    assert re.search(rf"@compute\s+@workgroup_size\(WG\)\s*\n\s*fn {spec.entry_point}\(", text), name


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_uniform_struct_matches_the_wgsl(name):
    spec = KERNELS[name]
    structs = _wgsl_structs(spec.sources)
    assert spec.uniform.name in structs, f"{name}: struct {spec.uniform.name} not in {spec.file}"
    assert structs[spec.uniform.name] == spec.uniform.fields, name
    uniform_var = [n for n, (_, kind, typ) in wgsl_bindings(spec.sources).items()
                   if kind == "uniform" and typ == spec.uniform.name]
    assert len(uniform_var) == 1 and spec.slots[uniform_var[0]] == (spec.uniform_binding, "uniform")


def test_every_entry_point_has_a_row():
    declared = set()
    for f in shader_names():
        declared |= {(f, e) for e in re.findall(r"@compute\s+@workgroup_size\(WG\)\s*\n\s*fn (\w+)\(",
                                                   shader_source(f))}
    rows = {(k.file, k.entry_point) for k in KERNELS.values()}
    assert declared == rows


def test_the_table_is_static_data():
    """No registration API: importing the ops modules leaves the table as declared."""
    before = dict(KERNELS)
    import energetic_wgpu.backends.webgpu.ops_backward  # noqa: F401
    import energetic_wgpu.backends.webgpu.ops_train  # noqa: F401

    assert KERNELS == before and not hasattr(kmod, "register")
    assert all(k.sources == kernel_sources(k.file) for k in KERNELS.values())


def test_a_row_naming_a_missing_binding_is_refused():
    bad = kmod.KernelSpec("add", "elementwise.wgsl", kmod.ADD, ("a", "b", "nope"))
    with pytest.raises(kmod.InvalidArgumentError, match="elementwise.wgsl has no storage binding named 'nope'"):
        bad.bindings
    wrong_struct = kmod.KernelSpec("add", "elementwise.wgsl", kmod.COPY, ("a", "b", "out"))
    with pytest.raises(kmod.InvalidArgumentError, match="exactly one var<uniform> of type CopyParams"):
        wrong_struct.bindings
