"""The arithmetic of the before/after benchmark and the roofline model (benchmarks/bench_ab.py,
benchmarks/roofline.py): minimum bytes per phase and the modelled times, checked by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_ab import _merge, min_bytes  # noqa: E402
from roofline import GPUS, WORKLOADS, table  # noqa: E402


def test_min_bytes_by_hand():
    n, e, b, d = 10, 30, 2, 4
    mb = min_bytes(n, e, b, d)
    # forward: Q, K (80) + bias, col_idx, pi written, pi read, rev ids (5E = 150) + 2 pointer
    # arrays (22) + x and next (40) = 292 words
    assert mb["forward"] == 4 * 292
    assert mb["loss"] == 4 * 3 * 20
    # backward: x, grad (40) + 2 pointer arrays (22) + col_idx, pi, rev ids, dlogits written and
    # read (5E = 150) + Q, K read and dQ, dK written (160) = 372 words
    assert mb["backward"] == 4 * 372
    assert mb["optimizer"] == 4 * 7 * (2 * n * d + e)


def test_merge_takes_medians_of_numbers_only():
    runs = [{"a": 1, "s": "x", "d": {"v": 3.0}}, {"a": 5, "s": "x", "d": {"v": 1.0}}, {"a": 2, "s": "x", "d": {"v": 2.0}}]
    assert _merge(runs) == {"a": 2.0, "s": "x", "d": {"v": 2.0}}


def test_roofline_table_rows_and_bounds():
    disp = {name: 9 for name in WORKLOADS}
    text = table(disp, host_ms=0.5)
    rows = [r for r in text.splitlines()[2:]]
    assert len(rows) == len(WORKLOADS) * len(GPUS)
    # the large workload: 100M (forward) + 24M (loss) + 132M (backward) + 294M (AdamW) words
    # = 2200 MB; at 3350 GB/s 0.657 ms, + 9 x 2-5 us
    n, e, b, d = WORKLOADS["large: N = 1M, E = 10M, B = 8, d = 16"]
    nbytes = sum(min_bytes(n, e, b, d).values())
    assert nbytes / 3350e9 * 1e3 == pytest.approx(2200e6 / 3350e9 * 1e3, rel=1e-6)
    assert nbytes == pytest.approx(2200e6, rel=1e-6)  # (+ the pointer arrays' extra words)
    h100_large = [r for r in rows if r.startswith("| large") and "H100" in r][0]
    assert "| 0.675-0.702 ms |" in h100_large and h100_large.endswith("| device |")
    h100_default = [r for r in rows if r.startswith("| default") and "H100" in r][0]
    assert h100_default.endswith("| host |")


def test_host_floor_measures_the_steps_own_dispatches(gpu_backend):
    """benchmarks/host_floor.py on the first adapter: the replay holds the train step's 9
    dispatches, and every figure is a positive time (2 samples: a dry run, not a measurement)."""
    pytest.importorskip("energetic_wgpu.backends.webgpu")
    import host_floor

    if "Vulkan" not in gpu_backend.describe():
        pytest.skip("one adapter is enough (the script opens its own device)")
    res = host_floor.measure(0, 2)
    assert res["dispatches"] == 9 and res["samples"] == 2
    for key in ("empty_submit_ms", "replay_public_ms", "replay_native_ms", "train_step_ms",
                "train_step_back_to_back_cpu_ms"):
        assert res[key] > 0, key
