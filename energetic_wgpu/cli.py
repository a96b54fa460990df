"""The ``energetic-wgpu`` command line (minimal: ``train`` runs a demo)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def _demo_train(args: argparse.Namespace) -> int:
    import energetic_wgpu as ew

    graph = ew.build_lattice(ew.GraphConfig(layers=10, nodes_per_layer=1024, local_neighbors=8, jump_neighbors=2))
    backend = ew.get_backend(args.backend)
    teacher = ew.RouterParams.init(graph, dim=16, top_k=4, seed=1, noise=0.5)
    student = ew.Router(graph, ew.RouterParams.init(graph, dim=16, top_k=4, seed=0), backend)
    ref = ew.Router(graph, teacher, backend)
    opt = ew.AdamW(student, lr=0.02, max_grad_norm=1.0)
    rng = np.random.default_rng(0)
    print(f"backend: {backend.describe()}  graph: {graph}")
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        energies = rng.random((64, graph.num_nodes), dtype=np.float32)
        target = ref.forward(energies).next_energies
        out = student.forward(energies)
        loss, grad = ew.losses.mse(out.next_energies, target)
        grads = student.backward(out, grad)
        opt.step(grads)
        if step == 1 or step % 10 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss:.6f}  grad_norm {grads.norm:.4f}  ({time.perf_counter() - t0:.1f}s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    parser = argparse.ArgumentParser(prog="energetic-wgpu", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    p_train = sub.add_parser("train", help="train the router (demo)")
    p_train.add_argument("--backend", default="auto")
    p_train.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    if args.command in (None, "train"):
        if args.command is None:
            args = parser.parse_args(["train", *(argv or [])])
        return _demo_train(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
