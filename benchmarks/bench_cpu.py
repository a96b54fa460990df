"""CPU benchmark: the NumPy backend's forward and train step against the same step written
the way a PyTorch user would write it (autograd, ``index_add_``, scatter-based segment
softmax), on the baseline lattice (10 x 1024 nodes, B = 64, d = 16, top_k = 4).

The train step is forward, MSE, backward, global-norm clipping and AdamW. Both versions run
in the same process on the same inputs; the script first checks that the PyTorch step
computes the same function (forward energies, gradients and updated parameters compared in
float32) and prints the largest differences, so the comparison is honest.

    python -m benchmarks.bench_cpu [--repeats N] [--json out.json]

PyTorch is optional: without it only the NumPy figures are printed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

import energetic_wgpu as ew
from energetic_wgpu.backends.numpy_backend import NumpyBackend

from .common import Timing, format_table, machine_info, time_fn, time_interleaved, write_json

try:  # optional: the reference implementation
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

# the baseline configuration
LAYERS, NODES_PER_LAYER, BATCH, DIM, TOP_K = 10, 1024, 64, 16, 4
TAU, ALPHA = 1.0, 1.0
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 1e-3, 0.01, 1.0


def _copy_params(p: ew.RouterParams) -> ew.RouterParams:
    """A deep copy: a Router may keep (and its optimizer update in place) the arrays it is given."""
    return ew.RouterParams(np.array(p.q), np.array(p.k), np.array(p.bias), p.tau, p.alpha, p.top_k)


def make_problem(seed: int = 0) -> tuple[ew.Graph, ew.RouterParams, np.ndarray, np.ndarray]:
    """The baseline lattice, its initial parameters and a random (energies, target) batch."""
    graph = ew.build_lattice(ew.GraphConfig(layers=LAYERS, nodes_per_layer=NODES_PER_LAYER))
    params = ew.RouterParams.init(graph, dim=DIM, tau=TAU, alpha=ALPHA, top_k=TOP_K, seed=seed)
    rng = np.random.default_rng(seed)
    energies = rng.random((BATCH, graph.num_nodes)).astype(np.float32)
    target = rng.random((BATCH, graph.num_nodes)).astype(np.float32)
    return graph, params, energies, target


# ------------------------------------------------------------------ PyTorch reference
if torch is not None:

    class TorchRouter(torch.nn.Module):
        """The router step as a PyTorch user writes it: gathers by edge index, a padded
        [N, max_degree] ``topk`` per segment, a scatter-based segment softmax (max by
        ``scatter_reduce``, sum by ``index_add_``) and ``index_add_`` of the flows into the
        next energies. Autograd does the backward."""

        def __init__(self, graph: ew.Graph, params: ew.RouterParams) -> None:
            super().__init__()
            self.q = torch.nn.Parameter(torch.from_numpy(np.array(params.q, dtype=np.float32)))
            self.k = torch.nn.Parameter(torch.from_numpy(np.array(params.k, dtype=np.float32)))
            self.bias = torch.nn.Parameter(torch.from_numpy(np.array(params.bias, dtype=np.float32)))
            self.tau, self.alpha, self.top_k = params.tau, params.alpha, params.top_k
            self.num_nodes = graph.num_nodes
            self.max_degree = graph.max_out_degree
            src = torch.from_numpy(np.array(graph.src, dtype=np.int64))
            slot = torch.from_numpy(np.arange(graph.num_edges) - graph.row_ptr[graph.src])
            self.register_buffer("src", src)
            self.register_buffer("dst", torch.from_numpy(np.array(graph.col_idx, dtype=np.int64)))
            self.register_buffer("slot", slot)  # position of each edge inside its segment

        def edge_pi(self) -> "torch.Tensor":
            n, src = self.num_nodes, self.src
            z = ((self.q[src] * self.k[self.dst]).sum(-1) + self.bias) / self.tau
            if 0 < self.top_k < self.max_degree:
                with torch.no_grad():  # which edges survive top-k (no gradient through a selection)
                    dense = z.new_full((n, self.max_degree), float("-inf"))
                    dense[src, self.slot] = z
                    top = dense.topk(self.top_k, dim=1).indices
                    keep = torch.zeros_like(dense, dtype=torch.bool).scatter_(1, top, True)
                    kept = keep[src, self.slot]
                z = z.masked_fill(~kept, float("-inf"))
            # segment softmax (as torch_geometric.utils.softmax): max of each segment, exp, sum
            zmax = z.new_full((n,), float("-inf")).scatter_reduce(0, src, z.detach(), "amax")
            ex = (z - zmax[src]).exp()
            denom = z.new_zeros(n).index_add_(0, src, ex)
            return ex / denom[src]

        def forward(self, energies: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
            pi = self.edge_pi()
            flow = self.alpha * energies[:, self.src] * pi  # [B, E]
            nxt = energies.new_zeros((energies.shape[0], self.num_nodes)).index_add_(1, self.dst, flow)
            return nxt, pi

    def torch_train_step(model: "TorchRouter", opt: Any, energies: "torch.Tensor", target: "torch.Tensor") -> Any:
        opt.zero_grad(set_to_none=True)
        nxt, _ = model(energies)
        loss = torch.nn.functional.mse_loss(nxt, target)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        return loss, norm

    def make_torch(params: ew.RouterParams, graph: ew.Graph) -> tuple["TorchRouter", Any]:
        model = TorchRouter(graph, params)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        return model, opt


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max(max|b|, tiny)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.abs(b).max()) if b.size else 0.0, 1e-30)
    return float(np.abs(a - b).max()) / scale if b.size else 0.0


def verify(graph: ew.Graph, params: ew.RouterParams, x: np.ndarray, tgt: np.ndarray) -> dict[str, float]:
    """Run one forward and one train step through both implementations from the same start.

    Returns, per compared array, max|torch - numpy| / max|numpy| (forward values and
    gradients) or max|torch - numpy| / lr (parameters after one AdamW step: the first step
    moves each parameter by about lr, and by less where the gradient is near Adam's eps,
    where float32 rounding of the gradient shows most), and the number of edges kept by
    one top-k and not the other."""
    be = NumpyBackend()
    router = ew.Router(graph, _copy_params(params), backend=be)
    out = router.forward(x)
    ref_next = be.to_numpy(out.next_energies)
    ref_pi = be.to_numpy(out.edge_pi)
    _, g = be.mse(out.next_energies, tgt)
    grads = router.backward(out, g)
    opt = ew.AdamW(router, lr=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM)
    router.train_step(x, tgt, opt)
    after = router.params()

    model, topt = make_torch(params, graph)
    xt, tt = torch.from_numpy(x), torch.from_numpy(tgt)
    with torch.no_grad():
        t_next, t_pi = model(xt)
    torch_train_step(model, topt, xt, tt)  # grads are those of the starting parameters
    errors = {
        "next_energies": _rel_err(t_next.numpy(), ref_next),
        "edge_pi": _rel_err(t_pi.numpy(), ref_pi),
        "kept_mask_mismatches": float(np.count_nonzero((t_pi.numpy() > 0) != (ref_pi > 0))),
        "grad_q": _rel_err(model.q.grad.numpy(), be.to_numpy(grads.q)),
        "grad_k": _rel_err(model.k.grad.numpy(), be.to_numpy(grads.k)),
        "grad_bias": _rel_err(model.bias.grad.numpy(), be.to_numpy(grads.bias)),
        "q_after_step (/ lr)": float(np.abs(model.q.detach().numpy() - after.q).max()) / LR,
        "k_after_step (/ lr)": float(np.abs(model.k.detach().numpy() - after.k).max()) / LR,
        "bias_after_step (/ lr)": float(np.abs(model.bias.detach().numpy() - after.bias).max()) / LR,
    }
    return errors


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
