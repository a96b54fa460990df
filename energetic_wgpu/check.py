"""CPU↔GPU parity suite shipped with the library (``energetic-wgpu check``).

Runs every backend op, the losses, AdamW and a multi-step router forward/backward on a
small irregular graph (empty segments, a 1,000-edge segment, self-loops, duplicate edges),
once with the NumPy reference and twice on each target (every wgpu adapter), and reports
per op and target: the largest error against NumPy, the tolerance
``1e-5 * max(1, max|ref|)`` (SPEC §6, per output array), whether the two runs were
bit-identical, and PASS/FAIL. An op that raises is a FAIL with the reason.

Reusable pieces for other front ends (e.g. a browser/Dawn runner): :func:`make_inputs`,
:data:`OPS` (name → function ``(backend, inputs) -> {output name: numpy array}``),
:func:`check_target` and :func:`format_table`.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from .backends import Backend
from .graph import Graph

__all__ = ["make_inputs", "OPS", "CheckResult", "check_target", "list_targets", "format_table", "run"]

RTOL = 1e-5

OpFn = Callable[[Backend, dict[str, Any]], dict[str, np.ndarray]]


def make_inputs(seed: int = 0, batch: int = 33, dim: int = 8) -> dict[str, Any]:
    """Deterministic float32 inputs on an irregular graph (N = 300 nodes, ~2,400 edges):
    out-degrees 0..12, one segment of 1,000 edges, self-loops, duplicate edges; ``batch``
    rows with some inactive nodes."""
    rng = np.random.default_rng(seed)
    n = 300
    deg = rng.integers(0, 13, size=n)
    deg[rng.choice(n, 40, replace=False)] = 0  # sinks / empty segments
    deg[7] = 1000  # a huge segment
    src = np.repeat(np.arange(n), deg)
    dst = rng.integers(0, n, size=src.size)
    dst[:5] = src[:5]  # self-loops
    dst[5:10] = dst[0]  # duplicates
    graph = Graph.from_edges(src, dst, n)
    e = graph.num_edges
    f32 = np.float32
    inputs: dict[str, Any] = {
        "graph": graph,
        "q": (rng.standard_normal((n, dim)) / np.sqrt(dim)).astype(f32),
        "k": (rng.standard_normal((n, dim)) / np.sqrt(dim)).astype(f32),
        "bias": (0.1 * rng.standard_normal(e)).astype(f32),
        "energies": rng.random((batch, n), dtype=f32),
        "active": rng.random((batch, n)) > 0.1,
        "logits": rng.standard_normal(e).astype(f32) * 3,
        "grad_next": rng.standard_normal((batch, n)).astype(f32),
        "grad_pi": rng.standard_normal(e).astype(f32),
        "target": rng.random((batch, n), dtype=f32),
        "mask": rng.random((batch, n)) > 0.3,
        "tau": 0.7,
        "alpha": 0.9,
        "top_k": 3,
    }
    # a valid pi (softmax with top-k) and next energies, computed in float64 so every
    # backend starts each op from the same inputs
    from .backends.numpy_backend import NumpyBackend

    ref = NumpyBackend("float64")
    pi = ref.segment_softmax(graph, inputs["logits"].astype(np.float64), inputs["tau"], inputs["top_k"])
    inputs["pi"] = pi.astype(f32)
    nxt = ref.energy_scatter(graph, inputs["energies"].astype(np.float64), pi, inputs["alpha"], inputs["active"], True)
    inputs["next"] = nxt.astype(f32)
    return inputs


def _np(be: Backend, *arrays: Any) -> list[np.ndarray]:
    return [np.asarray(be.to_numpy(a)) for a in arrays]


def _op_edge_logits(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    (out,) = _np(be, be.edge_logits(x["graph"], be.asarray(x["q"]), be.asarray(x["k"]), be.asarray(x["bias"])))
    return {"logits": out}


def _softmax(top_k: int) -> OpFn:
    def op(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
        (out,) = _np(be, be.segment_softmax(x["graph"], be.asarray(x["logits"]), x["tau"], top_k))
        return {"pi": out}

    return op


def _op_energy_scatter(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    out = be.energy_scatter(
        x["graph"], be.asarray(x["energies"]), be.asarray(x["pi"]), x["alpha"], be.asarray(x["active"]), True
    )
    return {"next": _np(be, out)[0]}


def _op_edge_flow(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    out = be.edge_flow(x["graph"], be.asarray(x["energies"]), be.asarray(x["pi"]), x["alpha"], be.asarray(x["active"]))
    return {"flow": _np(be, out)[0]}


def _op_step_metrics(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    out = be.step_metrics(
        x["graph"], be.asarray(x["energies"]), be.asarray(x["next"]), be.asarray(x["pi"]), x["alpha"],
        be.asarray(x["active"]),
    )
    return {"metrics": _np(be, out)[0]}


def _op_energy_scatter_backward(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    ge, gp = be.energy_scatter_backward(
        x["graph"], be.asarray(x["energies"]), be.asarray(x["pi"]), be.asarray(x["grad_next"]), x["alpha"],
        be.asarray(x["active"]), True,
    )
    a, b = _np(be, ge, gp)
    return {"grad_energies": a, "grad_pi": b}


def _op_segment_softmax_backward(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    out = be.segment_softmax_backward(x["graph"], be.asarray(x["pi"]), be.asarray(x["grad_pi"]), x["tau"])
    return {"grad_logits": _np(be, out)[0]}


def _op_edge_logits_backward(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    gq, gk, gb = be.edge_logits_backward(x["graph"], be.asarray(x["q"]), be.asarray(x["k"]), be.asarray(x["grad_pi"]))
    a, b, c = _np(be, gq, gk, gb)
    return {"grad_q": a, "grad_k": b, "grad_bias": c}


def _op_mse(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    loss, grad = be.mse(be.asarray(x["next"]), be.asarray(x["target"]), be.asarray(x["mask"]))
    a, b = _np(be, loss, grad)
    return {"loss": a, "grad": b}


def _op_cross_entropy(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    pred = x["next"] * (x["mask"])  # zeros exercise the eps clamp
    loss, grad = be.cross_entropy(be.asarray(pred.astype(np.float32)), be.asarray(x["target"]), 1e-12)
    a, b = _np(be, loss, grad)
    return {"loss": a, "grad": b}


def _op_entropy_regularization(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    loss, grad = be.entropy_regularization(x["graph"], be.asarray(x["pi"]), 0.1)
    a, b = _np(be, loss, grad)
    return {"loss": a, "grad_pi": b}


def _op_adamw_step(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    names = ("q", "k", "bias")
    params = [be.asarray(x[n].copy()) for n in names]
    m = [be.zeros(tuple(p.shape)) for p in params]
    v = [be.zeros(tuple(p.shape)) for p in params]
    t = be.zeros((1,))
    rng = np.random.default_rng(1)
    norms = []
    for i in range(3):
        grads = [be.asarray(rng.standard_normal(x[n].shape).astype(np.float32)) for n in names]
        norms.append(be.adamw_step(params, grads, m, v, t, 0.01, 0.8, 0.99, 1e-8, 0.01, 5.0 if i else None))
    out: dict[str, np.ndarray] = {}
    for n, p, a, b in zip(names, params, m, v):
        out[n], out[f"m_{n}"], out[f"v_{n}"] = _np(be, p, a, b)
    out["t"] = _np(be, t)[0]
    out["norms"] = np.concatenate(_np(be, *norms))
    return out


def _op_router(be: Backend, x: dict[str, Any]) -> dict[str, np.ndarray]:
    from .router import Router, RouterParams

    params = RouterParams(x["q"], x["k"], x["bias"], tau=x["tau"], alpha=x["alpha"], top_k=x["top_k"])
    router = Router(x["graph"], params, be)
    out = router.forward(x["energies"], active=x["active"], steps=3, retain_sinks=True)
    grads = router.backward(out, x["grad_next"])
    names = ("next", "pi", "metrics", "grad_q", "grad_k", "grad_bias", "grad_energies")
    arrays = _np(be, out.next_energies, out.edge_pi, out.metrics_array, grads.q, grads.k, grads.bias, grads.energies)
    return dict(zip(names, arrays))


#: op name -> function (backend, inputs) -> {output name: numpy array}
OPS: dict[str, OpFn] = {
    "edge_logits": _op_edge_logits,
    "segment_softmax": _softmax(0),
    "segment_softmax[top_k=3]": _softmax(3),
    "energy_scatter": _op_energy_scatter,
    "edge_flow": _op_edge_flow,
    "step_metrics": _op_step_metrics,
    "energy_scatter_backward": _op_energy_scatter_backward,
    "segment_softmax_backward": _op_segment_softmax_backward,
    "edge_logits_backward": _op_edge_logits_backward,
    "mse": _op_mse,
    "cross_entropy": _op_cross_entropy,
    "entropy_regularization": _op_entropy_regularization,
    "adamw_step": _op_adamw_step,
    "router[steps=3]": _op_router,
}


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


def _compare(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], rtol: float) -> tuple[bool, float, float, str, str]:
    worst_ratio, worst = -1.0, ("", 0.0, 0.0)
    for name, r in ref.items():
        if name not in got:
            return False, float("nan"), 0.0, name, f"output {name} missing"
        g = got[name]
        if g.shape != r.shape:
            return False, float("nan"), 0.0, name, f"{name}: shape {g.shape} != reference {r.shape}"
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
    inputs: dict[str, Any] | None = None,
    ops: dict[str, OpFn] | None = None,
    rtol: float = RTOL,
) -> list[CheckResult]:
    """Run each op on ``reference`` once and on ``target`` twice; one CheckResult per op."""
    inputs = make_inputs() if inputs is None else inputs
    results = []
    for name, fn in (ops or OPS).items():
        try:
            ref = fn(reference, inputs)
        except Exception as exc:  # the reference itself is broken: report, don't crash
            results.append(CheckResult(name, label, False, reason=f"reference failed: {type(exc).__name__}: {exc}"))
            continue
        try:
            first = fn(target, inputs)
            second = fn(target, inputs)
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
        ok, err, tol, worst, reason = _compare(first, ref, rtol)
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


def run(adapter: str | int | None = None, as_json: bool = False, include_numpy: bool = False, echo: Callable[[str], None] = print) -> int:
    """Run the suite; print a table (or JSON); return 0 when every check passed, 1 otherwise
    (also when there is no target at all)."""
    from .backends.numpy_backend import NumpyBackend

    targets, notes = list_targets(adapter, include_numpy)
    inputs = make_inputs()
    results: list[CheckResult] = []
    for label, factory in targets:
        reference = NumpyBackend("float64") if label.startswith("numpy") else NumpyBackend("float32")
        try:
            be = factory()
        except Exception as exc:
            results.append(CheckResult("(start backend)", label, False, reason=f"{type(exc).__name__}: {exc}"))
            continue
        results.extend(check_target(be, label, reference, inputs))
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        echo(json.dumps({"ok": ok, "notes": notes, "results": [asdict(r) for r in results]}, indent=1))
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
