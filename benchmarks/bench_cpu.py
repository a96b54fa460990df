"""CPU benchmark: the NumPy backend's forward and train step against the same step written
the way a PyTorch user would write it (autograd, ``index_add_``, scatter-based segment
softmax), on the baseline lattice (10 x 1024 nodes, B = 64, d = 16, top_k = 4).

The train step is forward, MSE, backward, global-norm clipping and AdamW. Both versions run
in the same process on the same inputs; the script first checks that the PyTorch step
computes the same function (forward energies, gradients and updated parameters compared in
float32) and prints the largest differences, so the comparison is honest.

    python -m benchmarks.bench_cpu [--repeats N] [--json out.json]

PyTorch is optional: without it only the NumPy figures are printed. The PyTorch reference
itself lives in :mod:`energetic_wgpu.benchmarking.torch_ref`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

import energetic_wgpu as ew
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.benchmarking.torch_ref import (  # noqa: F401  (the reference lives in the package)
    ALPHA, BATCH, DIM, LAYERS, LR, MAX_GRAD_NORM, NODES_PER_LAYER, TAU, TOP_K, WEIGHT_DECAY, import_torch, make_problem,
    make_torch, torch_router_class, torch_train_step, verify,
)
from energetic_wgpu.benchmarking.torch_ref import copy_params as _copy_params

from .common import Timing, format_table, machine_info, time_fn, time_interleaved, write_json

torch = import_torch()  # optional: the reference implementation


def run(repeats: int, warmup: int) -> dict[str, Any]:
    graph, params, x, tgt = make_problem()
    print(f"graph: {graph}  B={BATCH} d={DIM} top_k={TOP_K}")
    result: dict[str, Any] = {
        "config": {
            "layers": LAYERS, "nodes_per_layer": NODES_PER_LAYER, "num_nodes": graph.num_nodes,
            "num_edges": graph.num_edges, "batch": BATCH, "dim": DIM, "top_k": TOP_K,
            "lr": LR, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
            "repeats": repeats, "warmup": warmup,
        },
        "machine": machine_info(("torch",)),
    }
    timings: dict[str, Timing] = {}

    be = NumpyBackend()
    router = ew.Router(graph, _copy_params(params), backend=be)
    opt = ew.AdamW(router, lr=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM)
    numpy_fns = {
        "forward": lambda: router.forward(x).next_energies,
        "train_step": lambda: router.train_step(x, tgt, opt),
    }

    # ---- rounds: the NumPy backend interleaved with PyTorch at 1 thread (like for like: the
    # NumPy backend runs on one core), then with PyTorch at its default thread count
    rounds: list[tuple[str, int | None]] = []
    if torch is None:
        print("PyTorch is not installed: skipping the comparison (pip install torch to run it).")
        rounds.append(("numpy", None))
    else:
        default_threads = torch.get_num_threads()
        result["machine"]["torch_default_threads"] = default_threads
        errors = verify(graph, params, x, tgt)
        result["verification"] = errors
        print("PyTorch step vs NumPy backend (float32), max|torch - numpy| / max|numpy| or / lr:")
        for name, err in errors.items():
            print(f"  {name:24s} {err:.3g}")
        worst = max(v for n, v in errors.items() if n != "kept_mask_mismatches")
        if worst > 1e-3 or errors["kept_mask_mismatches"]:
            print("WARNING: the PyTorch reference does not match the NumPy backend", file=sys.stderr)
        rounds.append(("torch1", 1))
        if default_threads != 1:
            rounds.append((f"torch{default_threads}", default_threads))

    rows: list[list[str]] = []
    ratios: dict[str, dict[str, float]] = {}
    for tag, threads in rounds:
        fns: dict[str, Any] = {}
        if threads is not None:
            torch.set_num_threads(threads)
            model, topt = make_torch(params, graph)
            xt, tt = torch.from_numpy(x), torch.from_numpy(tgt)

            def torch_forward(model: Any = model, xt: Any = xt) -> Any:
                with torch.no_grad():
                    return model(xt)[0]

            torch_fns = {
                "forward": torch_forward,
                "train_step": lambda model=model, topt=topt, xt=xt, tt=tt: torch_train_step(model, topt, xt, tt),
            }
        for what in ("forward", "train_step"):
            fns = {f"numpy@{tag}.{what}": numpy_fns[what]}
            if threads is not None:
                fns[f"{tag}.{what}"] = torch_fns[what]
            timings.update(time_interleaved(fns, repeats=repeats, warmup=warmup))
            np_t = timings[f"numpy@{tag}.{what}"]
            rows.append([what, "numpy backend", f"{np_t.median_ms:.2f}", f"{np_t.iqr_ms:.2f}",
                         f"{np_t.cpu_median_ms:.2f}", ""])
            if threads is not None:
                t_t = timings[f"{tag}.{what}"]
                ratio = t_t.median_ms / np_t.median_ms
                ratios.setdefault(tag, {})[what] = ratio
                rows.append([what, f"torch, {threads} thread{'s' if threads > 1 else ''}", f"{t_t.median_ms:.2f}",
                             f"{t_t.iqr_ms:.2f}", f"{t_t.cpu_median_ms:.2f}", f"{ratio:.2f}x"])
    if torch is not None:
        torch.set_num_threads(result["machine"]["torch_default_threads"])

    # ---- the NumPy backend's ops, for a profile of where the time goes
    q, k, bias = router.parameters()
    logits = be.edge_logits(graph, q, k, bias)
    pi = be.segment_softmax(graph, logits, TAU, TOP_K)
    nxt = be.energy_scatter(graph, x, pi, ALPHA)
    _, g = be.mse(nxt, tgt)
    _, gpi = be.energy_scatter_backward(graph, x, pi, g, ALPHA)
    gl = be.segment_softmax_backward(graph, pi, gpi, TAU)
    grads = be.edge_logits_backward(graph, q, k, gl)
    state = [[np.zeros_like(a) for a in (q, k, bias)] for _ in range(2)]
    params_copy = [np.array(a) for a in (q, k, bias)]
    step = np.zeros(1, dtype=np.float32)
    op_reps = max(repeats // 2, 5)
    ops = {
        "edge_logits": lambda: be.edge_logits(graph, q, k, bias),
        "segment_softmax (top-k)": lambda: be.segment_softmax(graph, logits, TAU, TOP_K),
        "energy_scatter": lambda: be.energy_scatter(graph, x, pi, ALPHA),
        "mse": lambda: be.mse(nxt, tgt),
        "energy_scatter_backward": lambda: be.energy_scatter_backward(graph, x, pi, g, ALPHA),
        "segment_softmax_backward": lambda: be.segment_softmax_backward(graph, pi, gpi, TAU),
        "edge_logits_backward": lambda: be.edge_logits_backward(graph, q, k, gl),
        "adamw_step (clipped)": lambda: be.adamw_step(params_copy, list(grads), state[0], state[1], step, LR,
                                                      0.9, 0.999, 1e-8, WEIGHT_DECAY, MAX_GRAD_NORM),
    }
    for name, fn in ops.items():
        t = timings[f"numpy.op.{name}"] = time_fn(name, fn, repeats=op_reps, warmup=2)
        rows.append([f"  {name}", "numpy backend", f"{t.median_ms:.2f}", f"{t.iqr_ms:.2f}",
                     f"{t.cpu_median_ms:.2f}", ""])

    print()
    print(format_table(["op", "implementation", "median ms", "IQR ms", "CPU ms", "torch/numpy"], rows))
    print(f"(wall-clock median of {repeats} runs after {warmup} warm-up runs, each NumPy/PyTorch pair "
          f"interleaved; per-op rows: {op_reps} runs; CPU ms = process CPU time, all threads)")
    result["timings"] = {k: v.as_dict() for k, v in timings.items()}
    if ratios:
        result["ratio_torch_over_numpy"] = ratios
        best = min(r["train_step"] for r in ratios.values())
        print(f"train step: the fastest PyTorch setting takes {best:.2f}x the NumPy backend's time "
              f"(goal: >= 2x) -> {'met' if best >= 2 else 'NOT met'}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per measurement (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    result = run(args.repeats, args.warmup)
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
