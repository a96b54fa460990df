"""Build the HTML API reference of energetic_wgpu from its docstrings (pdoc) and check it.

    python scripts/build_api_docs.py                 # writes docs/api/ (index.html)
    python scripts/build_api_docs.py --out /tmp/api  # elsewhere
    python scripts/build_api_docs.py --check         # only the checks, no HTML

Documented: the package's public names (``energetic_wgpu.__all__``), ``energetic_wgpu.losses``
and ``energetic_wgpu.torch`` (when torch is installed). The build fails (exit status 1, one
line per problem) when a public name, or a public method or property of a public class, has
no docstring, or when a cross-reference in a docstring (``:class:`Graph```,
``:meth:`~energetic_wgpu.Router.forward```, ``:func:`text <target>```) names nothing.
Cross-references are resolved from the object's module, its class and the package.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any, Iterator

PACKAGE = "energetic_wgpu"
EXTRA_MODULES = ("energetic_wgpu.losses", "energetic_wgpu.torch", "energetic_wgpu.distributed")
#: Sphinx-style cross-reference roles: :class:`~a.B`, :meth:`text <a.B.c>`
ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):`([^`]+)`")


def _target(ref: str) -> str:
    """The dotted name a role's text refers to."""
    m = re.search(r"<([^>]+)>\s*$", ref)
    name = m.group(1) if m else ref
    return name.strip().lstrip("~").removesuffix("()")


def _rewrite_roles(docstring: str) -> str:
    """Roles as plain backticked dotted names, which pdoc links."""
    return ROLE.sub(lambda m: f"`{_target(m.group(1))}`", docstring)


def _modules() -> list[types.ModuleType]:
    mods = [importlib.import_module(PACKAGE)]
    for name in EXTRA_MODULES:
        try:
            mods.append(importlib.import_module(name))
        except ImportError as exc:
            if name.endswith(".torch"):
                print(f"build_api_docs: {name} left out ({exc})", file=sys.stderr)
                continue
            raise
    return mods


def _public(module: types.ModuleType) -> list[str]:
    return [n for n in getattr(module, "__all__", []) if not n.startswith("_")]


def _own_doc(obj: Any) -> str | None:
    """The docstring written for ``obj`` (None for a dataclass's generated signature line)."""
    doc = inspect.getdoc(obj)
    if not doc or not doc.strip():
        return None
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):  # dataclass default
        return None
    return doc


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods and properties a class of the package defines (its own and its package bases')."""
    seen = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith(PACKAGE):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, (property, cached_property_type())):
                yield name, getattr(cls, name) if not isinstance(value, (property,)) else value


def cached_property_type() -> type:
    from functools import cached_property

    return cached_property


def _documented_objects() -> Iterator[tuple[str, Any, types.ModuleType, type | None]]:
    """(qualified name, object, module for name lookups, owning class) of every checked object."""
    for module in _modules():
        yield module.__name__, module, module, None
        for name in _public(module):
            if name == "__version__":
                continue
            obj = getattr(module, name)
            home = sys.modules.get(getattr(obj, "__module__", "") or "", module)
            qual = f"{module.__name__}.{name}"
            if isinstance(obj, types.ModuleType):
                continue  # documented as a module of its own (EXTRA_MODULES)
            yield qual, obj, home, None
            if inspect.isclass(obj):
                for mname, member in _members(obj):
                    yield f"{qual}.{mname}", member, home, obj


def _resolves(target: str, home: types.ModuleType, owner: type | None) -> bool:
    parts = target.split(".")
    roots: list[Any] = []
    if owner is not None:
        roots.append(owner)
    roots += [home, importlib.import_module(PACKAGE)]
    for root in roots:
        obj: Any = root
        for part in parts:
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return True
    for i in range(len(parts), 0, -1):  # a fully qualified module path, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        return True
    return False


def check() -> list[str]:
    """Problems: public names without a docstring, cross-references that name nothing."""
    problems = []
    for qual, obj, home, owner in _documented_objects():
        doc = _own_doc(obj.fget if isinstance(obj, property) else obj)
        if doc is None:
            problems.append(f"{qual}: no docstring")
            continue
        scope = obj if inspect.isclass(obj) else owner
        for m in ROLE.finditer(doc):
            if not _resolves(_target(m.group(1)), home, scope):
                problems.append(f"{qual}: cross-reference {m.group(0)} names nothing")
    return problems


def build(out: Path) -> None:
    """Write the HTML reference into ``out`` (index.html and one page per module)."""
    import pdoc
    import pdoc.docstrings
    import pdoc.render

    original = pdoc.docstrings.convert

    def convert(docstring: str, docformat: str, source_file: Any = None) -> str:
        return original(_rewrite_roles(docstring), docformat, source_file)

    pdoc.render.configure(docformat="google", show_source=False)
    pdoc.docstrings.convert = convert  # type: ignore[assignment]
    try:
        names = [m.__name__ for m in _modules()]
        excluded = "|".join(re.escape(n.split(".", 1)[1]) for n in names if "." in n)
        # the package brings the submodules its __all__ names; add the others, keep only ours
        pkg_all = set(_public(importlib.import_module(PACKAGE)))
        extra = [n for n in names[1:] if n.rpartition(".")[2] not in pkg_all]
        pdoc.pdoc(PACKAGE, *extra, f"!{re.escape(PACKAGE)}\\.(?!({excluded})$)", output_directory=out)
    finally:
        pdoc.docstrings.convert = original  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "api"),
                    help="output folder (default: docs/api of the checkout)")
    ap.add_argument("--check", action="store_true", help="only check the docstrings, write nothing")
    args = ap.parse_args(argv)
    problems = check()
    for p in problems:
        print(f"build_api_docs: {p}", file=sys.stderr)
    if problems:
        print(f"build_api_docs: {len(problems)} problem(s); nothing written", file=sys.stderr)
        return 1
    if not args.check:
        out = Path(args.out)
        build(out)
        print(f"build_api_docs: wrote {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
