"""Invariants of a runtime refactor: bit-identical outputs, the same work counters, host time.

Records, on every wgpu adapter found (lavapipe Vulkan and llvmpipe OpenGL in CI):

* sha256 of every output of every parity case (``energetic_wgpu.parity_cases.CASES``: the
  forward ops, the backward ops, losses, AdamW, the Router end to end);
* sha256 of the parameters and optimizer moments after 100 ``Router.train_step`` calls on a
  lattice and on the mixed-degree test graph (out-degrees up to 300, an in-degree over 256);
* sha256 of each case's dispatch plan (every buffer creation, write, clear, copy, dispatch with
  its uniform bytes and bindings, submit and readback: what ``check --dawn`` replays in
  Chromium), and with ``--dawn`` the sha256 of Dawn's own readbacks of those plans;
* the work counters per steady-state train step (dispatches, submits, buffers, bind groups...);
* the host time of one train step: encode (median) and encode + submit.

Usage::

    python benchmarks/refactor_invariants.py --out benchmarks/refactor_invariants_before.json
    python benchmarks/refactor_invariants.py --baseline main --rounds 2 --json after.json --markdown

``--baseline REF`` extracts ``git archive REF`` into a temporary folder and records it in the
same run (interleaved with the working tree, ``--rounds`` times each; hashes and counters must
agree between rounds, host times are the median over rounds), then prints the comparison.
Each recording runs in its own process with the tree's folder first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TRAIN_STEPS = 100
COUNTER_KEYS = ("submits", "dispatches", "buffers_created", "bind_groups_created", "pipelines_created",
                "uniform_buffers_created", "bytes_uploaded", "bytes_read_back", "readbacks")


def _sha(arr: Any) -> str:
    import numpy as np

    a = np.ascontiguousarray(arr)
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()[:16]


def _train_hashes(be: Any, graph: Any, batch: int, seed: int) -> dict[str, str]:
    import numpy as np

    from energetic_wgpu.optim import AdamW
    from energetic_wgpu.router import Router, RouterParams

    params = RouterParams.init(graph, 8, top_k=4, seed=seed)
    router = Router(graph, params, be)
    opt = AdamW(router, lr=3e-3, max_grad_norm=1.0, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    en = be.asarray(rng.random((batch, graph.num_nodes), dtype=np.float32))
    tgt = be.asarray((rng.random((batch, graph.num_nodes)) * 0.1).astype(np.float32))
    for _ in range(TRAIN_STEPS):
        res = router.train_step(en, tgt, opt, steps=2, entropy_lambda=0.01)
    out = {"loss": _sha(be.to_numpy(res.loss_array)), "grad_norm": _sha(be.to_numpy(res.grad_norm_array))}
    for name, p in zip(("q", "k", "bias"), router.parameters()):
        out[f"param_{name}"] = _sha(be.to_numpy(p))
    for name in ("exp_avg", "exp_avg_sq"):
        for i, m in enumerate(getattr(opt, name)):
            out[f"{name}_{i}"] = _sha(be.to_numpy(m))
    return out


def baseline_step(be: Any, steps: int = 1) -> Any:
    """``step()``: one ``Router.train_step`` (``steps`` = T) on the benchmark lattice (10 x 1024,
    local 8, jump 2), B = 64, d = 16, top_k = 4, clipped AdamW (as benchmarks/bench_train_step.py)."""
    import numpy as np

    from energetic_wgpu.graph import GraphConfig, build_lattice
    from energetic_wgpu.optim import AdamW
    from energetic_wgpu.router import Router, RouterParams

    graph = build_lattice(GraphConfig(layers=10, nodes_per_layer=1024, local_neighbors=8, jump_neighbors=2))
    router = Router(graph, RouterParams.init(graph, 16, top_k=4, seed=0), be)
    opt = AdamW(router, lr=1e-3, max_grad_norm=1.0)
    rng = np.random.default_rng(0)
    en = np.zeros((64, graph.num_nodes), np.float32)
    en[:, :1024] = rng.random((64, 1024))
    e, t = be.asarray(en), be.asarray((rng.random((64, graph.num_nodes)) * 0.01).astype(np.float32))

    def step() -> None:
        router.train_step(e, t, opt, steps=steps)

    return step


def _step_profile(be: Any, host_repeats: int) -> dict[str, Any]:
    """Counters per steady-state train step and host time on the benchmark lattice."""
    from benchmarks.bench_train_step import _host_overhead

    step = baseline_step(be)
    for _ in range(5):
        step()
    be.synchronize()
    before = be.counters.snapshot()
    for _ in range(5):
        step()
    after = be.counters.snapshot()
    counters = {k: (after[k] - before[k]) / 5 for k in COUNTER_KEYS}
    host = _host_overhead(be, step, host_repeats)
    # the same with wgpu-py's public pass methods instead of the wgpu-native fast path
    rt = be.runtime
    owner, attr = (rt.encoder, "raw") if hasattr(rt, "encoder") else (rt, "_raw_pass_calls")
    saved = getattr(owner, attr)
    setattr(owner, attr, None)
    try:
        public = _host_overhead(be, step, host_repeats)
    finally:
        setattr(owner, attr, saved)
    keys = ("step_ms", "encode_ms", "cpu_ms")
    return {"counters_per_step": counters, "host": {k: host[k] for k in keys},
            "host_public_api": {k: public[k] for k in keys}}


def _plan_hash(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan["events"], sort_keys=True).encode()).hexdigest()[:16]


def record(host_repeats: int, dawn: bool) -> dict[str, Any]:
    """Everything above for the ``energetic_wgpu`` found first on ``sys.path``."""
    import numpy as np

    import energetic_wgpu
    from energetic_wgpu.backends.webgpu import WgpuBackend, list_adapters
    from energetic_wgpu.dawn.plan import record_plan
    from energetic_wgpu.graph import GraphConfig, build_lattice
    from energetic_wgpu.parity_cases import CASES, degree_graph

    result: dict[str, Any] = {"package": str(Path(energetic_wgpu.__file__).parent), "adapters": {}}
    for a in list_adapters():
        key = a["backend_type"].lower()
        be = WgpuBackend(adapter=a["index"])
        cases = {}
        for case in CASES:
            outs = case.run(be, case.make(0))
            cases[case.name] = {k: _sha(be.to_numpy(v)) for k, v in outs.items()}
        train = {
            "lattice_4x256_b16": _train_hashes(be, build_lattice(GraphConfig(layers=4, nodes_per_layer=256)), 16, 1),
            "degree_graph_b33": _train_hashes(be, degree_graph(0), 33, 2),
        }
        plans = {}
        plan_list = []
        fresh = WgpuBackend(adapter=a["index"])  # plans name buffers by creation order: a fresh device
        for case in CASES:
            plan, _ = record_plan(fresh, case.name, lambda b, c=case: c.run(b, c.make(0)))
            plans[case.name] = _plan_hash(plan)
            plan_list.append(plan)
        entry: dict[str, Any] = {"cases": cases, "train": train, "plans": plans}
        entry.update(_step_profile(be, host_repeats))
        if dawn and not result.get("dawn"):
            from energetic_wgpu.dawn import run_job

            raw = run_job({"plans": plan_list, "compile": []}, timeout=600)
            result["dawn"] = {
                p["name"]: hashlib.sha256(json.dumps(p.get("reads", {}), sort_keys=True).encode()).hexdigest()[:16]
                for p in raw.get("plans", [])
            }
        result["adapters"][key] = entry
        del be, fresh
    np.random.seed(0)
    return result


# --------------------------------------------------------------------------- driver


def _run_tree(tree: Path, host_repeats: int, dawn: bool) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(Path(__file__).resolve()), "--record", "--tree", str(tree), "--out", out,
           "--host-repeats", str(host_repeats)] + (["--dawn"] if dawn else [])
    subprocess.run(cmd, check=True)
    data = json.loads(Path(out).read_text())
    os.unlink(out)
    return data


def _archive(ref: str, dest: Path) -> None:
    tar = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    return {prefix.rstrip("/"): d}


def _exact_part(rec: dict[str, Any]) -> dict[str, Any]:
    """Hashes and counters (what must be identical), without host times and paths."""
    out = {"dawn": rec.get("dawn", {})}
    for name, a in rec["adapters"].items():
        out[name] = {k: a[k] for k in ("cases", "train", "plans", "counters_per_step")}
    return _flatten(out)


def _no_dawn(flat: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if not k.startswith("dawn/")}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact parts must agree within and across the two sides; host times as medians."""
    problems = []
    for side, recs in (("before", before), ("after", after)):
        for r in recs[1:]:
            if _no_dawn(_exact_part(r)) != _no_dawn(_exact_part(recs[0])):
                problems.append(f"{side}: rounds differ (not deterministic)")
    eb, ea = _exact_part(before[0]), _exact_part(after[0])
    diff = sorted(k for k in set(eb) | set(ea) if eb.get(k) != ea.get(k))
    problems += [f"differs: {k}: {eb.get(k)} -> {ea.get(k)}" for k in diff]
    rows = []
    for name in before[0]["adapters"]:
        hb = [r["adapters"][name]["host"] for r in before]
        ha = [r["adapters"][name]["host"] for r in after if name in r["adapters"]]
        row = {"adapter": name, "counters_before": before[0]["adapters"][name]["counters_per_step"],
               "counters_after": after[0]["adapters"].get(name, {}).get("counters_per_step")}
        for k in ("encode_ms", "step_ms", "cpu_ms"):
            row[f"{k}_before"] = _median([h[k] for h in hb])
            row[f"{k}_after"] = _median([h[k] for h in ha]) if ha else None
        pub = [r["adapters"][name].get("host_public_api") for r in after if name in r["adapters"]]
        if pub and all(pub):
            row["encode_ms_after_public_api"] = _median([h["encode_ms"] for h in pub])
        rows.append(row)
    n_hashes = sum(1 for k in eb if not k.split("/")[1:2] == ["counters_per_step"])
    return {"identical": not diff, "problems": problems, "hashes_compared": n_hashes, "rows": rows}


def markdown(cmp: dict[str, Any]) -> str:
    lines = [f"{cmp['hashes_compared']} hashes and counters compared: "
             + ("all identical." if cmp["identical"] else "DIFFERENCES: " + "; ".join(cmp["problems"])), ""]
    lines.append("| adapter | dispatches/step | submits/step | buffers, bind groups, uniforms created/step "
                 "| host encode ms (before → after) | encode+submit ms | thread CPU ms | encode ms, public wgpu API |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in cmp["rows"]:
        cb, ca = r["counters_before"], r["counters_after"] or {}

        def pair(k: str) -> str:
            return f"{cb[k]:g}" if ca.get(k) == cb[k] else f"{cb[k]:g} → {ca.get(k)}"

        created = ", ".join(pair(k) for k in ("buffers_created", "bind_groups_created", "uniform_buffers_created"))
        lines.append(
            f"| {r['adapter']} | {pair('dispatches')} | {pair('submits')} | {created} "
            f"| {r['encode_ms_before']:.3f} → {r['encode_ms_after']:.3f} "
            f"| {r['step_ms_before']:.3f} → {r['step_ms_after']:.3f} | {r['cpu_ms_before']:.3f} → {r['cpu_ms_after']:.3f} "
            f"| {r.get('encode_ms_after_public_api', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="(internal) record one tree")
    ap.add_argument("--tree", default=str(REPO), help="source tree to record (first on sys.path)")
    ap.add_argument("--out", default=None, help="write this tree's record (JSON)")
    ap.add_argument("--baseline", default=None, help="git ref to record in the same run and compare with")
    ap.add_argument("--before-json", default=None, help="compare with a saved record instead")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--host-repeats", type=int, default=60)
    ap.add_argument("--dawn", action="store_true", help="also replay the plans in Chromium (Dawn)")
    ap.add_argument("--json", default=None, help="write the comparison (JSON)")
    ap.add_argument("--markdown", action="store_true", help="print the comparison as a markdown table")
    args = ap.parse_args()
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    if args.record:
        sys.path.insert(0, args.tree)
        rec = record(args.host_repeats, args.dawn)
        if not rec["package"].startswith(str(Path(args.tree).resolve())):
            raise SystemExit(f"recorded {rec['package']}, not the tree {args.tree}")
        Path(args.out).write_text(json.dumps(rec, indent=1, sort_keys=True))
        return
    if args.baseline is None and args.before_json is None:
        rec = _run_tree(REPO, args.host_repeats, args.dawn)
        text = json.dumps(rec, indent=1, sort_keys=True)
        Path(args.out).write_text(text) if args.out else print(text)
        return
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="baseline-") as tmp:
        if args.baseline is not None:
            _archive(args.baseline, Path(tmp))
        else:
            before.append(json.loads(Path(args.before_json).read_text()))
        for i in range(args.rounds):
            t0 = time.monotonic()
            if args.baseline is not None:
                before.append(_run_tree(Path(tmp), args.host_repeats, args.dawn and i == 0))
            after.append(_run_tree(REPO, args.host_repeats, args.dawn and i == 0))
            print(f"round {i + 1}/{args.rounds}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(after[0], indent=1, sort_keys=True))
    cmp = compare(before, after)
    if args.json:
        Path(args.json).write_text(json.dumps(cmp, indent=1, sort_keys=True))
    print(markdown(cmp) if args.markdown else json.dumps(cmp, indent=1, sort_keys=True))
    if not cmp["identical"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
