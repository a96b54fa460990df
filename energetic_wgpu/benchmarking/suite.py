"""The benchmark suite behind ``energetic-wgpu bench``: on every backend and wgpu adapter,

* ``phases``   — graph build, forward, loss, backward, optimizer and the whole train step on
  the configured lattice (default: the baseline 10 x 1024, B = 64), beside the router
  design's expected M4 CPU figures;
* ``ops``      — every op on a random graph, effective GB/s against the backend's copy
  bandwidth (:mod:`.ops`);
* ``sweep``    — forward and train step on 10-layer lattices of N = 10^3 ... 10^5 nodes
  (10^6 with ``full``), and the log-log slope of time against N;
* ``lattice3d`` — forward on 3-D lattices 5^3 ... 20^3 (26-neighbourhoods), cells per
  second, beside the table of vectorized-forward.md;
* ``torch``    — the NumPy backend against the same step written in PyTorch (CPU), when
  torch is installed.

Every measurement warms up, synchronizes the backend inside the timed region and reports the
median of interleaved repeats (functions measured together run round-robin, so a change of
load on the machine hits them alike). Results: a JSON-able dict with every sample and the
machine, rendered to markdown by :mod:`.report`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import numpy as np

from .timing import loglog_slope, machine_info, time_interleaved

log = logging.getLogger("energetic_wgpu.bench")

__all__ = [
    "SECTIONS", "SEED_M4_PHASES", "SEED_LATTICE3D", "SWEEP_SIZES", "FULL_SWEEP_SIZES", "LATTICE3D_SIDES",
    "list_targets", "bench_phases", "bench_sweep", "bench_lattice3d", "bench_torch", "run_suite",
]

SECTIONS = ("phases", "ops", "sweep", "lattice3d", "torch")

#: router-architecture.md, section "Производительность (ожидаемая на M4)" (expected
#: performance on M4): CPU times of the 10 x 1024 lattice on an Apple M4 (Accelerate/vDSP,
#: no GPU), (low ms, high ms) per phase. Design-time estimates, not measurements.
SEED_M4_PHASES: dict[str, tuple[float, float]] = {
    "graph_build": (10.0, 10.0),
    "forward": (5.0, 10.0),
    "backward": (8.0, 15.0),
    "optimizer": (1.0, 2.0),
    "train_step": (15.0, 30.0),
}
#: vectorized-forward.md, "Ожидаемая производительность": side -> (cells, original s,
#: vectorized s) of one forward pass over a side^3 lattice of a GNN cell (message MLP +
#: attention) on an unstated device; cells/s = cells / vectorized s. Expected, not measured.
SEED_LATTICE3D: dict[int, tuple[int, float, float]] = {
    5: (125, 0.450, 0.089),
    10: (1000, 3.2, 0.31),
    15: (3375, 12.1, 0.84),
    20: (8000, 35.7, 1.9),
}
SWEEP_SIZES = (1_000, 10_000, 100_000)
FULL_SWEEP_SIZES = (1_000, 10_000, 100_000, 1_000_000)
SWEEP_LAYERS = 10
LATTICE3D_SIDES = (5, 10, 15, 20)


def _err(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def list_targets(
    backend: str | None = None, adapter: str | int | None = None
) -> tuple[list[tuple[str, Callable[[], Any]]], list[str]]:
    """([(label, factory)], notes): NumPy and every wgpu adapter (filtered by ``backend`` in
    {None, "all", "numpy", "wgpu"} and ``adapter``, an index or name substring). wgpu
    backends are created with "timestamp-query" where the adapter has it."""
    targets: list[tuple[str, Callable[[], Any]]] = []
    notes: list[str] = []
    if backend in (None, "all", "numpy"):
        from ..backends.numpy_backend import NumpyBackend

        targets.append(("numpy", lambda: NumpyBackend("float32")))
    if backend in (None, "all", "wgpu"):
        from ..check import list_targets as wgpu_targets
        from .ops import make_timed_wgpu_backend

        if adapter is not None and str(adapter).strip().isdigit():
            # an index selects exactly that adapter (check.list_targets would also match the
            # digit inside a name such as "LLVM 15.0.6")
            found, wnotes = wgpu_targets(None)
            found = [t for t in found if t[0].split(":")[1] == str(adapter).strip()]
        else:
            found, wnotes = wgpu_targets(adapter)
        notes += wnotes
        for label, _factory in found:
            index = int(label.split(":")[1])
            targets.append((label, lambda index=index: make_timed_wgpu_backend(index)))
        if not found and backend == "wgpu":
            notes.append(f"no wgpu adapter matches {adapter!r}" if adapter is not None else "no wgpu adapter")
    return targets, notes


def _timing_dict(t: Any) -> dict[str, Any]:
    d = t.as_dict()
    d["samples_ms"] = [round(x, 4) for x in d["samples_ms"]]
    return d


# ------------------------------------------------------------------------ phases
def bench_phases(be: Any, config: Any, batch: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Graph build, forward, loss, backward, optimizer and the whole train step on the lattice
    of ``config.graph`` with the router of ``config.router``, interleaved.

    graph_build = ``build_lattice`` (+ on wgpu the upload of the graph's index buffers);
    forward = ``Router.forward``; loss = ``mse`` and its gradient; backward = ``Router.backward``
    of one stored forward; optimizer = clipped ``AdamW.step`` of stored gradients;
    train_step = ``Router.train_step`` (all of them, measured on its own)."""
    from ..graph import build_lattice
    from ..optim import AdamW
    from ..router import Router, RouterParams

    r = config.router
    gcfg = config.graph.to_graph_config()
    graph = build_lattice(gcfg)
    router = Router(graph, RouterParams.init(graph, dim=r.dim, tau=r.tau, alpha=r.alpha, top_k=r.top_k), be)
    rng = np.random.default_rng(0)
    energies = be.asarray(rng.random((batch, graph.num_nodes), dtype=np.float32))
    target = be.asarray(rng.random((batch, graph.num_nodes), dtype=np.float32))
    opt = AdamW(router, lr=1e-3, max_grad_norm=1.0)
    out = router.forward(energies, steps=r.steps, retain_sinks=r.retain_sinks)
    _, grad = be.mse(out.next_energies, target)
    grads = router.backward(out, grad)
    upload = hasattr(be, "graph_data")

    def graph_build() -> None:
        g = build_lattice(gcfg)
        if upload:
            be.graph_data(g)

    fns = {
        "graph_build": graph_build,
        "forward": lambda: router.forward(energies, steps=r.steps, retain_sinks=r.retain_sinks),
        "loss": lambda: be.mse(out.next_energies, target),
        "backward": lambda: router.backward(out, grad),
        "optimizer": lambda: opt.step(grads),
        "train_step": lambda: router.train_step(energies, target, opt, steps=r.steps, retain_sinks=r.retain_sinks),
    }
    res: dict[str, Any] = {"num_nodes": graph.num_nodes, "num_edges": graph.num_edges, "batch": batch,
                           "layers": gcfg.layers, "nodes_per_layer": gcfg.nodes_per_layer,
                           "num_params": 2 * graph.num_nodes * r.dim + graph.num_edges, "dim": r.dim,
                           "top_k": r.top_k, "steps": r.steps, "repeats": repeats, "warmup": warmup}
    timings = time_interleaved(fns, repeats=repeats, warmup=warmup, synchronize=be.synchronize)
    res["timings"] = {k: _timing_dict(t) for k, t in timings.items()}
    return res


# ------------------------------------------------------------------------- sweep
def _sweep_problem(n: int, batch: int, dim: int, top_k: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    from ..graph import GraphConfig, build_lattice
    from ..router import RouterParams

    per_layer = max(1, n // SWEEP_LAYERS)
    graph = build_lattice(GraphConfig(layers=SWEEP_LAYERS, nodes_per_layer=per_layer,
                                      local_neighbors=min(8, per_layer), jump_neighbors=min(2, per_layer)))
    params = RouterParams.init(graph, dim=dim, top_k=top_k, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((batch, graph.num_nodes), dtype=np.float32)
    t = rng.random((batch, graph.num_nodes), dtype=np.float32)
    return graph, params, x, t


def bench_sweep(
    be: Any, sizes: Sequence[int], batch: int, repeats: int, warmup: int, dim: int = 16, top_k: int = 4,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Forward and train step on 10-layer lattices of ``sizes`` nodes (nodes_per_layer =
    N / 10, 8 local + 2 jump edges per node), and the log-log slope of each against N."""
    from ..optim import AdamW
    from ..router import Router

    points = []
    for n in sizes:
        graph, params, x, t = _sweep_problem(n, batch, dim, top_k)
        point: dict[str, Any] = {"n": graph.num_nodes, "edges": graph.num_edges}
        try:
            router = Router(graph, params, be)
            xe, te = be.asarray(x), be.asarray(t)
            opt = AdamW(router, lr=1e-3, max_grad_norm=1.0)
            reps = repeats if graph.num_nodes < 500_000 else max(2, repeats // 3)
            tm = time_interleaved(
                {"forward": lambda: router.forward(xe), "train_step": lambda: router.train_step(xe, te, opt)},
                repeats=reps, warmup=warmup, synchronize=be.synchronize,
            )
            point.update({k: _timing_dict(v) for k, v in tm.items()})
        except Exception as exc:  # e.g. a buffer over the adapter's limits
            point["error"] = _err(exc)
        points.append(point)
        if echo is not None:
            what = point["error"] if "error" in point else (
                f"forward {point['forward']['median_ms']:.2f} ms, train step {point['train_step']['median_ms']:.2f} ms")
            echo(f"    N={point['n']:>9,}: {what}")
    ok = [p for p in points if "error" not in p]
    slopes = {
        k: loglog_slope([p["n"] for p in ok], [p[k]["median_ms"] for p in ok]) for k in ("forward", "train_step")
    }
    # the slope over the two largest sizes: fixed per-call costs flatten the small end
    top = ok[-2:]
    slopes_top = {
        k: loglog_slope([p["n"] for p in top], [p[k]["median_ms"] for p in top]) for k in ("forward", "train_step")
    }
    return {"batch": batch, "dim": dim, "top_k": top_k, "layers": SWEEP_LAYERS, "repeats": repeats, "warmup": warmup,
            "points": points, "slope": slopes, "slope_top2": slopes_top}


# --------------------------------------------------------------------- lattice3d
def bench_lattice3d(
    be: Any, sides: Sequence[int], batches: Sequence[int], repeats: int, warmup: int, dim: int = 16, radius: int = 1,
) -> dict[str, Any]:
    """Forward (one step, softmax over all neighbours: top_k = 0) on ``side^3`` lattices with
    26-neighbourhoods (``build_lattice_3d``), for each batch size; cells/s = side^3 * B / time."""
    from ..graph import build_lattice_3d
    from ..router import Router, RouterParams

    rows = []
    for side in sides:
        graph = build_lattice_3d((side, side, side), radius)
        router = Router(graph, RouterParams.init(graph, dim=dim, top_k=0, seed=0), be)
        rng = np.random.default_rng(0)
        fns = {}
        for b in batches:
            xb = be.asarray(rng.random((b, graph.num_nodes), dtype=np.float32))
            fns[f"B={b}"] = lambda xb=xb: router.forward(xb)
        row: dict[str, Any] = {"side": side, "cells": graph.num_nodes, "edges": graph.num_edges, "forward": {}}
        try:
            tm = time_interleaved(fns, repeats=repeats, warmup=warmup, synchronize=be.synchronize)
            for b in batches:
                t = _timing_dict(tm[f"B={b}"])
                t["cells_per_s"] = graph.num_nodes * b / (t["median_ms"] / 1e3)
                row["forward"][str(b)] = t
        except Exception as exc:
            row["error"] = _err(exc)
        rows.append(row)
    return {"radius": radius, "dim": dim, "top_k": 0, "batches": list(batches), "repeats": repeats, "rows": rows}


# ------------------------------------------------------------------------- torch
def bench_torch(repeats: int, warmup: int) -> dict[str, Any]:
    """The NumPy backend against the PyTorch reference step (:mod:`.torch_ref`) on the
    baseline lattice, forward and train step, each pair interleaved, at 1 thread and at
    torch's default thread count. ``{"skipped": reason}`` without torch."""
    from . import torch_ref as tr

    torch = tr.import_torch()
    if torch is None:
        return {"skipped": "PyTorch is not installed (pip install torch to compare)"}
    from ..backends.numpy_backend import NumpyBackend
    from ..optim import AdamW
    from ..router import Router

    graph, params, x, tgt = tr.make_problem()
    res: dict[str, Any] = {"torch": torch.__version__, "num_nodes": graph.num_nodes, "num_edges": graph.num_edges,
                           "batch": tr.BATCH, "dim": tr.DIM, "top_k": tr.TOP_K, "repeats": repeats}
    res["verification"] = tr.verify(graph, params, x, tgt)
    be = NumpyBackend()
    router = Router(graph, tr.copy_params(params), backend=be)
    opt = AdamW(router, lr=tr.LR, weight_decay=tr.WEIGHT_DECAY, max_grad_norm=tr.MAX_GRAD_NORM)
    default_threads = torch.get_num_threads()
    res["torch_default_threads"] = default_threads
    rounds = []
    try:
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            model, topt = tr.make_torch(params, graph)
            xt, tt = torch.from_numpy(x), torch.from_numpy(tgt)

            def t_forward(model: Any = model, xt: Any = xt) -> Any:
                with torch.no_grad():
                    return model(xt)[0]

            for what, np_fn, t_fn in (
                ("forward", lambda: router.forward(x), t_forward),
                ("train_step", lambda: router.train_step(x, tgt, opt),
                 lambda model=model, topt=topt, xt=xt, tt=tt: tr.torch_train_step(model, topt, xt, tt)),
            ):
                tm = time_interleaved({"numpy": np_fn, "torch": t_fn}, repeats=repeats, warmup=warmup)
                rounds.append({"what": what, "torch_threads": threads, "numpy": _timing_dict(tm["numpy"]),
                               "torch": _timing_dict(tm["torch"]),
                               "torch_over_numpy": tm["torch"].median_ms / tm["numpy"].median_ms})
    finally:
        torch.set_num_threads(default_threads)
    res["rounds"] = rounds
    return res


# ------------------------------------------------------------------------- suite
def run_suite(
    config: Any,
    *,
    backend: str | None = None,
    adapter: str | int | None = None,
    quick: bool = False,
    full: bool = False,
    sections: Sequence[str] = SECTIONS,
    batch: int | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the selected ``sections`` on every target; returns the JSON-able results.

    Default repeats: 20 (phases, lattice3d, torch), 10 (ops, sweep); ``quick`` uses 5 and 3
    with one warm-up and the smaller ops graph (N = 16,384); ``full`` adds N = 10^6 to the
    sweep (minutes per software adapter). ``repeats``/``warmup`` override every section."""
    say = echo or log.info
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"sections must be among {SECTIONS}, got {unknown}")
    rep_main = repeats or (5 if quick else 20)
    rep_heavy = repeats or (3 if quick else 10)
    wu = warmup if warmup is not None else (1 if quick else 2)
    batch = batch or config.train.batch_size
    sizes = FULL_SWEEP_SIZES if full else SWEEP_SIZES
    t_start = time.time()
    payload: dict[str, Any] = {
        "benchmark": "energetic_wgpu suite",
        "machine": machine_info(("wgpu", "torch")),
        "settings": {"quick": quick, "full": full, "sections": list(sections), "batch": batch,
                     "repeats_main": rep_main, "repeats_heavy": rep_heavy, "warmup": wu,
                     "graph": {"layers": config.graph.layers, "nodes_per_layer": config.graph.nodes_per_layer,
                               "local_neighbors": config.graph.local_neighbors,
                               "jump_neighbors": config.graph.jump_neighbors},
                     "router": {"dim": config.router.dim, "top_k": config.router.top_k, "steps": config.router.steps},
                     "sweep_sizes": list(sizes), "sweep_batch": 8, "ops_size": "quick" if quick else "small",
                     "lattice3d_sides": list(LATTICE3D_SIDES), "lattice3d_batches": [1, 64]},
        "seed": {"m4_phases_ms": {k: list(v) for k, v in SEED_M4_PHASES.items()},
                 "lattice3d": {str(k): {"cells": c, "original_s": o, "vectorized_s": v, "cells_per_s": c / v}
                               for k, (c, o, v) in SEED_LATTICE3D.items()}},
        "targets": [],
        "notes": [],
    }
    targets, notes = list_targets(backend, adapter)
    payload["notes"] += notes
    for label, factory in targets:
        entry: dict[str, Any] = {"target": label}
        payload["targets"].append(entry)
        try:
            be = factory()
        except Exception as exc:
            entry["error"] = _err(exc)
            say(f"{label}: unavailable ({entry['error']})")
            continue
        entry["device"] = be.describe()
        say(f"{label}: {entry['device']}")
        for section in sections:
            if section == "torch":
                continue
            t0 = time.perf_counter()
            say(f"  {section} ...")
            try:
                if section == "phases":
                    entry["phases"] = bench_phases(be, config, batch, rep_main, wu)
                elif section == "ops":
                    from .ops import bench_ops

                    entry["ops"] = bench_ops(be, "quick" if quick else "small", rep_heavy, wu,
                                             echo=lambda s: say("  " + s))
                elif section == "sweep":
                    entry["sweep"] = bench_sweep(be, sizes, 8, rep_heavy, wu, echo=say)
                elif section == "lattice3d":
                    entry["lattice3d"] = bench_lattice3d(be, LATTICE3D_SIDES, (1, 64), rep_main, wu)
            except Exception as exc:
                entry[section] = {"error": _err(exc)}
                say(f"  {section} failed: {entry[section]['error']}")
            entry.setdefault("seconds", {})[section] = round(time.perf_counter() - t0, 2)
    if "torch" in sections:
        if backend in (None, "all", "numpy"):
            say("torch comparison ...")
            try:
                payload["torch"] = bench_torch(rep_main, wu)
            except Exception as exc:
                payload["torch"] = {"error": _err(exc)}
        else:
            payload["torch"] = {"skipped": "the PyTorch comparison runs with the NumPy backend (--backend numpy/all)"}
    try:
        import os

        payload["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    payload["elapsed_s"] = round(time.time() - t_start, 1)
    return payload
