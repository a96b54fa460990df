"""Sum-of-squares partials that a kernel wrote while producing gradients, kept for the optimizer.

The degree-binned backward (``segment_backward.wgsl``) writes, next to grad_q, grad_k and
grad_logits (= grad_bias), one sum-of-squares partial per workgroup into a float32 array.
:func:`remember` records that array for the gradient arrays it covers; ``adamw_step`` then
asks :func:`partials_for` and, when the same arrays come back unchanged, reduces those
partials instead of encoding its own ``sumsq_partials`` pass.

"Unchanged" is judged conservatively: any host write, clear or buffer copy on the backend
(``backend.write``, ``write_packed``, a data-parallel all-reduce writing the gradients back,
...) after the record was made discards it, and the optimizer takes its own pass. Kernels
never write into their inputs, so a dispatch cannot change a recorded gradient.
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

from .events import Listener

__all__ = ["remember", "partials_for"]


class _Watch(Listener):
    """Counts host writes, clears and copies (each may change a recorded gradient)."""

    def __init__(self) -> None:
        self.generation = 0

    def wrote(self, pooled: Any, offset: int, data: Any) -> None:
        self.generation += 1

    def cleared(self, pooled: Any, offset: int, size: int) -> None:
        self.generation += 1

    def copied(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        self.generation += 1


class _Registry:
    def __init__(self, runtime: Any) -> None:
        self.watch = runtime.add_listener(_Watch())
        # first gradient array -> (the other covered arrays, partials array, partial count,
        # generation); the key is held weakly (the record must not keep it alive)
        self.records: "weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], Any, int, int]]" = (
            weakref.WeakKeyDictionary()
        )


_REGISTRIES: "weakref.WeakKeyDictionary[Any, _Registry]" = weakref.WeakKeyDictionary()


def _registry(backend: Any) -> _Registry:
    reg = _REGISTRIES.get(backend)
    if reg is None:
        reg = _REGISTRIES[backend] = _Registry(backend.runtime)
    return reg


def remember(backend: Any, arrays: Sequence[Any], partials: Any, count: int) -> None:
    """Record that ``partials[:count]`` (float32 device array) sum to the sum of squares of
    every element of ``arrays`` (device arrays, in the order the optimizer passes them)."""
    reg = _registry(backend)
    reg.records[arrays[0]] = (tuple(arrays[1:]), partials, int(count), reg.watch.generation)


def partials_for(backend: Any, arrays: Sequence[Any]) -> tuple[Any, int] | None:
    """(partials array, count) recorded for exactly ``arrays`` (the same objects in the same
    order) with no host write, clear or copy since; else None."""
    if not arrays:
        return None
    reg = _REGISTRIES.get(backend)
    if reg is None:
        return None
    rec = reg.records.get(arrays[0])
    if rec is None:
        return None
    others, partials, count, generation = rec
    if generation != reg.watch.generation or len(others) != len(arrays) - 1:
        return None
    if any(a is not b for a, b in zip(others, arrays[1:])):
        return None
    return partials, count
