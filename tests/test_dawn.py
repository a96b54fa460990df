"""The same WGSL files and dispatch plans under a second WebGPU implementation: Chromium's
Dawn with the Tint compiler (SwiftShader when there is no GPU), compared with NumPy.

Every op case (energetic_wgpu/parity_cases.py, the table `energetic-wgpu check` also runs;
re-exported by energetic_wgpu/dawn/cases.py) is recorded once on the wgpu backend and all
plans are replayed in ONE headless Chromium launch (module fixture). Skipped with the reason
when Chromium or WebGPU in it is unavailable.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytestmark = pytest.mark.dawn

dawn = pytest.importorskip("energetic_wgpu.dawn")
from energetic_wgpu.dawn import cases as dawn_cases  # noqa: E402
from energetic_wgpu.dawn.harness import DawnUnavailable, find_chromium  # noqa: E402

try:
    import energetic_wgpu.backends.webgpu  # noqa: F401  (registers every kernel)
    from energetic_wgpu.backends.webgpu.kernels import KERNELS

    KERNEL_NAMES = sorted(KERNELS)
    WGPU_ERROR = None
except Exception as exc:  # pragma: no cover - depends on the environment
    KERNEL_NAMES = []
    WGPU_ERROR = f"{type(exc).__name__}: {exc}"

CASE_NAMES = [c.name for c in dawn_cases.CASES]

# A deliberately broken shader: an unresolved identifier on a known line/column.
BROKEN_FILE = "elementwise.wgsl"
BROKEN_NAME = "no_such_value"

# A barrier in non-uniform control flow: Tint's uniformity analysis must reject it.
NONUNIFORM = """
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn bad_barrier(@builtin(local_invocation_id) lid: vec3<u32>) {
    if (out[lid.x] > 0.0) {
        workgroupBarrier();
    }
    out[lid.x] = 1.0;
}
"""


def _broken_source() -> tuple[str, int, int]:
    from energetic_wgpu.wgsl import shader_source

    text = shader_source(BROKEN_FILE)
    lines = text.split("\n")
    for i, ln in enumerate(lines):
        if "out[j] = a[j] + b[j];" in ln:
            col = ln.index("b[j]") + 1
            lines[i] = ln.replace("b[j]", BROKEN_NAME)
            return "\n".join(lines), i + 1, col
    raise AssertionError(f"{BROKEN_FILE} no longer has the line this test breaks")


@pytest.fixture(scope="module")
def dawn_run():
    if WGPU_ERROR:
        pytest.skip(f"wgpu backend unavailable (plans are recorded on it): {WGPU_ERROR}")
    if find_chromium() is None:
        pytest.skip("Chromium not found (apt-get install -y chromium, or set $ENERGETIC_CHROMIUM)")
    broken, line, col = _broken_source()
    extra = [
        {"name": "broken:add", "sources": ["common.wgsl", BROKEN_FILE], "entry_point": "add",
         "bindings": ["uniform", "read", "read", "read_write"], "constants": {"WG": 64},
         "overrides": {BROKEN_FILE: broken}},
        {"name": "nonuniform:barrier", "sources": ["nonuniform.wgsl"], "entry_point": "bad_barrier",
         "bindings": ["read_write"], "constants": {}, "overrides": {"nonuniform.wgsl": NONUNIFORM}},
    ]
    try:
        out = dawn.run_cases(include_compile=True, extra_compile=extra, timeout=150)
    except DawnUnavailable as exc:
        pytest.skip(f"WebGPU unavailable in Chromium: {exc}")
    out["broken_at"] = (line, col)
    out["by_case"] = {r["op"]: r for r in out["rows"]}
    out["by_compile"] = {c["name"]: c for c in out["compile"]}
    return out


def test_adapter_is_dawn(dawn_run):
    a = dawn_run["adapter"]
    assert a is not None
    # informative: SwiftShader here; a GPU adapter elsewhere
    print("Dawn adapter:", a)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_parity_with_numpy_under_dawn(dawn_run, name):
    row = dawn_run["by_case"][name]
    # every op is implemented on wgpu: a case that is "not on wgpu yet" is a regression, not a skip
    assert row["passed"], f"{name} under Dawn/Tint: {row['status']}\n{row['detail']}"


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_every_kernel_compiles_and_builds_under_tint(dawn_run, name):
    item = dawn_run["by_compile"].get(name)
    if item is None:
        pytest.skip(f"kernel {name} was registered after the compile job was built")
    err = dawn.compile_errors(item)
    assert err is None, f"Tint rejected kernel {name}:\n{err}"


def test_every_shader_file_is_covered_by_a_kernel():
    from energetic_wgpu.wgsl import shader_names

    used = {s for k in KERNELS.values() for s in k.sources}
    assert set(shader_names()) <= used, f"shader files no KernelSpec builds: {set(shader_names()) - used}"


def test_tint_messages_carry_line_and_column(dawn_run):
    item = dawn_run["by_compile"]["broken:add"]
    err = dawn.compile_errors(item)
    assert err is not None, "the broken shader compiled"
    line, col = dawn_run["broken_at"]
    assert f"{BROKEN_FILE}:{line}:{col}" in err, err
    assert BROKEN_NAME in err, err
    assert re.search(r"module line \d+:\d+", err), err


def test_tint_uniformity_analysis_rejects_barrier_in_nonuniform_flow(dawn_run):
    err = dawn.compile_errors(dawn_run["by_compile"]["nonuniform:barrier"])
    assert err is not None and "uniform" in err.lower(), err


def test_batch_zero_plans_have_no_batched_dispatches(dawn_run):
    for name in CASE_NAMES:
        if not name.endswith("_b0"):
            continue
        row = dawn_run["by_case"][name]
        assert row["passed"], row["detail"]


def test_plans_really_dispatch():
    """A plan is data recorded from the Python runtime: it holds the kernel table and the dispatches."""
    from energetic_wgpu.backends.webgpu import WgpuBackend

    case = next(c for c in dawn_cases.CASES if c.name == "energy_scatter_b33")
    plan, outs = dawn.record_plan(WgpuBackend(), case.name, lambda b: case.run(b, case.make(0)))
    ops = [e["op"] for e in plan["events"]]
    assert "dispatch" in ops and "read" in ops and "write" in ops
    kernels = {e["kernel"] for e in plan["events"] if e["op"] == "dispatch"}
    assert kernels <= set(plan["kernels"]) and kernels
    for k in kernels:
        assert plan["kernels"][k] == KERNELS[k].to_dict()
    assert outs["next"].shape == (33, len(dawn_cases.DEGREES))
    b0 = next(c for c in dawn_cases.CASES if c.name == "energy_scatter_b0")
    plan0, outs0 = dawn.record_plan(WgpuBackend(), b0.name, lambda b: b0.run(b, b0.make(0)))
    assert outs0["next"].shape == (0, len(dawn_cases.DEGREES))
    assert plan0["outputs"][0]["read"] is None


def test_broken_plan_reports_tint_message(dawn_run):
    """A plan replayed with a broken shader fails with Tint's message in the failure text."""
    from energetic_wgpu.backends.webgpu import WgpuBackend

    case = next(c for c in dawn_cases.CASES if c.name == "add")
    plan, _ = dawn.record_plan(WgpuBackend(), case.name, lambda b: case.run(b, case.make(0)))
    broken, line, col = _broken_source()
    plan["overrides"] = {BROKEN_FILE: broken}
    res = dawn.run_job({"plans": [plan]}, timeout=60)["plans"][0]
    text = dawn.format_messages(res["messages"]) + "\n".join(e["error"] for e in res["pipeline_errors"])
    assert f"{BROKEN_FILE}:{line}:{col}" in text and BROKEN_NAME in text, text
    assert res["pipeline_errors"], res


def test_check_table_format():
    rows = [
        {"op": "edge_logits", "max_error": 1e-7, "tolerance": 1e-5, "passed": True, "status": "pass", "detail": ""},
        {"op": "mse_b1", "max_error": None, "tolerance": None, "passed": None, "status": "not on wgpu yet",
         "detail": "x"},
    ]
    text = dawn.format_table(rows)
    assert "edge_logits" in text and "not on wgpu yet" in text and "yes" in text


def test_dawn_results_match_wgpu_closely(dawn_run):
    """Not a requirement beyond the parity tolerance (docs/definitions.md), but report the worst case across implementations."""
    worst = max((r["max_error"] or 0.0) / (r["tolerance"] or 1.0) for r in dawn_run["rows"] if r["passed"])
    assert np.isfinite(worst) and worst <= 1.0


def test_browser_demo_loads_headless(tmp_path):
    """examples/browser/index.html routes energy on a lattice under Dawn and matches NumPy."""
    if WGPU_ERROR:
        pytest.skip(f"wgpu backend unavailable: {WGPU_ERROR}")
    if find_chromium() is None:
        pytest.skip("Chromium not found")
    from energetic_wgpu.dawn.harness import launch_and_wait
    from energetic_wgpu.dawn.serve_demo import build_demo

    build_demo(tmp_path, layers=5, nodes=8, steps=5)
    summary, stderr, _ = launch_and_wait(tmp_path, "index.html?report=1", timeout=60, done_paths=("summary",))
    assert summary["ok"], f"{summary['errors']}\n{stderr[-2000:]}"
    last = summary["layer_energy"]["step5"]
    assert abs(sum(last) - 8.0) < 1e-4 and abs(last[-1] - 8.0) < 1e-4  # all energy collected in the last layer
    assert summary["max_abs_diff"] <= 1e-5 * 8


def test_cli_check_dawn_prints_the_parity_table(dawn_run, capsys):
    """`energetic-wgpu check --dawn` runs the same table under Chromium and exits 0 when all pass."""
    from energetic_wgpu.cli import main

    rc = main(["check", "--dawn", "--json"])
    out = capsys.readouterr().out
    import json

    report = json.loads(out)
    ops = [r["op"] for r in report["results"]]
    assert "compile:edge_probs" in ops
    # the same op rows as `energetic-wgpu check` (the shared parity table), then the compile rows
    assert [o for o in ops if not o.startswith("compile:")] == CASE_NAMES
    assert "router_steps3_b33" in CASE_NAMES
    assert rc == (0 if report["ok"] else 1)
    assert report["ok"], [r for r in report["results"] if r["status"] != "pass"]
