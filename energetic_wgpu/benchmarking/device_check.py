"""The device check (``scripts/device-check.sh``): what this library costs on a real GPU, in one JSON file.

On every *hardware* wgpu adapter (adapter_type DiscreteGPU or IntegratedGPU):

1. ``energetic-wgpu check``: every parity case against the NumPy backend, run twice (bit-stability);
2. the train step (forward, mse, backward, clipped AdamW) at the default size (10 x 1024
   lattice, B = 64, d = 16, top_k = 4) and the large size (16 x 65536 lattice: N = 1,048,576,
   E ~ 10.5M, B = 8): median synchronized step time, host encode+submit time and the work
   counters of one steady-state step;

and once, on the same machine, the PyTorch step of ``benchmarking/torch_ref.py`` on the same
graphs (CUDA or MPS when torch sees one; recorded as unavailable otherwise).

``--dry-run`` (or ``ENERGETIC_WGPU_DEVICE_CHECK_DRY_RUN=1``) runs the same steps on the first
CPU adapter (lavapipe) with tiny sizes and a few parity cases, in seconds: the check that the
script works, used by the tests.

    python -m energetic_wgpu.benchmarking.device_check [--dry-run] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["Size", "SIZES", "DRY_SIZES", "run", "main"]

HARDWARE = ("DiscreteGPU", "IntegratedGPU")
DRY_ENV = "ENERGETIC_WGPU_DEVICE_CHECK_DRY_RUN"


@dataclass(frozen=True)
class Size:
    """One train-step workload: a lattice of ``layers`` x ``nodes_per_layer`` and batch B."""

    name: str
    layers: int
    nodes_per_layer: int
    batch: int
    repeats: int


SIZES = (Size("default", 10, 1024, 64, 20), Size("large", 16, 65536, 8, 5))
DRY_SIZES = (Size("default", 2, 64, 4, 3), Size("large", 3, 128, 2, 2))
DIM, TOP_K = 16, 4


def _problem(size: Size) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    from energetic_wgpu.graph import GraphConfig, build_lattice
    from energetic_wgpu.router import RouterParams

    graph = build_lattice(GraphConfig(layers=size.layers, nodes_per_layer=size.nodes_per_layer))
    params = RouterParams.init(graph, DIM, top_k=TOP_K, seed=0)
    rng = np.random.default_rng(0)
    en = rng.random((size.batch, graph.num_nodes)).astype(np.float32)
    tgt = (rng.random((size.batch, graph.num_nodes)) * 0.01).astype(np.float32)
    return graph, params, en, tgt


def _median_ms(fn: Callable[[], Any], sync: Callable[[], Any], repeats: int) -> float:
    fn()
    sync()  # warm-up: pipelines, pool, dispatch records
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def train_step_figures(be: Any, size: Size) -> dict[str, Any]:
    """Median step ms (synchronized), median host encode+submit ms (queue drained before each
    sample, no wait) and the counters of one steady-state step, on backend ``be``."""
    from energetic_wgpu.optim import AdamW
    from energetic_wgpu.router import Router

    graph, params, en, tgt = _problem(size)
    router = Router(graph, params, be)
    opt = AdamW(router, lr=1e-3, max_grad_norm=1.0)
    e, t = be.asarray(en), be.asarray(tgt)

    def step() -> None:
        router.train_step(e, t, opt)

    step_ms = _median_ms(step, be.synchronize, size.repeats)
    host = []
    for _ in range(size.repeats):
        be.synchronize()
        t0 = time.perf_counter()
        step()
        host.append((time.perf_counter() - t0) * 1e3)
    be.synchronize()
    c0 = be.counters()
    step()
    c1 = be.counters()
    be.synchronize()
    return {
        "size": asdict(size), "nodes": graph.num_nodes, "edges": graph.num_edges,
        "step_ms": step_ms, "host_encode_submit_ms": statistics.median(host),
        "per_step": {k: c1[k] - c0[k] for k in ("submits", "dispatches", "buffers_created", "bytes_uploaded",
                                                  "bytes_read_back")},
    }


def torch_figures(sizes: tuple[Size, ...], allow_cpu: bool) -> dict[str, Any]:
    """The PyTorch step on the same graphs, on CUDA or MPS (on the CPU only when ``allow_cpu``)."""
    from energetic_wgpu.benchmarking.torch_ref import import_torch, make_torch, torch_train_step

    torch = import_torch()
    if torch is None:
        return {"available": False, "reason": "PyTorch is not installed"}
    if torch.cuda.is_available():
        dev = "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        dev = "mps"
    elif allow_cpu:
        dev = "cpu"
    else:
        return {"available": False, "reason": "torch sees no CUDA or MPS device", "torch": torch.__version__}

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()
        elif dev == "mps":
            torch.mps.synchronize()

    out: dict[str, Any] = {"available": True, "device": dev, "torch": torch.__version__, "sizes": []}
    if dev == "cuda":
        out["name"] = torch.cuda.get_device_name(0)
    for size in sizes:
        graph, params, en, tgt = _problem(size)
        model, opt = make_torch(params, graph)
        model = model.to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=opt.defaults["lr"], weight_decay=opt.defaults["weight_decay"])
        x, y = torch.from_numpy(en).to(dev), torch.from_numpy(tgt).to(dev)
        ms = _median_ms(lambda: torch_train_step(model, opt, x, y), sync, size.repeats)
        out["sizes"].append({"size": asdict(size), "step_ms": ms})
    return out


def _adapters(dry_run: bool) -> list[dict[str, Any]]:
    from energetic_wgpu.backends.webgpu import list_adapters

    adapters = list_adapters()
    if dry_run:  # the first CPU Vulkan adapter (lavapipe), else the first adapter at all
        cpu = [a for a in adapters if a.get("backend_type") == "Vulkan"] or adapters
        return cpu[:1]
    return [a for a in adapters if a.get("adapter_type") in HARDWARE]


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(dry_run: bool = False, echo: Callable[[str], None] = _say) -> dict[str, Any]:
    """The whole check as a JSON-able dict: machine, adapters (each with its parity check and
    train-step figures), torch; ``ok`` is False when a parity check failed or no adapter ran."""
    from energetic_wgpu.backends import get_backend
    from energetic_wgpu.backends.numpy_backend import NumpyBackend
    from energetic_wgpu.check import check_target
    from energetic_wgpu.parity_cases import CASES

    sizes = DRY_SIZES if dry_run else SIZES
    report: dict[str, Any] = {
        "dry_run": dry_run, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "adapters": [],
    }
    try:
        adapters = _adapters(dry_run)
    except Exception as exc:  # wgpu missing or no adapters
        adapters = []
        report["adapter_error"] = f"{type(exc).__name__}: {exc}"
    ok = bool(adapters)
    for a in adapters:
        label = f"wgpu:{a['index']}:{a.get('backend_type', '?')}"
        echo(f"{label} {a.get('description') or a.get('name')} ({a.get('adapter_type')})")
        entry: dict[str, Any] = {k: a.get(k) for k in ("index", "name", "description", "backend_type",
                                                         "adapter_type", "vendor")}
        be = get_backend("wgpu", adapter=a["index"])
        cases = CASES[:3] if dry_run else CASES
        results = check_target(be, label, NumpyBackend("float32"), cases)
        entry["check"] = {"ok": all(r.ok for r in results), "cases": len(results),
                          "failed": [asdict(r) for r in results if not r.ok]}
        ok = ok and entry["check"]["ok"]
        echo(f"  check: {len(results) - len(entry['check']['failed'])}/{len(results)} cases pass")
        entry["train_step"] = []
        for size in sizes:
            fig = train_step_figures(be, size)
            entry["train_step"].append(fig)
            echo(f"  train step {size.name} (N = {fig['nodes']}, E = {fig['edges']}, B = {size.batch}): "
                 f"{fig['step_ms']:.3f} ms, host {fig['host_encode_submit_ms']:.3f} ms, "
                 f"{fig['per_step']['dispatches']} dispatches")
        report["adapters"].append(entry)
    report["torch"] = torch_figures(sizes, allow_cpu=dry_run)
    echo(f"torch: {report['torch'].get('device', report['torch'].get('reason'))}")
    report["ok"] = ok
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="lavapipe, tiny sizes (also: $" + DRY_ENV + "=1)")
    ap.add_argument("--out", default=None, help="the JSON file (default: device-check-<host>.json)")
    args = ap.parse_args(argv)
    dry = args.dry_run or os.environ.get(DRY_ENV, "") not in ("", "0")
    report = run(dry)
    path = args.out or f"device-check-{platform.node() or 'host'}.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    _say(f"wrote {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
