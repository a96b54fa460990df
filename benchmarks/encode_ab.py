"""Host encode time of one train step for one source tree: the wgpu-native fast path and the
public wgpu-py API. For A/B runs of two trees in alternating processes::

    git archive main | tar -x -C /tmp/main_tree
    for i in 1 2; do for t in /tmp/main_tree .; do python benchmarks/encode_ab.py $t 0 60; done; done

Arguments: tree (first on sys.path), adapter index, samples. Prints one JSON line:
``{"tree", "fast": [cpu_ms, wall_ms], "public": [cpu_ms, wall_ms]}`` — medians of the step
encoded with the submit held back (each sample after ``synchronize``); cpu = thread CPU time.
The step: ``refactor_invariants.baseline_step`` (the lattice of benchmarks/bench_train_step.py).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

tree, adapter, reps = str(Path(sys.argv[1]).resolve()), int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, tree)
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

import numpy as np  # noqa: E402
from refactor_invariants import baseline_step  # noqa: E402  (benchmarks/ is sys.path[1])

import energetic_wgpu  # noqa: E402
from energetic_wgpu.backends.webgpu import WgpuBackend, ops_train  # noqa: E402

assert energetic_wgpu.__file__.startswith(tree), energetic_wgpu.__file__
be = WgpuBackend(adapter=adapter)
rt = be.runtime
step = baseline_step(be)
for _ in range(5):
    step()
ops_train.set_steps_per_submit(be, 1 << 30)


def measure() -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(reps):
        be.synchronize()
        t0, c0 = time.perf_counter(), time.thread_time()
        step()
        c1, t1 = time.thread_time(), time.perf_counter()
        be.flush()
        cpu.append((c1 - c0) * 1e3)
        wall.append((t1 - t0) * 1e3)
    return float(np.median(cpu)), float(np.median(wall))


out = {"tree": tree, "fast": measure()}
# the runtime before the redesign kept the wgpu-native entry points in rt._raw_pass_calls
owner, attr = (rt.encoder, "raw") if hasattr(rt, "encoder") else (rt, "_raw_pass_calls")
saved = getattr(owner, attr)
setattr(owner, attr, None)
out["public"] = measure()
setattr(owner, attr, saved)
print(json.dumps(out))
