"""The benchmark suite (energetic_wgpu.benchmarking, ``energetic-wgpu bench``): a quick run on
NumPy (and on one wgpu adapter) gives JSON with the expected keys and a markdown report with
the router design's expected figures; the log-log slope is exact on synthetic power laws."""

from __future__ import annotations

import json

import numpy as np
import pytest

from energetic_wgpu.benchmarking import loglog_slope, time_interleaved
from energetic_wgpu.benchmarking.report import plot_sweep, to_markdown
from energetic_wgpu.benchmarking.suite import run_suite
from energetic_wgpu.cli import main
from energetic_wgpu.config import load_config

SMALL = ["graph.layers=3", "graph.nodes_per_layer=32", "router.dim=4", "train.batch_size=4"]


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 2.0])
def test_loglog_slope_exact(power):
    n = np.array([1e3, 1e4, 1e5, 1e6])
    assert loglog_slope(n, 3.7 * n**power) == pytest.approx(power, abs=1e-9)


def test_loglog_slope_degenerate():
    assert np.isnan(loglog_slope([10], [1.0]))
    assert np.isnan(loglog_slope([10, 10], [1.0, 2.0]))
    assert loglog_slope([10, 100, 1000], [1.0, float("nan"), 100.0]) == pytest.approx(1.0)  # NaN point dropped
    with pytest.raises(ValueError, match="same length"):
        loglog_slope([1, 2], [1.0])


def test_time_interleaved_round_robin():
    order: list[str] = []
    t = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert t["a"].repeats == 3 and len(t["b"].samples_ms) == 3 and t["a"].median_ms >= 0


def test_quick_suite_numpy(tmp_path, capsys):
    js, md, png = tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png"
    rc = main(["bench", "--backend", "numpy", "--quick", "--sections", "phases,sweep,lattice3d",
               "--repeats", "2", "--warmup", "0", *[a for s in SMALL for a in ("--set", s)],
               "--json", str(js), "--markdown", str(md), "--plot", str(png)])
    assert rc == 0
    payload = json.loads(js.read_text())
    assert {"machine", "settings", "seed", "targets", "notes"} <= set(payload)
    assert payload["machine"]["cpu_count"] >= 1
    (entry,) = payload["targets"]
    assert entry["target"] == "numpy"
    timings = entry["phases"]["timings"]
    assert set(timings) == {"graph_build", "forward", "loss", "backward", "optimizer", "train_step"}
    assert all(len(t["samples_ms"]) == 2 and t["median_ms"] > 0 for t in timings.values())
    sweep = entry["sweep"]
    assert [p["n"] for p in sweep["points"]] == [1_000, 10_000, 100_000]
    assert set(sweep["slope"]) == {"forward", "train_step"} and np.isfinite(sweep["slope"]["forward"])
    rows = entry["lattice3d"]["rows"]
    assert [r["cells"] for r in rows] == [125, 1000, 3375, 8000]
    assert rows[0]["forward"]["1"]["cells_per_s"] > 0
    text = md.read_text()
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "| phase | design M4 (expected) | numpy |" in text and "| backward | 8–15 |" in text
    assert "design s (vectorized) | design cells/s" in text and "| 20³ | 8,000 |" in text
    assert "| numpy | forward |" in text and "slope" in text
    matplotlib = pytest.importorskip("matplotlib")
    assert matplotlib and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_sweep_and_torch_skip():
    payload = {"machine": {}, "settings": {"quick": True, "full": False}, "notes": [],
               "targets": [{"target": "x", "error": "BackendUnavailable: none"}],
               "torch": {"skipped": "PyTorch is not installed"}}
    text = to_markdown(payload)
    assert "unavailable: BackendUnavailable" in text and "Skipped: PyTorch is not installed" in text
    assert plot_sweep(payload, "/nonexistent/x.png") is not None  # a reason, no file


def _check_ops(res):
    names = [r["op"] for r in res["ops"]]
    assert names[0].split()[0] in ("copy_vec4", "np.copyto") and res["ops"][0]["ratio_to_copy"] == 1.0
    for op in ("edge_logits", "segment_softmax top_k=4", "energy_scatter", "step_metrics", "mse",
               "energy_scatter_backward", "segment_softmax_backward", "edge_logits_backward", "adamw_step (clipped)"):
        assert op in names, op
    assert all(r["gb_per_s"] > 0 and r["bytes"] > 0 for r in res["ops"])


def test_ops_numpy():
    from energetic_wgpu.backends.numpy_backend import NumpyBackend
    from energetic_wgpu.benchmarking.ops import bench_ops

    _check_ops(bench_ops(NumpyBackend(), "quick", repeats=1, warmup=0, copy_bytes=1 << 20))


def test_ops_and_phases_on_one_adapter():
    from energetic_wgpu.benchmarking.ops import bench_ops
    from energetic_wgpu.check import list_targets

    targets, _ = list_targets()
    if not targets:
        pytest.skip("no wgpu adapter")
    index = targets[0][0].split(":")[1]
    payload = run_suite(load_config(None, SMALL), backend="wgpu", adapter=index, quick=True,
                        sections=("phases",), repeats=1, warmup=0, echo=lambda s: None)
    (entry,) = payload["targets"]
    assert entry["target"].startswith("wgpu:") and entry["phases"]["timings"]["train_step"]["median_ms"] > 0
    from energetic_wgpu.benchmarking.ops import make_timed_wgpu_backend

    _check_ops(bench_ops(make_timed_wgpu_backend(int(index)), "quick", repeats=1, warmup=0, copy_bytes=1 << 20))
