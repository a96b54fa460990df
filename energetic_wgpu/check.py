"""CPU↔GPU parity suite shipped with the library (``energetic-wgpu check``).

Runs every case of the shared parity table (:data:`energetic_wgpu.parity_cases.CASES`, the
same table ``check --dawn`` replays under Chromium): every forward/backward op, the losses,
AdamW (plain and packed) and a multi-step Router forward/backward, on a small graph with
out-degrees 0, 1, k, k+1, 64, 65 and 300, self-loops and batches 0, 1 and 33. Each case runs
once with the NumPy reference and twice on each target (every wgpu adapter), and the report
gives per case and target: the largest error against NumPy, the tolerance
``1e-5 * max(1, max|ref|)`` (docs/definitions.md, "Parity"; per output array; bool/int outputs and the case's
``exact`` outputs must match exactly), whether the two runs were bit-identical, and
PASS/FAIL. A case that raises is a FAIL with the reason.

Reusable pieces for other front ends: :func:`check_target`, :func:`list_targets` and
:func:`format_table`. ``check --json`` and ``check --dawn --json`` print the same report,
``{"ok": bool, "notes": [str], "results": [row]}``, every row with the keys of
:data:`ROW_KEYS` (:func:`json_report`).
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from .backends import Backend
from .parity_cases import CASES, Case

__all__ = ["CASES", "CheckResult", "ROW_KEYS", "check_target", "list_targets", "format_table", "json_report", "run"]

RTOL = 1e-5

log = logging.getLogger("energetic_wgpu")

#: keys of one JSON result row, the same for ``check --json`` and ``check --dawn --json``:
#: op (case name), target (where it ran), status ("pass", "fail", or a reason it did not run,
#: e.g. "not on wgpu yet"), ok (bool), max_error and tolerance (float or null), worst_output
#: (the output array with the largest error relative to its tolerance, or null), bit_stable
#: (two runs bit-identical; null where not measured), reason (why it failed, "" when it passed)
ROW_KEYS = ("op", "target", "status", "ok", "max_error", "tolerance", "worst_output", "bit_stable", "reason")


def _run_case(be: Backend, case: Case, seed: int) -> dict[str, np.ndarray]:
    out = case.run(be, case.make(seed))
    return {k: np.asarray(be.to_numpy(v)) for k, v in out.items()}


@dataclass
class CheckResult:
    """One row of the report."""

    op: str
    target: str
    ok: bool
    max_error: float | None = None
    tolerance: float | None = None
    worst_output: str | None = None
    bit_stable: bool | None = None
    reason: str = ""
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = "pass" if self.ok else "fail"

    def to_row(self) -> dict[str, Any]:
        """This result as a JSON row with the keys of :data:`ROW_KEYS`."""
        return {k: getattr(self, k) for k in ROW_KEYS}


def _compare(
    got: dict[str, np.ndarray], ref: dict[str, np.ndarray], rtol: float, exact: tuple[str, ...] = ()
) -> tuple[bool, float, float, str, str]:
    worst_ratio, worst = -1.0, ("", 0.0, rtol)
    for name, r in ref.items():
        if name not in got:
            return False, float("nan"), 0.0, name, f"output {name} missing"
        g = got[name]
        if g.shape != r.shape:
            return False, float("nan"), 0.0, name, f"{name}: shape {g.shape} != reference {r.shape}"
        if name in exact or not np.issubdtype(r.dtype, np.floating):  # bool/int: exact
            bad = int(np.count_nonzero(g.astype(r.dtype) != r))
            if bad:
                return False, float("nan"), 0.0, name, f"{name}: {bad} elements differ (exact comparison)"
            continue
        if r.size == 0:
            continue
        tol = rtol * max(1.0, float(np.max(np.abs(r.astype(np.float64)))))
        diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
        err = float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")
        if err / tol > worst_ratio:
            worst_ratio, worst = err / tol, (name, err, tol)
    name, err, tol = worst
    ok = worst_ratio <= 1.0
    return ok, err, tol, name, "" if ok else f"{name}: max|err| {err:.3g} > tol {tol:.3g}"


def check_target(
    target: Backend,
    label: str,
    reference: Backend,
    cases: Iterable[Case] | None = None,
    rtol: float = RTOL,
    seed: int = 0,
) -> list[CheckResult]:
    """Run each case on ``reference`` once and on ``target`` twice; one CheckResult per case."""
    results = []
    for case in CASES if cases is None else cases:
        name = case.name
        try:
            ref = _run_case(reference, case, seed)
        except Exception as exc:  # the reference itself is broken: report, don't crash
            results.append(CheckResult(name, label, False, reason=f"reference failed: {type(exc).__name__}: {exc}"))
            continue
        try:
            first = _run_case(target, case, seed)
            second = _run_case(target, case, seed)
        except NotImplementedError as exc:
            results.append(CheckResult(name, label, False, reason=f"not implemented: {exc}".rstrip(": ")))
            continue
        except Exception as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            where = traceback.extract_tb(exc.__traceback__)[-1]
            results.append(
                CheckResult(name, label, False, reason=f"{type(exc).__name__}: {line} ({where.name}:{where.lineno})")
            )
            continue
        stable = first.keys() == second.keys() and all(
            first[k].shape == second[k].shape and first[k].tobytes() == second[k].tobytes() for k in first
        )
        ok, err, tol, worst, reason = _compare(first, ref, rtol, case.exact)
        if ok and not stable:
            reason = "results differ between two runs (not bit-stable)"
        results.append(CheckResult(name, label, ok and stable, err, tol, worst, stable, reason))
    return results


def list_targets(adapter: str | int | None = None, include_numpy: bool = False) -> tuple[list[tuple[str, Any]], list[str]]:
    """([(label, factory)], [notes]): each wgpu adapter (filtered by ``adapter``: an index or a
    substring of its name/backend type) and, with ``include_numpy``, the NumPy float32 backend
    (checked against the float64 reference). Notes say why wgpu targets are missing."""
    targets: list[tuple[str, Any]] = []
    notes: list[str] = []
    if include_numpy:
        from .backends.numpy_backend import NumpyBackend

        targets.append(("numpy-float32", lambda: NumpyBackend("float32")))
    try:
        from .backends.webgpu import list_adapters  # type: ignore[attr-defined]

        adapters = list_adapters()
    except Exception as exc:
        notes.append(f"wgpu: no adapters ({type(exc).__name__}: {exc})")
        adapters = []
    for a in adapters:
        label = f"wgpu:{a['index']}:{a.get('backend_type', '?')}"
        if adapter is not None:
            key = str(adapter).strip().lower()
            hay = " ".join(str(a.get(k, "")) for k in ("name", "description", "backend_type", "adapter_type")).lower()
            if key.isdigit():  # an index, never a substring ("0" is also in "LLVM 15.0.6")
                if int(key) != a["index"]:
                    continue
            elif key not in hay:
                continue

        def factory(index: int = a["index"]) -> Backend:
            from .backends import get_backend

            return get_backend("wgpu", adapter=index)

        targets.append((label, factory))
    if adapter is not None and not any(t[0].startswith("wgpu") for t in targets) and adapters:
        notes.append(f"no wgpu adapter matches {adapter!r}")
    return targets, notes


def format_table(results: list[CheckResult]) -> str:
    head = ("op", "target", "max error", "tolerance", "bit-stable", "result")
    rows = []
    for r in results:
        rows.append((
            r.op,
            r.target,
            "-" if r.max_error is None else f"{r.max_error:.2e}",
            "-" if r.tolerance is None else f"{r.tolerance:.2e}",
            "-" if r.bit_stable is None else ("yes" if r.bit_stable else "no"),
            "PASS" if r.ok else f"FAIL  {r.reason}",
        ))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def json_report(rows: Iterable[CheckResult], notes: Iterable[str] = ()) -> str:
    """The JSON report of ``check --json`` and ``check --dawn --json``: ``ok`` (every row
    passed and there is at least one), ``notes`` and ``results`` (rows with :data:`ROW_KEYS`)."""
    results = [r.to_row() for r in rows]
    ok = bool(results) and all(r["ok"] for r in results)
    return json.dumps({"ok": ok, "notes": list(notes), "results": results}, indent=1, default=str)


def run(
    adapter: str | int | None = None,
    as_json: bool = False,
    include_numpy: bool = False,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Run the suite; hand a table (or the JSON report) to ``echo`` (default: the
    ``energetic_wgpu`` logger at INFO; the command line passes ``print``); return 0 when every
    check passed, 1 otherwise (also when there is no target at all)."""
    from .backends.numpy_backend import NumpyBackend

    echo = echo or log.info

    targets, notes = list_targets(adapter, include_numpy)
    results: list[CheckResult] = []
    for label, factory in targets:
        reference = NumpyBackend("float64") if label.startswith("numpy") else NumpyBackend("float32")
        try:
            be = factory()
        except Exception as exc:
            results.append(CheckResult("(start backend)", label, False, reason=f"{type(exc).__name__}: {exc}"))
            continue
        results.extend(check_target(be, label, reference))
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        echo(json_report(results, notes))
    else:
        for n in notes:
            echo(n)
        if results:
            echo(format_table(results))
        failed = sum(not r.ok for r in results)
        if not targets:
            echo("check: nothing to check (no wgpu adapter); add --numpy to check the NumPy backend alone")
        else:
            echo(f"check: {len(results) - failed}/{len(results)} passed" + ("" if ok else f", {failed} FAILED"))
    return 0 if ok else 1
