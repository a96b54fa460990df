"""The runtime's listener hook (backends/webgpu/events.py): what a listener is told, in order,
and that the counters, the trace and the Dawn plan recorder are listeners (no patching)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("energetic_wgpu.backends.webgpu", reason="wgpu backend not importable")

from energetic_wgpu.backends.webgpu.events import Counters, Listener, TraceListener  # noqa: E402


class Log(Listener):
    def __init__(self, detailed: bool = False) -> None:
        self.detailed = detailed
        self.events: list[tuple] = []

    def created(self, pooled, kind):
        self.events.append(("created", kind))

    def wrote(self, pooled, offset, data):
        self.events.append(("wrote", pooled.uid, offset, data.nbytes))

    def cleared(self, pooled, offset, size):
        self.events.append(("cleared", pooled.uid))

    def copied(self, src, src_offset, dst, dst_offset, nbytes):
        self.events.append(("copied", src.uid, dst.uid, nbytes))

    def dispatched(self, detail):
        self.events.append(("dispatched", None if detail is None else detail["kernel"]))

    def submitted(self, pending):
        self.events.append(("submitted", pending))

    def read(self, x):
        self.events.append(("read", x.pooled.uid))

    def mapped(self, nbytes):
        self.events.append(("mapped", nbytes))


def test_a_listener_sees_every_operation_in_order(gpu_backend):
    be = gpu_backend
    rt = be.runtime
    be.synchronize()
    log = rt.add_listener(Log())
    try:
        a = be.asarray(np.arange(8, dtype=np.float32))
        z = be.zeros((8,))
        out = be.add(a, z)
        rt.copy_buffer(out, z, 32)
        got = be.to_numpy(z)
    finally:
        rt.remove_listener(log)
    np.testing.assert_array_equal(got, np.arange(8, dtype=np.float32))
    kinds = [e[0] for e in log.events if e[0] != "created"]  # creations depend on the pool's state
    assert kinds == ["wrote", "cleared", "dispatched", "copied", "read", "submitted", "mapped"]
    wrote = log.events[[e[0] for e in log.events].index("wrote")]
    assert wrote[1:] == (a.pooled.uid, 0, 32)
    assert ("dispatched", None) in log.events  # not detailed: the description is not built
    assert ("copied", out.pooled.uid, z.pooled.uid, 32) in log.events
    assert ("mapped", 32) in log.events and log not in rt.listeners


def test_a_detailed_listener_gets_each_dispatch_described(gpu_backend):
    be = gpu_backend
    rt = be.runtime
    x = be.asarray(np.ones(5, np.float32))
    be.add(x, x)  # a cached record exists now
    log = rt.add_listener(Log(detailed=True))
    try:
        be.add(x, x)
    finally:
        rt.remove_listener(log)
    assert ("dispatched", "add") in log.events
    assert not rt.listeners.detailed  # back to the cached fast path
    be.synchronize()


def test_counters_and_trace_are_listeners(gpu_backend):
    rt = gpu_backend.runtime
    assert isinstance(rt.counters, Counters) and rt.listeners[0] is rt.counters
    rt.trace = []
    try:
        assert any(isinstance(x, TraceListener) for x in rt.listeners) and rt.listeners.detailed
    finally:
        rt.trace = None
    assert not any(isinstance(x, TraceListener) for x in rt.listeners)


def test_the_plan_recorder_is_a_listener_and_detaches(gpu_backend):
    from energetic_wgpu.dawn.plan import PlanRecorder

    be = gpu_backend
    rt = be.runtime
    methods = {name: getattr(type(rt), name) for name in ("dispatch", "flush", "upload", "read")}
    rec = PlanRecorder(be)
    try:
        assert rec in rt.listeners
        x = be.asarray(np.full(4, 3.0, np.float32))
        rec.read_output("sum", be.add(x, x))
    finally:
        rec.detach()
    assert rec not in rt.listeners and rt.queue is rt.device.queue
    assert {name: getattr(type(rt), name) for name in methods} == methods
    ops = [e["op"] for e in rec.plan("t")["events"]]
    assert ops.count("dispatch") == 1 and ops[-2:] == ["read", "submit"] and "write" in ops
