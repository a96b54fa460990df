"""Serve the browser demo (examples/browser/index.html): energy routed on a small lattice.

    python -m energetic_wgpu.dawn.serve_demo [--port 8000] [--layers 6] [--nodes 16] [--steps 6]
    python -m energetic_wgpu.dawn.serve_demo --write DIR   # write the static site and exit

It records the routing steps (edge_logits -> segment_softmax -> energy_scatter, T times) as a
dispatch plan on the wgpu backend, writes ``demo.json`` (the plan with its KernelSpec table and
the lattice shape), ``runner.js`` and the unchanged ``shaders/*.wgsl`` next to ``index.html``,
and serves the folder on 127.0.0.1. Open the printed URL in any WebGPU browser: the page
compiles the shaders and runs the plan on *its* GPU, then shows the energy of every layer.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .harness import copy_shaders, serve_folder, web_dir
from .plan import record_plan

__all__ = ["build_demo", "main"]

log = logging.getLogger("energetic_wgpu.dawn")


def _demo_page() -> Path:
    here = Path(__file__).resolve()
    for base in (here.parents[2], Path.cwd()):
        p = base / "examples" / "browser" / "index.html"
        if p.is_file():
            return p
    raise FileNotFoundError("examples/browser/index.html not found (run from a source checkout)")


def demo_plan(layers: int = 6, nodes: int = 16, steps: int = 6, local: int = 3, jump: int = 1,
              tau: float = 0.5, seed: int = 0, adapter: Any = None) -> dict[str, Any]:
    """The recorded plan of ``steps`` routing steps on a lattice + the NumPy energies per step."""
    from ..backends.numpy_backend import NumpyBackend
    from ..backends.webgpu import WgpuBackend
    from ..graph import GraphConfig, build_lattice

    g = build_lattice(GraphConfig(layers=layers, nodes_per_layer=nodes, local_neighbors=local,
                                  jump_neighbors=jump, seed=seed))
    rng = np.random.default_rng(seed)
    d = 4
    q = (0.5 * rng.standard_normal((g.num_nodes, d))).astype(np.float32)
    k = (0.5 * rng.standard_normal((g.num_nodes, d))).astype(np.float32)
    bias = np.zeros(g.num_edges, dtype=np.float32)
    e0 = np.zeros((1, g.num_nodes), dtype=np.float32)
    e0[0, :nodes] = 1.0  # inject energy into layer 0

    def run(b: Any) -> dict[str, Any]:
        logits = b.edge_logits(g, b.asarray(q), b.asarray(k), b.asarray(bias))
        pi = b.segment_softmax(g, logits, tau=tau, top_k=0)
        e = b.asarray(e0)
        out = {"step0": e}
        for t in range(1, steps + 1):
            e = b.energy_scatter(g, e, pi, alpha=1.0, retain_sinks=True)
            out[f"step{t}"] = e
        return out

    plan, wgpu_out = record_plan(WgpuBackend(adapter=adapter), "lattice_demo", run)
    ref = {k2: np.asarray(v) for k2, v in run(NumpyBackend()).items()}
    return {
        "plan": plan,
        "lattice": {"layers": layers, "nodes_per_layer": nodes, "local_neighbors": local, "jump_neighbors": jump,
                    "num_edges": g.num_edges, "tau": tau, "steps": steps},
        "numpy_layer_energy": {k2: v.reshape(layers, nodes).sum(axis=1).tolist() for k2, v in ref.items()},
    }


def build_demo(dest: str | Path, **kwargs: Any) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_demo_page(), dest / "index.html")
    shutil.copyfile(web_dir() / "runner.js", dest / "runner.js")
    copy_shaders(dest / "shaders")
    (dest / "demo.json").write_text(json.dumps(demo_plan(**kwargs)), encoding="utf-8")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m energetic_wgpu.dawn.serve_demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--write", metavar="DIR", help="write the static site to DIR and exit")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:  # run as a script: show the messages on stderr
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    kw = {"layers": args.layers, "nodes": args.nodes, "steps": args.steps}
    if args.write:
        log.info("wrote %s", build_demo(args.write, **kw))
        return 0
    folder = build_demo(tempfile.mkdtemp(prefix="energetic-demo-"), **kw)
    srv = serve_folder(folder, port=args.port, done_paths=())
    log.info("serving %s at http://127.0.0.1:%d/index.html  (Ctrl-C to stop)", folder, srv.server_address[1])
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
