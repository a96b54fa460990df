"""What encoding and submitting one train step costs the host, against the floor the driver sets.

Measures on one adapter, each sample right after ``synchronize()`` (as bench_ab.py's "host
encode+submit": on lavapipe the device ran on the same CPU cores just before, so the caches
are cold), medians over ``--samples``:

* ``empty_submit``: create a command encoder, finish it, submit it (no commands);
* ``replay_public``: the steady-state train step's own dispatches (its cached pipelines, bind
  groups and workgroup counts, recorded from one real step) encoded again with wgpu-py's public
  pass methods and submitted — no Python of ours between the calls;
* ``replay_native``: the same through wgpu-native's entry points (the encoder's fast path,
  backends/webgpu/native.py);
* ``train_step``: ``Router.train_step`` itself (the lattice of bench_train_step.py);
* ``train_step_back_to_back_cpu``: the thread CPU time of train_step called back to back
  (warm caches; the wall time then includes waiting for the device).

``replay_native`` is the floor of any captured/replayed step on this driver: what is left
when every line of Python between the wgpu calls is gone. Usage::

    python benchmarks/host_floor.py --adapter 0 --samples 60 --json benchmarks/results_host_floor.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))


def _cold(be: Any, fn: Callable[[], Any], samples: int) -> float:
    import numpy as np

    ts = []
    for _ in range(samples):
        be.synchronize()
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    be.synchronize()
    return float(np.median(ts))


def measure(adapter: int, samples: int) -> dict[str, Any]:
    import numpy as np
    from refactor_invariants import baseline_step

    from energetic_wgpu.backends.webgpu import WgpuBackend
    from energetic_wgpu.backends.webgpu.native import raw_pass_calls

    be = WgpuBackend(adapter=adapter)
    rt = be.runtime
    step = baseline_step(be, 1)
    for _ in range(5):
        step()
    be.synchronize()
    records: list[Any] = []  # one steady step's dispatch records, in order
    enc = rt.encoder
    encode = enc._encode

    def recording(rec: Any, detail: Any) -> None:
        records.append(rec)
        encode(rec, detail)

    enc._encode = recording
    step()
    be.synchronize()
    enc._encode = encode
    dev, queue = rt.device, rt.queue

    def empty() -> None:
        queue.submit([dev.create_command_encoder().finish()])

    def replay_public() -> None:
        ce = dev.create_command_encoder()
        p = ce.begin_compute_pass()
        for r in records:
            p.set_pipeline(r.pipeline)
            p.set_bind_group(0, r.bind_group)
            p.dispatch_workgroups(r.gx, r.gy, 1)
        p.end()
        queue.submit([ce.finish()])

    out: dict[str, Any] = {"adapter": be.describe(), "dispatches": len(records), "samples": samples}
    raw = raw_pass_calls()
    fns: dict[str, Callable[[], Any]] = {"empty_submit": empty, "replay_public": replay_public}
    if raw is not None:
        _, set_pipeline, set_bind_group, dispatch, null = raw

        def replay_native() -> None:
            ce = dev.create_command_encoder()
            p = ce.begin_compute_pass()
            h = p._internal
            for r in records:
                set_pipeline(h, r.pipeline._internal)
                set_bind_group(h, 0, r.bind_group._internal, 0, null)
                dispatch(h, r.gx, r.gy, 1)
            p.end()
            queue.submit([ce.finish()])

        fns["replay_native"] = replay_native
    fns["train_step"] = step
    for name, fn in fns.items():
        out[f"{name}_ms"] = _cold(be, fn, samples)
    cpu = []
    for _ in range(samples):
        u0 = time.thread_time()
        step()
        cpu.append((time.thread_time() - u0) * 1e3)
    be.synchronize()
    out["train_step_back_to_back_cpu_ms"] = float(np.median(cpu))
    out["load_average"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", type=int, default=0)
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    res = measure(a.adapter, a.samples)
    for k, v in res.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
