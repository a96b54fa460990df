"""WGSL shader sources, read from files and cached.

The shaders live in the repository's top-level ``shaders/`` folder. A built wheel carries
them as the data folder ``energetic_wgpu/_shaders/`` (pyproject maps the folder there); a
source checkout (or an editable install) reads ``<repo>/shaders/`` beside the package.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["shader_source", "shader_names", "shader_dir"]


@functools.lru_cache(maxsize=1)
def _root() -> Any:
    """The folder holding the ``*.wgsl`` files: the installed package's ``_shaders``, else
    the source checkout's top-level ``shaders``."""
    installed = resources.files("energetic_wgpu") / "_shaders"
    checkout = Path(__file__).resolve().parent.parent / "shaders"
    for root in (installed, checkout):
        if root.is_dir():
            return root
    raise FileNotFoundError(f"energetic_wgpu shaders not found: looked in {installed} and {checkout}")


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
