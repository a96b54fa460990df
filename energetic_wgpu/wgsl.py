"""WGSL shader sources, loaded from files and cached.

The shaders live in the repository's top-level ``shaders/`` folder. An installed package
carries them as ``energetic_wgpu.shaders`` (pyproject maps the folder there); a source
checkout reads ``<repo>/shaders/`` next to the package.
"""

from __future__ import annotations

import functools
import importlib.util
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["shader_source", "shader_names", "shader_dir"]


@functools.lru_cache(maxsize=1)
def _root() -> Any:
    """A Traversable/Path folder holding the ``*.wgsl`` files.

    Looked up in order: the package resource ``energetic_wgpu.shaders`` (a namespace package
    in an installed wheel — ``importlib.resources`` cannot open those before Python 3.12, so
    its search locations are asked directly), the ``shaders`` folder inside the installed
    package, and the source checkout's top-level ``shaders/``.
    """
    candidates: list[Any] = []
    try:
        candidates.append(resources.files("energetic_wgpu.shaders"))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError, ValueError):
        pass
    try:
        spec = importlib.util.find_spec("energetic_wgpu.shaders")
        if spec is not None and spec.submodule_search_locations:
            candidates.extend(Path(p) for p in spec.submodule_search_locations)
    except (ModuleNotFoundError, ValueError):
        pass
    here = Path(__file__).resolve().parent
    candidates += [here / "shaders", here.parent / "shaders"]
    for root in candidates:
        try:
            if any(p.name.endswith(".wgsl") for p in root.iterdir()):
                return root
        except (FileNotFoundError, NotADirectoryError, OSError):
            continue
    raise FileNotFoundError(
        "energetic_wgpu shaders not found: looked in the package resource 'energetic_wgpu.shaders', "
        f"{here / 'shaders'} and {here.parent / 'shaders'}"
    )


def shader_dir() -> str:
    """Where the shaders are read from (for messages)."""
    return str(_root())


@functools.lru_cache(maxsize=1)
def shader_names() -> tuple[str, ...]:
    """Sorted names of the available ``.wgsl`` files (with the extension)."""
    return tuple(sorted(p.name for p in _root().iterdir() if p.name.endswith(".wgsl")))


@functools.lru_cache(maxsize=None)
def shader_source(name: str) -> str:
    """The text of shader ``name`` (e.g. ``"segment_softmax.wgsl"``; the extension is optional).

    Raises:
        KeyError: no such shader; the message lists the available names.
    """
    if not isinstance(name, str):
        raise TypeError(f"shader name must be a str, got {type(name).__name__}")
    fname = name if name.endswith(".wgsl") else name + ".wgsl"
    if fname not in shader_names():
        raise KeyError(f"unknown shader {name!r}; available: {', '.join(shader_names())}")
    return (_root() / fname).read_text(encoding="utf-8")
