"""The dispatch encoder: bind groups, the dispatch-record cache, copies and clears.

Every dispatch goes into the one open compute pass of the pending :class:`Submission`
(copies and clears end it). A dispatch identical to an earlier one — the same kernel, binding
buffers, workgroup count and uniform bytes — replays its cached :class:`Record` (pipeline,
bind group, workgroup counts): they were derived from exactly these inputs, so the encoded
commands are the same. A record is dropped when one of its buffers is destroyed. A pass skips
redundant set_pipeline / set_bind_group calls. When a ``detailed`` listener is registered
(tracing, plan recording), every dispatch takes the full path and is described to it.
"""

from __future__ import annotations

import collections
from typing import Any

from ...errors import DeviceError, DeviceLimitError, InvalidArgumentError
from .arrays import DeviceArray, binding_of
from .device import MAX_WORKGROUPS_PER_DIM
from .kernels import KERNELS, KernelSpec, kernel
from .native import make_encode, raw_pass_calls
from .pipelines import PipelineCache
from .submission import Submission
from .uniforms import UniformCache, uniform_key

__all__ = ["Encoder", "Record", "fold", "BIND_GROUP_CACHE_SIZE", "RECORD_CACHE_SIZE"]

BIND_GROUP_CACHE_SIZE = 8192
RECORD_CACHE_SIZE = 8192


def fold(groups: int) -> tuple[int, int]:
    """Workgroup counts (gx, gy) covering ``groups`` with gx, gy <= 65,535."""
    if groups <= MAX_WORKGROUPS_PER_DIM:
        return groups, 1
    gy = -(-groups // MAX_WORKGROUPS_PER_DIM)
    gx = -(-groups // gy)
    if gy > MAX_WORKGROUPS_PER_DIM:
        raise DeviceLimitError(
            f"a dispatch of {groups} workgroups exceeds maxComputeWorkgroupsPerDimension^2 = "
            f"{MAX_WORKGROUPS_PER_DIM}^2"
        )
    return gx, gy


class Record:
    """What one dispatch encodes: pipeline, bind group (with its uniform buffer), workgroup
    counts, and the uids of every buffer it binds (in flight until the next submit)."""

    __slots__ = ("spec", "pipeline", "bind_group", "gx", "gy", "uids", "uniform_key")

    def __init__(
        self, spec: KernelSpec, pipeline: Any, bind_group: Any, gx: int, gy: int, uids: tuple[int, ...], uniform_key: Any
    ) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.bind_group = bind_group
        self.gx = gx
        self.gy = gy
        self.uids = uids
        self.uniform_key = uniform_key


class Encoder:
    """Encodes dispatches, copies and clears into the pending submission.

    Args:
        device: the GPUDevice. submission: the pending :class:`Submission`.
        pipelines: the :class:`PipelineCache`. uniforms: the :class:`UniformCache`.
        listeners: the runtime's listener list (read on every event).

    Attributes (documented for tests and tools):
        records: the cached :class:`Record` of each dispatch key (kernel, threads, workgroups,
            uniform bytes, binding keys). records_by_uid: buffer uid -> keys of the records
            binding it. bind_groups: the bind group cache. raw: the wgpu-native entry points
            (native.py) or None (the public wgpu-py methods).
    """

    def __init__(self, device: Any, submission: Submission, pipelines: PipelineCache, uniforms: UniformCache,
                 listeners: Any) -> None:
        self.device = device
        self.submission = submission
        self.pipelines = pipelines
        self.uniforms = uniforms
        self.listeners = listeners
        #: the binding limit in use (the runtime sets it): a storage binding over it is refused
        self.max_binding_size = 1 << 62
        self._touch_uniform = uniforms.buffers.move_to_end
        self.raw = raw_pass_calls()  # sets self._encode
        self.bind_groups: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()
        # dispatch records by (kernel, threads, workgroups, uniform bytes, binding keys), and
        # the keys of the records that bind each buffer uid (dropped when it is destroyed)
        self.records: dict[tuple[Any, ...], Record] = {}
        self.records_by_uid: dict[int, dict[tuple[Any, ...], None]] = {}

    # ------------------------------------------------------------------ caches
    def forget(self, uid: int) -> None:
        """Drop the bind groups and records that bind buffer ``uid`` (it is being destroyed)."""
        for key in [k for k in self.bind_groups if uid in k[2]]:
            del self.bind_groups[key]
        for rkey in self.records_by_uid.pop(uid, ()):
            rec = self.records.pop(rkey, None)
            if rec is not None:
                for u in rec.uids:
                    if u != uid:
                        keys = self.records_by_uid.get(u)
                        if keys is not None:
                            keys.pop(rkey, None)

    def _remember(self, rkey: tuple[Any, ...], rec: Record) -> None:
        """Cache a dispatch record; index it by every buffer it binds (see :meth:`forget`)."""
        self.records[rkey] = rec
        for u in rec.uids:
            self.records_by_uid.setdefault(u, {})[rkey] = None
        if len(self.records) > RECORD_CACHE_SIZE:
            old_key = next(iter(self.records))
            old = self.records.pop(old_key)
            for u in old.uids:
                keys = self.records_by_uid.get(u)
                if keys is not None:
                    keys.pop(old_key, None)
                    if not keys:
                        del self.records_by_uid[u]

    # ------------------------------------------------------------------ dispatch
    def dispatch(
        self,
        kernel_name: str,
        *,
        threads: int | None = None,
        workgroups: int | None = None,
        uniform: Any = None,
        constants: dict[str, Any] | None = None,
        **buffers: Any,
    ) -> None:
        """:meth:`Runtime.dispatch` (the runtime's ``dispatch`` is this bound method)."""
        spec = KERNELS.get(kernel_name)
        detailed = self.listeners.detailed
        if spec is not None and constants is None and not detailed:
            try:  # the names were resolved to binding slots once per kernel (buffers_of)
                bindings = spec.buffers_of(buffers)
                u = spec.uniform
                if len(buffers) != len(bindings) or len(uniform) != len(u.names):
                    raise KeyError(kernel_name)
                ubytes = u.pack(uniform) if u._vec else u._struct.pack(*u.values_of(uniform))
                uids = tuple([b._alloc.bkey if type(b) is DeviceArray else b.uid for b in bindings])
            except Exception:  # bad arguments: the full path raises the documented errors
                uids = None
            if uids is not None:
                rkey = (kernel_name, threads, workgroups, ubytes, uids)
                rec = self.records.get(rkey)
                if rec is not None:
                    self._encode(rec, None)
                    return
                self._dispatch_full(spec, bindings, threads, workgroups, ubytes, None, rkey, False)
                return
        spec = kernel(kernel_name)
        names = spec.storage_names
        extra = sorted(set(buffers) - set(names))
        missing = [n for n in names if n not in buffers]
        if extra or missing:
            raise InvalidArgumentError(
                f"kernel {kernel_name} binds {list(names)}; missing {missing}, unknown {extra}"
            )
        ubytes = uniform if isinstance(uniform, (bytes, bytearray)) else spec.uniform.pack(uniform)
        self._dispatch_full(spec, [buffers[n] for n in names], threads, workgroups, bytes(ubytes), constants, None,
                            detailed)

    @property
    def raw(self) -> Any:
        """The wgpu-native entry points (native.py) used for dispatches, or None: wgpu-py's
        public methods. Settable (tests compare both paths)."""
        return self._raw

    @raw.setter
    def raw(self, raw: Any) -> None:
        self._raw = raw
        self._encode = self._encode_public if raw is None else make_encode(
            raw, self.submission, self.listeners, self._touch_uniform, self._public_calls)

    def _encode_public(self, rec: Record, detail: dict[str, Any] | None) -> None:
        """Tell the listeners (first: one may flush), then encode with wgpu-py's methods."""
        self.listeners.dispatched(detail)  # first: a listener may flush
        sub = self.submission
        cpass = sub.cpass
        if cpass is None:
            cpass = sub.compute_pass()
        self._public_calls(cpass, rec)

    def _public_calls(self, cpass: Any, rec: Record) -> None:
        """set_pipeline (if changed), set_bind_group (if changed), dispatch_workgroups."""
        sub = self.submission
        pipe, bg = rec.pipeline, rec.bind_group
        if pipe is not sub.pass_pipeline:
            cpass.set_pipeline(pipe)
            sub.pass_pipeline = pipe
            sub.pass_bind_group = None
        if bg is not sub.pass_bind_group:
            cpass.set_bind_group(0, bg)
            sub.pass_bind_group = bg
        cpass.dispatch_workgroups(rec.gx, rec.gy, 1)
        sub.in_flight.update(rec.uids)
        self._touch_uniform(rec.uniform_key)  # keep the uniform buffer's LRU place

    def _dispatch_full(
        self,
        spec: KernelSpec,
        bindings: list[Any],
        threads: int | None,
        workgroups: int | None,
        ubytes: bytes,
        constants: dict[str, Any] | None,
        rkey: tuple[Any, ...] | None,
        detailed: bool,
    ) -> None:
        slots = spec.storage_bindings
        wg = int((constants or {}).get("WG", spec.workgroup_size))
        if (threads is None) == (workgroups is None):
            raise InvalidArgumentError("dispatch: give exactly one of threads= or workgroups=")
        groups = -(-int(threads) // wg) if threads is not None else int(workgroups)  # type: ignore[arg-type]
        if groups <= 0:
            return
        gx, gy = fold(groups)
        pipe, bgl = self.pipelines.pipeline(spec, constants)
        bound = [binding_of(b) for b in bindings]
        for name, (_, _, size) in zip(spec.storage_names, bound):
            if size > self.max_binding_size:  # an array larger than one binding, bound whole
                raise DeviceLimitError(
                    f"kernel {spec.name} binds {name!r} of {size} bytes, over the binding limit of "
                    f"{self.max_binding_size} bytes; this array can only be read back (to_numpy)"
                )
        ubuf = self.uniforms.get(ubytes)
        entries = [{"binding": spec.uniform_binding, "resource": {"buffer": ubuf.buffer, "offset": 0, "size": ubuf.size}}]
        key_entries = [(ubuf.uid, 0, ubuf.size)]
        for slot, (p, off, size) in zip(slots, bound):
            entries.append({"binding": slot, "resource": {"buffer": p.buffer, "offset": off, "size": size}})
            key_entries.append((p.uid, off, size))
        bg = self._bind_group(spec, bgl, entries, key_entries)
        all_uids = tuple(u for u, _, _ in key_entries)
        rec = Record(spec, pipe, bg, gx, gy, all_uids, uniform_key(ubytes))
        detail = None
        if detailed:
            detail = {
                "kernel": spec.name,
                "entry_point": spec.entry_point,
                "sources": list(spec.sources),
                "workgroups": [gx, gy, 1],
                "constants": dict(sorted({**spec.override_constants(), **(constants or {})}.items())),
                "uniforms": ubytes.hex(),
                "bindings": [
                    {"binding": s, "buffer": p.uid, "offset": off, "size": size}
                    for s, (p, off, size) in zip(slots, bound)
                ],
            }
        self._encode(rec, detail)
        if rkey is not None:
            self._remember(rkey, rec)

    def _bind_group(self, spec: KernelSpec, bgl: Any, entries: list[dict[str, Any]],
                    key_entries: list[tuple[int, int, int]]) -> Any:
        bg_key = (spec.name, id(bgl), tuple(u for u, _, _ in key_entries), tuple(key_entries))
        bg = self.bind_groups.get(bg_key)
        if bg is None:
            try:
                bg = self.device.create_bind_group(layout=bgl, entries=entries)
            except Exception as exc:
                raise DeviceError(f"bind group for kernel {spec.name} rejected: {exc}") from exc
            for listener in self.listeners:
                listener.built("bind_group")
            self.bind_groups[bg_key] = bg
            if len(self.bind_groups) > BIND_GROUP_CACHE_SIZE:
                self.bind_groups.popitem(last=False)
        else:
            self.bind_groups.move_to_end(bg_key)
        return bg

    # ------------------------------------------------------------------ copies and clears
    def copy_buffer(self, src: Any, dst: Any, nbytes: int) -> None:
        """Encode a copy of ``nbytes`` from ``src``'s offset to ``dst``'s offset."""
        if nbytes <= 0:
            return
        (s, so, _), (d, do, _) = binding_of(src), binding_of(dst)
        for listener in self.listeners:
            listener.copied(s, so, d, do, nbytes)
        self.submission.outside_pass().copy_buffer_to_buffer(s.buffer, so, d.buffer, do, nbytes)
        self.submission.in_flight.update((s.uid, d.uid))

    def clear(self, x: Any) -> None:
        """Encode zero-filling of ``x``'s whole buffer (of its bound range for a view)."""
        p, off, size = binding_of(x)
        for listener in self.listeners:
            listener.cleared(p, off, size)
        self.submission.outside_pass().clear_buffer(p.buffer, off, size)
        self.submission.in_flight.add(p.uid)
