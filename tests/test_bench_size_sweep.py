"""benchmarks/bench_size_sweep.py in its dry-run mode (two tiny sizes, B = 1, one repeat)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from energetic_wgpu.backends.base import MEMORY_PURPOSES

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sweep = pytest.importorskip("benchmarks.bench_size_sweep")


def test_dry_run_numpy_and_wgpu(gpu_backend, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    report = sweep.main(["--dry-run", "--json", str(out)], gpu=[("wgpu under test", gpu_backend)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    assert report["dry_run"] and report["sizes"] == [1000, 3000] and report["batches"] == [1]
    by_name = {r["backend"]: r for r in report["results"]}
    assert set(by_name) == {"numpy", "wgpu under test"}
    for res in by_name.values():
        assert [r["edges"] for r in res["rows"]] == [1000, 3000]
        assert res["walls"] == {}
        assert math.isfinite(res["slope"]["1"])
        for r in res["rows"]:
            assert r["nodes"] == r["edges"] // 10 and r["batch"] == 1 and r["seconds"] > 0
            assert r["min_bytes"] == sweep.min_bytes(r["nodes"], r["edges"], 1)
            assert r["bytes_per_edge"] == pytest.approx(r["bytes"] / r["edges"])
            # at least the parameters, their moments and the graph; within 10x the minimum
            assert 0.5 < r["ratio_to_min"] < 10
    for r in by_name["wgpu under test"]["rows"]:
        assert tuple(r["memory"]) == MEMORY_PURPOSES and r["bytes"] == r["memory"]["total"]
        n, e = r["nodes"], r["edges"]
        assert r["memory"]["parameters"] >= 4 * (2 * n * 16 + e)
        assert r["memory"]["optimizer"] >= 2 * r["memory"]["parameters"]
    text = capsys.readouterr().out
    assert "log-log slope of step time against E (goal <= 1.1):" in text


def test_refusal_is_recorded_as_the_wall(gpu_backend):
    with gpu_backend.binding_limit(4096):  # q of E = 1,000 takes 6,400 bytes: row windows of 16-float rows
        report = sweep.main(["--dry-run", "--no-numpy"], gpu=[("small", gpu_backend)])
    res = report["results"][0]
    assert res["rows"] == []
    assert res["walls"]["1"].startswith("refused at E = 1000, B = 1: ")
    assert "q and k of shape (100, 16) are over one storage binding, and a window's gathered rows (64 + its " \
           "edges, 64 bytes each) do not fit one either (max_binding_bytes = 4096 bytes" in res["walls"]["1"]
    assert math.isnan(res["slope"]["1"])


def test_min_bytes_formula():
    # graph 4(N+1) + 4E, params/grads/moments 4 x 4(2Nd + E), pi 4E, three [B, N] states
    assert sweep.min_bytes(10, 100, 2) == 4 * (11 + 100 + 4 * (2 * 10 * 16 + 100) + 100 + 3 * 2 * 10)


def test_sizes_past_the_time_budget_are_built_until_refused(gpu_backend):
    # E = 1,000 is timed; E = 3,000 (q alone 19,200 bytes: row windows) only built, past the
    # 0 s budget
    with gpu_backend.binding_limit(16384):
        report = sweep.main(["--dry-run", "--no-numpy", "--gpu-max-seconds", "0"], gpu=[("mid", gpu_backend)])
    res = report["results"][0]
    assert [r["edges"] for r in res["rows"]] == [1000]
    wall = res["walls"]["1"]
    assert wall.startswith("stopped timing before E = 3000: about ")
    assert wall.endswith("built untimed at E = [3000]; no refusal up to the largest size")


def test_wide_rows_bench_small():
    """benchmarks.bench_wide_rows on a small graph (no wide rows at this size): one step,
    a finite loss, the memory report by purpose."""
    from benchmarks.bench_wide_rows import run

    res = run(2000, 1, 1)
    assert (res["nodes"], res["batch"], res["ptr_block"], len(res["steps"])) == (2000, 1, 0, 1)
    assert np.isfinite(res["steps"][0]["loss"]) and res["memory"]["parameters"] > 0
