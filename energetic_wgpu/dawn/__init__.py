"""Dawn/Tint verification: the same WGSL files and dispatch plans run in headless Chromium.

The wgpu backend's dispatches (recorded by :mod:`energetic_wgpu.dawn.plan` from a real
:class:`WgpuBackend` run) are replayed by ``energetic_wgpu/web/runner.js`` with WebGPU in
Chromium (Dawn, Tint, SwiftShader when there is no GPU) and compared with the NumPy backend
at the parity tolerance of docs/definitions.md: ``max|a-b| <= 1e-5 * max(1, max|ref|)``.

Entry point for the CLI (``energetic-wgpu check --dawn``)::

    rows = energetic_wgpu.dawn.check()                # list of dicts
    print(energetic_wgpu.dawn.format_table(rows))
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np

from .harness import DawnError, DawnUnavailable, find_chromium, run_job
from .plan import PlanRecorder, decode_read, kernel_table, record_plan

__all__ = [
    "check",
    "format_table",
    "to_check_results",
    "run_cases",
    "compile_items",
    "compile_errors",
    "format_messages",
    "DawnError",
    "DawnUnavailable",
    "find_chromium",
    "run_job",
    "record_plan",
    "PlanRecorder",
    "TOLERANCE",
]

TOLERANCE = 1e-5


def compile_items(names: Iterable[str] | None = None, overrides: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One compile check per KernelSpec (module + pipeline with the spec's constants)."""
    from ..backends.webgpu.kernels import KERNELS

    table = {n: KERNELS[n].to_dict() for n in (sorted(KERNELS) if names is None else names)}
    items = []
    for spec in table.values():
        item = dict(spec)
        if overrides:
            item["overrides"] = overrides
        items.append(item)
    return items


def format_messages(messages: list[dict[str, Any]]) -> str:
    """Tint messages as ``type at file:line:col (concatenated line L:C): message``."""
    return "\n".join(
        f"Tint {m['type']} at {m['file']}:{m['file_line']}:{m['column']} "
        f"(module line {m['line']}:{m['column']}): {m['message']}"
        for m in messages
    )


def compile_errors(item_result: dict[str, Any]) -> str | None:
    """The failure text of one compile check, or None when the kernel compiled and built."""
    errs = [m for m in item_result.get("messages", []) if m.get("type") == "error"]
    parts = []
    if errs:
        parts.append(format_messages(errs))
    if item_result.get("module_error"):
        parts.append(f"createShaderModule: {item_result['module_error']}")
    if item_result.get("pipeline_error"):
        parts.append(f"createComputePipeline: {item_result['pipeline_error']}")
    return "\n".join(parts) if parts else None


def _max_error(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    if ref.size == 0:
        return 0.0, TOLERANCE
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    err = float(np.max(np.abs(g - r))) if np.all(np.isfinite(g)) else float("inf")
    tol = TOLERANCE * max(1.0, float(np.max(np.abs(r))))
    return err, tol


def run_cases(
    cases: Iterable[Any] | None = None,
    *,
    include_compile: bool = True,
    extra_compile: list[dict[str, Any]] | None = None,
    adapter: Any = None,
    timeout: float = 180.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Record every case on wgpu, replay all plans in ONE Chromium launch, compare with NumPy.

    Returns {"rows": [...], "compile": [...], "adapter": {...}, "seconds": float, "raw": page result}.
    Each row: op, status ("pass" / "fail" / "not on wgpu yet" / "error"), max_error (worst
    ratio-free absolute error over the outputs), tolerance, passed (bool or None), detail
    (per-output text, Tint messages, page errors).
    """
    from ..backends.numpy_backend import NumpyBackend
    from ..backends.webgpu import WgpuBackend
    from ..parity_cases import CASES

    cases = list(CASES if cases is None else cases)
    t0 = time.monotonic()
    ref_backend = NumpyBackend()
    rows: list[dict[str, Any]] = []
    plans: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Any, dict[str, np.ndarray], dict[str, np.ndarray]]] = []
    for case in cases:
        row: dict[str, Any] = {"op": case.name, "status": None, "max_error": None, "tolerance": None,
                               "passed": None, "detail": ""}
        rows.append(row)
        try:
            ref_out = case.run(ref_backend, case.make(seed))
            expected = {k: np.asarray(ref_backend.to_numpy(v)) for k, v in ref_out.items()}
        except Exception as exc:
            row.update(status="error", passed=False, detail=f"NumPy reference failed: {type(exc).__name__}: {exc}")
            continue
        backend = WgpuBackend(adapter=adapter)
        try:
            plan, wgpu_out = record_plan(backend, case.name, lambda b, c=case: c.run(b, c.make(seed)))
        except NotImplementedError as exc:
            row.update(status="not on wgpu yet", detail=str(exc))
            continue
        except Exception as exc:
            row.update(status="error", passed=False, detail=f"wgpu run failed: {type(exc).__name__}: {exc}")
            continue
        plans.append(plan)
        pending.append((row, plan, expected, wgpu_out))

    job = {"plans": plans, "compile": (compile_items() if include_compile else []) + list(extra_compile or [])}
    raw = run_job(job, timeout=timeout)
    results = {p["name"]: p for p in raw.get("plans", [])}
    for row, plan, expected, wgpu_out in pending:
        res = results.get(plan["name"])
        if res is None:
            row.update(status="error", passed=False, detail="the page returned no result for this plan")
            continue
        _compare(row, plan, res, expected, wgpu_out, {c.name: c for c in cases}[plan["name"]].exact)
    return {"rows": rows, "compile": raw.get("compile", []), "adapter": raw.get("adapter"),
            "seconds": time.monotonic() - t0, "raw": raw}


def _compare(row: dict[str, Any], plan: dict[str, Any], res: dict[str, Any], expected: dict[str, np.ndarray],
             wgpu_out: dict[str, np.ndarray], exact: tuple[str, ...]) -> None:
    detail: list[str] = []
    ok = True
    worst = 0.0
    worst_tol = TOLERANCE
    if res.get("messages"):
        errs = [m for m in res["messages"] if m.get("type") == "error"]
        if errs:
            ok = False
        detail.append(format_messages(res["messages"]))
    for pe in res.get("pipeline_errors", []):
        ok = False
        detail.append(f"pipeline {pe['kernel']}: {pe['error']}")
    for e in res.get("errors", []):
        ok = False
        detail.append(f"WebGPU: {e}")
    for out in plan["outputs"]:
        name = out["name"]
        ref = np.asarray(expected[name])
        if out["read"] is None:
            got = np.zeros(out["shape"], dtype=ref.dtype)
        else:
            data = res.get("reads", {}).get(str(out["read"]))
            if data is None:
                ok = False
                detail.append(f"{name}: no readback from the page")
                continue
            got = decode_read(data, out["shape"], out["dtype"])
        if tuple(got.shape) != tuple(ref.shape):
            ok = False
            detail.append(f"{name}: shape {tuple(got.shape)} != NumPy's {tuple(ref.shape)}")
            continue
        if name in exact or ref.dtype == np.bool_:
            bad = int(np.count_nonzero(got.astype(ref.dtype) != ref))
            if bad:
                ok = False
                detail.append(f"{name}: {bad} elements differ (exact comparison)")
            continue
        err, tol = _max_error(got, ref)
        werr, _ = _max_error(wgpu_out[name], ref)
        if err / tol > worst / worst_tol:
            worst, worst_tol = err, tol
        if not err <= tol:
            ok = False
            detail.append(f"{name}: max|dawn-numpy| = {err:.3g} > {tol:.3g} (wgpu: {werr:.3g})")
    row.update(status="pass" if ok else "fail", passed=ok, max_error=worst, tolerance=worst_tol,
               detail="\n".join(detail))


def check(
    ops: Iterable[str] | None = None,
    *,
    adapter: Any = None,
    timeout: float = 180.0,
    include_compile: bool = True,
) -> list[dict[str, Any]]:
    """Parity of every op under Dawn/Tint (headless Chromium) against NumPy.

    Args:
        ops: case names (or prefixes, e.g. "energy_scatter") to run; all when None.
        adapter: the wgpu adapter used to record the plans (as for WgpuBackend).
        timeout: seconds to wait for the browser.
        include_compile: also compile every KernelSpec under Tint (one row per kernel,
            op = "compile:<kernel>").

    Returns:
        rows: dicts with keys op, max_error (float or None), tolerance, passed (True / False /
        None for "not on wgpu yet"), status, detail.

    Raises:
        DawnUnavailable: no Chromium or no WebGPU in it. DawnError: the browser run failed.
    """
    from ..parity_cases import CASES

    cases = CASES
    if ops is not None:
        wanted = list(ops)
        cases = [c for c in CASES if any(c.name == w or c.name.startswith(w) for w in wanted)]
    out = run_cases(cases, include_compile=include_compile, adapter=adapter, timeout=timeout)
    rows = list(out["rows"])
    for item in out["compile"]:
        err = compile_errors(item)
        rows.append({"op": f"compile:{item['name']}", "status": "pass" if err is None else "fail",
                     "max_error": None, "tolerance": None, "passed": err is None, "detail": err or ""})
    return rows


def to_check_results(rows: list[dict[str, Any]], target: str = "dawn") -> list[Any]:
    """:func:`check` rows as :class:`energetic_wgpu.check.CheckResult` (the row schema that
    ``check --json`` and ``check --dawn --json`` share)."""
    from ..check import CheckResult

    return [
        CheckResult(op=r["op"], target=target, ok=r["status"] == "pass", max_error=r.get("max_error"),
                    tolerance=r.get("tolerance"), reason=r.get("detail") or "", status=r["status"])
        for r in rows
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`check` rows (op, max error, pass)."""
    w = max([len("op")] + [len(r["op"]) for r in rows])
    lines = [f"{'op':<{w}}  {'max error':>10}  {'tolerance':>10}  pass"]
    for r in rows:
        me = "-" if r.get("max_error") is None else f"{r['max_error']:.3g}"
        tol = "-" if r.get("tolerance") is None else f"{r['tolerance']:.3g}"
        p = {True: "yes", False: "NO", None: "-"}[r.get("passed")]
        st = "" if r["status"] in ("pass", "fail") else f"  ({r['status']})"
        lines.append(f"{r['op']:<{w}}  {me:>10}  {tol:>10}  {p}{st}")
        if r.get("passed") is False and r.get("detail"):
            lines.extend("    " + ln for ln in r["detail"].splitlines())
    return "\n".join(lines)
