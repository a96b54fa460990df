"""Markdown tables and the size-sweep plot of a :func:`~.suite.run_suite` result."""

from __future__ import annotations

import math
from typing import Any

from .suite import SEED_LATTICE3D, SEED_M4_PHASES

__all__ = ["to_markdown", "plot_sweep"]

PHASES = ("graph_build", "forward", "loss", "backward", "optimizer", "train_step")


def _ms(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _seed_range(lo: float, hi: float) -> str:
    return f"~{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def _ok(entries: list[dict[str, Any]], section: str) -> list[dict[str, Any]]:
    return [e for e in entries if isinstance(e.get(section), dict) and "error" not in e[section]]


def _phases_md(entries: list[dict[str, Any]]) -> list[str]:
    ok = _ok(entries, "phases")
    if not ok:
        return []
    p0 = ok[0]["phases"]
    lines = [
        f"### Train-step phases ({p0['layers']} x {p0['nodes_per_layer']} lattice, N = {p0['num_nodes']:,}, "
        f"E = {p0['num_edges']:,}, B = {p0['batch']}, d = {p0['dim']}, top_k = {p0['top_k']})",
        "",
        "Median ms of " + f"{p0['repeats']} interleaved repeats (IQR in the JSON). Seed: router-architecture.md's "
        "*expected* figures for an Apple M4 CPU (design estimates, not measurements).",
        "",
        "| phase | design M4 (expected) | " + " | ".join(e["target"] for e in ok) + " |",
        "|---|---:|" + "---:|" * len(ok),
    ]
    for ph in PHASES:
        seed = _seed_range(*SEED_M4_PHASES[ph]) if ph in SEED_M4_PHASES else "–"
        cells = [_ms(e["phases"]["timings"][ph]["median_ms"]) for e in ok]
        lines.append(f"| {ph} | {seed} | " + " | ".join(cells) + " |")
    lines += ["", "graph_build = `build_lattice` (+ upload of the index buffers on wgpu); train_step is measured "
              "on its own (forward + loss + backward + optimizer in one call).", ""]
    return lines


def _ops_md(entries: list[dict[str, Any]]) -> list[str]:
    ok = _ok(entries, "ops")
    if not ok:
        return []
    o0 = ok[0]["ops"]
    names = [r["op"] for r in o0["ops"]]
    lines = [
        f"### Ops (random graph N = {o0['nodes']:,}, E = {o0['edges']:,}, B = {o0['batch']}, d = {o0['dim']})",
        "",
        "ms (GPU timestamps where the adapter has them, else synchronized wall time), effective GB/s (the op's "
        "minimum bytes / time) and its ratio to the same backend's copy bandwidth.",
        "",
        "| op | " + " | ".join(f"{e['target']} ms | GB/s | ×copy" for e in ok) + " |",
        "|---|" + "---:|---:|---:|" * len(ok),
    ]
    for i, name in enumerate(names):
        cells = []
        for e in ok:
            rows = e["ops"]["ops"]
            r = rows[i] if i < len(rows) else None
            cells.append("– | – | –" if r is None
                         else f"{_ms(r['ms'])} | {r['gb_per_s']:.2f} | {r['ratio_to_copy']:.2f}")
        label = name.replace("np.copyto", "copy").replace("copy_vec4", "copy")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _sweep_md(entries: list[dict[str, Any]]) -> list[str]:
    ok = _ok(entries, "sweep")
    if not ok:
        return []
    s0 = ok[0]["sweep"]
    sizes = sorted({p["n"] for e in ok for p in e["sweep"]["points"]})
    lines = [
        f"### Size sweep ({s0['layers']}-layer lattices, 8 local + 2 jump edges per node, B = {s0['batch']}, "
        f"d = {s0['dim']}, top_k = {s0['top_k']})",
        "",
        "Median ms; slope = least-squares slope of log(time) against log(N) over all sizes (1 = linear); "
        "slope (top 2) over the two largest sizes only (fixed per-call costs flatten the small end).",
        "",
        "| target | op | " + " | ".join(f"N = {n:,}" for n in sizes) + " | slope | slope (top 2) |",
        "|---|---|" + "---:|" * (len(sizes) + 2),
    ]
    for e in ok:
        sw = e["sweep"]
        by_n = {p["n"]: p for p in sw["points"]}
        for k in ("forward", "train_step"):
            cells = []
            for n in sizes:
                p = by_n.get(n)
                cells.append("–" if p is None or "error" in p else _ms(p[k]["median_ms"]))
            lines.append(f"| {e['target']} | {k} | " + " | ".join(cells)
                         + f" | {sw['slope'][k]:.2f} | {sw['slope_top2'][k]:.2f} |")
    lines.append("")
    return lines


def _lattice3d_md(entries: list[dict[str, Any]]) -> list[str]:
    ok = _ok(entries, "lattice3d")
    if not ok:
        return []
    l0 = ok[0]["lattice3d"]
    batches = [str(b) for b in l0["batches"]]
    head = ["lattice", "cells", "edges", "design s (vectorized)", "design cells/s"]
    for e in ok:
        head += [f"{e['target']} ms (B=1)", "cells/s (B=1)"] + [f"cells/s (B={b})" for b in batches[1:]]
    lines = [
        f"### 3-D lattices (radius {l0['radius']}: 26-neighbourhoods, forward of one step, top_k = 0, "
        f"d = {l0['dim']})",
        "",
        "cells/s = cells x B / median forward time. Seed: vectorized-forward.md's *expected* times of one "
        "forward of its vectorized GNN cell (message MLP + attention per neighbour, unstated device); "
        "its cells/s = cells / that time. Different model, same lattices.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for i, row in enumerate(l0["rows"]):
        side = row["side"]
        seed = SEED_LATTICE3D.get(side)
        cells = [f"{side}³", f"{row['cells']:,}", f"{row['edges']:,}",
                 f"{seed[2]:g}" if seed else "–", f"{seed[0] / seed[2]:,.0f}" if seed else "–"]
        for e in ok:
            r = e["lattice3d"]["rows"][i]
            if "error" in r:
                cells += ["–"] * (1 + len(batches))
                continue
            f = r["forward"]
            cells += [_ms(f[batches[0]]["median_ms"]), f"{f[batches[0]]['cells_per_s']:,.0f}"]
            cells += [f"{f[b]['cells_per_s']:,.0f}" for b in batches[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _torch_md(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return []
    if "skipped" in t or "error" in t:
        return ["### NumPy backend vs PyTorch (CPU)", "", f"Skipped: {t.get('skipped') or t.get('error')}", ""]
    worst = max(v for k, v in t["verification"].items() if k != "kept_mask_mismatches")
    lines = [
        f"### NumPy backend vs PyTorch {t['torch']} (CPU)",
        "",
        f"Baseline lattice (N = {t['num_nodes']:,}, E = {t['num_edges']:,}), B = {t['batch']}, d = {t['dim']}, "
        f"top_k = {t['top_k']}; each NumPy/PyTorch pair interleaved, median of {t['repeats']}. The PyTorch step "
        f"was first checked to compute the same function (largest difference {worst:.2g}: relative for "
        f"values and gradients, in units of lr for the parameters after one AdamW step; "
        f"{int(t['verification']['kept_mask_mismatches'])} top-k mismatches).",
        "",
        "| op | torch threads | NumPy ms | PyTorch ms | PyTorch / NumPy |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in t["rounds"]:
        lines.append(f"| {r['what']} | {r['torch_threads']} | {_ms(r['numpy']['median_ms'])} | "
                     f"{_ms(r['torch']['median_ms'])} | {r['torch_over_numpy']:.2f}x |")
    lines.append("")
    return lines


def to_markdown(payload: dict[str, Any]) -> str:
    """The suite's results as markdown: machine, then one table per section."""
    m = payload["machine"]
    s = payload["settings"]
    entries = payload["targets"]
    lines = [
        "## energetic-wgpu bench",
        "",
        f"Machine: {m.get('cpu')} ({m.get('cpu_count')} cores), {m.get('platform')}, Python {m.get('python')}, "
        f"numpy {m.get('numpy')}, scipy {m.get('scipy')}, wgpu {m.get('wgpu')}, torch {m.get('torch')}; "
        f"load average {m.get('loadavg_1_5_15')} at the start, {m.get('loadavg_end')} at the end. "
        f"Settings: {'quick' if s['quick'] else 'default'}{', full sweep' if s['full'] else ''}, "
        f"{payload.get('elapsed_s', '?')} s.",
        "",
        "| target | device |",
        "|---|---|",
    ]
    for e in entries:
        lines.append(f"| {e['target']} | {e.get('device') or 'unavailable: ' + e.get('error', '?')} |")
    lines.append("")
    for note in payload.get("notes", []):
        lines.append(f"- note: {note}")
    for e in entries:
        for sec in ("phases", "ops", "sweep", "lattice3d"):
            if isinstance(e.get(sec), dict) and "error" in e[sec]:
                lines.append(f"- {e['target']} {sec} failed: {e[sec]['error']}")
    lines.append("")
    lines += _phases_md(entries) + _ops_md(entries) + _sweep_md(entries) + _lattice3d_md(entries)
    lines += _torch_md(payload.get("torch"))
    return "\n".join(lines).rstrip() + "\n"


def plot_sweep(payload: dict[str, Any], path: str, dpi: int = 80) -> str | None:
    """Write the size sweep (log-log, forward and train step per target) as a PNG to ``path``.
    Returns None on success, or the reason it was skipped (no matplotlib, no sweep data)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"matplotlib unavailable ({type(exc).__name__}: {exc}); pip install matplotlib for the plot"
    ok = _ok(payload["targets"], "sweep")
    if not ok:
        return "no size-sweep results to plot"
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=False)
    for ax, k in zip(axes, ("forward", "train_step")):
        for e in ok:
            pts = [p for p in e["sweep"]["points"] if "error" not in p]
            ax.loglog([p["n"] for p in pts], [p[k]["median_ms"] for p in pts], "o-",
                      label=f"{e['target']} (slope {e['sweep']['slope'][k]:.2f})")
        ax.set_title(k.replace("_", " "))
        ax.set_xlabel("nodes N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("median ms")
    fig.tight_layout()
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return None
