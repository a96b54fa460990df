"""Per-step overhead of the PyTorch bridge (energetic_wgpu.torch) against Router.train_step.

The same training step two ways, on the same backend, timed round-robin (interleaved, so a
change of machine load hits both alike):

* ``library``: ``Router.train_step`` (forward, mse, backward, clipped AdamW inside the library;
  on wgpu one submit, nothing read back);
* ``torch``: ``EnergeticRouter`` in a torch loop (``zero_grad``, forward, ``mse_loss``,
  ``backward``, ``torch.optim.AdamW.step``); on wgpu the changed parameters are uploaded, the
  next energies read back in the forward and the gradients in the backward.

The overhead is the difference of the medians; a forward-only row compares
``Router.forward`` (+ reading the result) with ``module(x)`` under ``torch.no_grad``, and a
last row times ``torch.optim.AdamW.step`` alone (part of the torch step, not of the bridge).
CPU columns are the process CPU time per call (on wgpu/lavapipe that includes the adapter's
threads).
Graph: a lattice of ``--layers`` x ``--nodes`` (local 8, jump 2), B = ``--batch``, d = 16,
top_k = 4, steps = 1.

    python -m benchmarks.bench_torch_bridge [--adapter vulkan|opengl|N|none] [--repeats 20] [--torch-threads 1]
        [--append]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import format_table, machine_info, time_interleaved
from energetic_wgpu import AdamW, Router, RouterParams, get_backend
from energetic_wgpu.graph import GraphConfig, build_lattice
from energetic_wgpu.torch import EnergeticRouter


def _backends(adapter: str) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [("numpy", get_backend("numpy"))]
    if adapter != "none":
        try:
            be = get_backend("wgpu", adapter=int(adapter) if adapter.isdigit() else adapter)
            out.append((be.describe(), be))
        except Exception as exc:  # no wgpu here: NumPy only
            print(f"wgpu unavailable: {exc}")
    return out


def bench(be: object, graph: object, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    """Medians (ms) of the library and torch steps and forwards on backend ``be``."""
    rng = np.random.default_rng(0)
    en = np.zeros((batch, graph.num_nodes), np.float32)  # type: ignore[attr-defined]
    en[:, : graph.num_nodes // 4] = rng.random((batch, graph.num_nodes // 4))  # type: ignore[attr-defined]
    tgt = (rng.random(en.shape) * 0.01).astype(np.float32)

    router = Router(graph, RouterParams.init(graph, 16, top_k=4, seed=0), be)  # type: ignore[arg-type]
    opt = AdamW(router, lr=1e-3, max_grad_norm=None)
    e_dev, t_dev = be.asarray(en), be.asarray(tgt)  # type: ignore[attr-defined]

    module = EnergeticRouter(graph, dim=16, top_k=4, backend=be, seed=0)  # type: ignore[arg-type]
    topt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.01)
    x, t = torch.from_numpy(en), torch.from_numpy(tgt)

    def library_step() -> None:
        router.train_step(e_dev, t_dev, opt)

    def torch_step() -> None:
        topt.zero_grad()
        torch.nn.functional.mse_loss(module(x), t).backward()
        topt.step()

    def library_forward() -> None:
        be.to_numpy(router.forward(en).next_energies)  # type: ignore[attr-defined]

    def torch_forward() -> None:
        with torch.no_grad():
            module(x)

    def torch_adamw() -> None:  # the optimizer alone (the gradients of the last step stay)
        topt.step()

    fns = {"library step": library_step, "torch step": torch_step,
           "library forward": library_forward, "torch forward": torch_forward, "torch AdamW": torch_adamw}
    timings = time_interleaved(fns, repeats=repeats, warmup=3, synchronize=be.synchronize)  # type: ignore[attr-defined]
    return {name: {"median_ms": t.median_ms, "iqr_ms": t.iqr_ms, "cpu_ms": t.cpu_median_ms}
            for name, t in timings.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--nodes", type=int, default=256, help="nodes per lattice layer")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--adapter", default="vulkan", help="wgpu adapter (index or name), or 'none' for NumPy only")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: on a small shared machine torch's intra-op thread "
                         "pool spins against the other processes; 0 keeps torch's default)")
    ap.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    graph = build_lattice(GraphConfig(layers=args.layers, nodes_per_layer=args.nodes, local_neighbors=8,
                                      jump_neighbors=2))
    rows = []
    for name, be in _backends(args.adapter):
        r = bench(be, graph, args.batch, args.repeats)
        for kind in ("step", "forward"):
            lib, tor = r[f"library {kind}"], r[f"torch {kind}"]
            rows.append([name, kind, f"{lib['median_ms']:.2f}", f"{tor['median_ms']:.2f}",
                         f"{tor['median_ms'] - lib['median_ms']:+.2f}", f"{tor['median_ms'] / lib['median_ms']:.2f}x",
                         f"{lib['cpu_ms']:.2f}", f"{tor['cpu_ms']:.2f}"])
        opt_ms = r["torch AdamW"]
        rows.append([name, "torch AdamW.step alone", "", f"{opt_ms['median_ms']:.2f}", "", "", "",
                     f"{opt_ms['cpu_ms']:.2f}"])
    headers = ["backend", "what", "library ms", "torch bridge ms", "overhead ms", "ratio", "library CPU ms",
               "torch CPU ms"]
    table = format_table(headers, rows)
    print(table)
    load = os.getloadavg()
    info = machine_info(("wgpu", "torch"))
    print(f"load average: {load[0]:.2f} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        with path.open("a", encoding="utf-8") as f:
            f.write(
                f"\n## PyTorch bridge overhead\n\n`EnergeticRouter` in a torch training loop against "
                f"`Router.train_step` on the same backend, lattice {args.layers}x{args.nodes}, B = {args.batch}, "
                f"d = 16, top_k = 4, medians of {args.repeats} interleaved repeats; machine: "
                f"{info.get('cpu', '?')}, load average {load[0]:.1f} on {os.cpu_count()} CPUs, torch "
                f"{torch.__version__}.\n\n```\n{table}\n```\n"
            )


if __name__ == "__main__":
    main()
