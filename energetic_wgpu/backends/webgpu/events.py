"""Runtime events and their listeners: the work counters, the dispatch trace, plan recorders.

The runtime tells every registered :class:`Listener` what it does to the device, each event
just *before* the operation is issued (a recorder can still snapshot a buffer's old bytes):

========================  ====================================================================
``created(pooled, kind)``  a buffer was created; kind "storage", "uniform" or "staging"
``built(kind)``            a "bind_group", "pipeline" or "shader_module" was created
``wrote(pooled, o, data)`` ``data`` (contiguous numpy array) is written at byte ``o`` of a storage buffer
``cleared(pooled, o, n)``  ``n`` bytes at ``o`` are zero-filled
``copied(s, so, d, do, n)`` ``n`` bytes are copied from (s, so) to (d, do)
``dispatched(detail)``     one dispatch; ``detail`` is None unless a listener is ``detailed``
``submitted(pending)``     a queue submit: of the pending encoder (True) or an internal one
``read(x)``                a DeviceArray of size > 0 is about to be copied back
``mapped(nbytes)``         ``nbytes`` were mapped and copied to the host
``pass_begun()``           a compute pass was opened
========================  ====================================================================

A ``detailed`` listener makes every dispatch take the full (uncached) path and receive the
dispatch as a JSON-able dict: kernel, entry_point, sources, workgroups, constants, uniforms
(hex) and bindings (binding number, buffer uid, offset, size).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Listener", "Listeners", "Counters", "TraceListener"]


class Listener:
    """Base class of runtime listeners: every event is ignored unless overridden."""

    #: True: dispatches take the full path and ``dispatched`` receives their description
    detailed = False

    def created(self, pooled: Any, kind: str) -> None:
        pass

    def built(self, kind: str) -> None:
        pass

    def wrote(self, pooled: Any, offset: int, data: Any) -> None:
        pass

    def cleared(self, pooled: Any, offset: int, size: int) -> None:
        pass

    def copied(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        pass

    def dispatched(self, detail: dict[str, Any] | None) -> None:
        pass

    def submitted(self, pending: bool) -> None:
        pass

    def read(self, x: Any) -> None:
        pass

    def mapped(self, nbytes: int) -> None:
        pass

    def pass_begun(self) -> None:
        pass


@dataclass
class Counters(Listener):
    """Work counters of one runtime (tests assert a steady-state step allocates nothing)."""

    submits: int = 0
    dispatches: int = 0
    buffers_created: int = 0
    bind_groups_created: int = 0
    pipelines_created: int = 0
    shader_modules_created: int = 0
    uniform_buffers_created: int = 0
    bytes_uploaded: int = 0
    bytes_read_back: int = 0
    readbacks: int = 0
    compute_passes: int = 0

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, key: str) -> int:
        return getattr(self, key)

    def __call__(self) -> dict[str, int]:
        """The counters as a dict (``backend.counters()``, the same as :meth:`snapshot`)."""
        return self.snapshot()

    # ------------------------------------------------------------------ events
    def created(self, pooled: Any, kind: str) -> None:
        self.buffers_created += 1
        if kind == "uniform":
            self.uniform_buffers_created += 1

    def built(self, kind: str) -> None:
        if kind == "bind_group":
            self.bind_groups_created += 1
        elif kind == "pipeline":
            self.pipelines_created += 1
        elif kind == "shader_module":
            self.shader_modules_created += 1

    def wrote(self, pooled: Any, offset: int, data: Any) -> None:
        self.bytes_uploaded += data.nbytes

    def dispatched(self, detail: dict[str, Any] | None) -> None:
        self.dispatches += 1

    def submitted(self, pending: bool) -> None:
        self.submits += 1

    def mapped(self, nbytes: int) -> None:
        self.bytes_read_back += nbytes
        self.readbacks += 1

    def pass_begun(self) -> None:
        self.compute_passes += 1


class TraceListener(Listener):
    """Appends every dispatch's description to ``entries`` (``Runtime.trace``)."""

    detailed = True

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    def dispatched(self, detail: dict[str, Any] | None) -> None:
        self.entries.append(detail)  # type: ignore[arg-type]


class Listeners(list):
    """The listeners of one runtime (a list: the hot paths iterate it directly), with
    :attr:`detailed` kept up to date and the emitters the runtime's parts are given."""

    def __init__(self, first: Counters) -> None:
        super().__init__([first])
        self.detailed = False
        #: the runtime's own counters (the first listener): the encoder counts dispatches into
        #: it directly, the hottest event does not cost a method call
        self.counters = first
        #: ``dispatched`` of every other listener that overrides it (updated in place, so the
        #: encoder can hold the list; empty in the common case)
        self.dispatch_hooks: list[Any] = []

    def _changed(self) -> None:
        self.detailed = any(getattr(x, "detailed", False) for x in self)
        self.dispatch_hooks[:] = [
            x.dispatched for x in self[1:] if type(x).dispatched is not Listener.dispatched
        ]

    def add(self, listener: Listener) -> Listener:
        self.append(listener)
        self._changed()
        return listener

    def discard(self, listener: Listener) -> None:
        for i in range(len(self) - 1, 0, -1):  # by identity (dataclass listeners compare equal by value)
            if self[i] is listener:
                del self[i]
                break
        self._changed()

    def dispatched(self, detail: dict[str, Any] | None) -> None:
        """One dispatch: counted, then every hook is told (a hook may flush)."""
        self.counters.dispatches += 1
        for hook in self.dispatch_hooks:
            hook(detail)

    def created(self, pooled: Any, kind: str) -> None:
        for listener in self:
            listener.created(pooled, kind)

    def built(self, kind: str) -> None:
        for listener in self:
            listener.built(kind)

    def pass_begun(self) -> None:
        for listener in self:
            listener.pass_begun()
