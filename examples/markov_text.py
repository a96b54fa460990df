"""A learned Markov chain on real text: the router as a character-level transition model.

The router's ``pi`` is a parameterized stochastic routing: with ``alpha = 1`` and no top-k,
each node's outgoing ``pi`` is a probability distribution over its successors. Give every
character one node and every observed character pair one edge, and ``pi`` *is* a Markov
chain over characters. This script trains it on text that ships with every Python — the
docstrings of a fixed list of standard-library modules and their public members — and checks
it against the closed-form optimum.

Data. The docstrings are joined (deterministic order, duplicates dropped), lower-cased,
whitespace runs collapsed to one space; the ``--vocab - 1`` most frequent characters keep their
own node and every other character maps to one "other" node. The text is read as a cycle
(the last character is followed by the first), so every node has a successor.

Batch. Let ``C[c, d]`` be the bigram counts, ``n_c = sum_d C[c, d]``, ``T = sum_c n_c`` (the
number of tokens) and ``R`` the number of characters that occur. The per-token cross-entropy
of a transition matrix ``P`` is

    L_tok(P) = -(1/T) sum_{c,d} C[c, d] log P[c, d].

Instead of one batch row per token we use one row per distinct current character ``c``:
energies = one-hot(c), so ``next_energies[c] = pi[c -> .]``, and target row
``t_c[d] = R * C[c, d] / T`` (the empirical next-character distribution ``C[c, d] / n_c``
weighted by ``c``'s count share ``n_c / T``, times R). The library's cross-entropy averages
over the R rows, so

    loss = (1/R) sum_c -sum_d t_c[d] log pi[c -> d] = L_tok(pi)   exactly.

L_tok is minimized by the count-based chain ``P*[c, d] = C[c, d] / n_c`` and its minimum is
the empirical conditional entropy

    H(next | current) = -(1/T) sum_{c,d} C[c, d] log(C[c, d] / n_c),

computed here in closed form (float64). The bias alone can represent any row-stochastic
``pi`` on the observed edges, so Adam drives ``L_tok`` to that optimum; Q and K (small ``dim``)
train along. The script asserts the trained cross-entropy is within ``--tolerance`` (1 %) of
H, then compares the router's n-step transitions ``forward(one_hot, steps=n)`` with the
matrix power ``P*^n`` of the count-based chain (max abs difference < ``--nstep-tolerance``).

Run::

    python examples/markov_text.py                  # default backend: auto
    python examples/markov_text.py --backend wgpu
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import time
from collections import Counter
from typing import Any, Sequence

import numpy as np

try:
    import energetic_wgpu as ew
except ImportError:  # run from a source checkout without installing: use the repository root
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    import energetic_wgpu as ew

#: standard-library modules whose docstrings make the corpus (fixed order)
MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions", "functools",
    "heapq", "inspect", "ipaddress", "itertools", "json", "logging", "math", "operator",
    "os", "pathlib", "pickle", "pprint", "random", "re", "shlex", "shutil", "statistics",
    "string", "subprocess", "tempfile", "textwrap", "threading", "types", "unittest",
    "uuid", "warnings", "zipfile",
)  # fmt: skip

OTHER = "\u00bf"  # the symbol printed for the "other" node


def collect_docstrings(modules: Sequence[str] = MODULES) -> str:
    """The docstrings of ``modules`` and of their public functions and classes defined in them,
    in a deterministic order (module order, then sorted member names), each once."""
    docs: dict[str, None] = {}
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - every listed module is in the stdlib
            continue
        if isinstance(mod.__doc__, str):
            docs.setdefault(mod.__doc__, None)
        for attr in sorted(vars(mod)):
            if attr.startswith("_"):
                continue
            obj = vars(mod)[attr]
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            doc = obj.__doc__
            if isinstance(doc, str) and doc.strip():
                docs.setdefault(doc, None)
    return "\n".join(docs)


def build_corpus(vocab: int, modules: Sequence[str] = MODULES) -> tuple[np.ndarray, list[str]]:
    """Token ids [T] and the alphabet (``vocab`` symbols, the last one "other")."""
    text = re.sub(r"\s+", " ", collect_docstrings(modules).lower()).strip()
    freq = Counter(text)
    # most frequent first, ties broken by the character itself: deterministic
    keep = [c for c, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab - 1]]
    alphabet = keep + [OTHER]
    index = {c: i for i, c in enumerate(keep)}
    other = len(keep)
    ids = np.fromiter((index.get(c, other) for c in text), dtype=np.int64, count=len(text))
    return ids, alphabet


def bigram_counts(ids: np.ndarray, v: int) -> np.ndarray:
    """C[c, d]: how often d follows c, reading ``ids`` as a cycle. float64 [v, v]."""
    nxt = np.roll(ids, -1)
    return np.bincount(ids * v + nxt, minlength=v * v).reshape(v, v).astype(np.float64)


def conditional_entropy(counts: np.ndarray) -> float:
    """H(next | current) in nats under the empirical bigram distribution (closed form)."""
    n = counts.sum(axis=1, keepdims=True)
    nz = counts > 0
    p = np.divide(counts, n, out=np.zeros_like(counts), where=n > 0)
    return float(-(counts[nz] * np.log(p[nz])).sum() / counts.sum())


def make_backend(name: str, adapter: str | None) -> ew.Backend:
    if name == "wgpu" and adapter is not None:
        return ew.get_backend("wgpu", adapter=int(adapter) if adapter.isdigit() else adapter)
    return ew.get_backend(name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto", choices=("numpy", "wgpu", "auto"))
    ap.add_argument("--adapter", default=None, help="wgpu adapter index or backend type (e.g. vulkan, opengl)")
    ap.add_argument("--vocab", type=int, default=48, help="number of nodes (characters incl. 'other')")
    ap.add_argument("--dim", type=int, default=4, help="Q/K feature dimension")
    ap.add_argument("--steps", type=int, default=200, help="training steps (full batch)")
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--log-every", type=int, default=50, help="read the loss back every N steps")
    ap.add_argument("--tolerance", type=float, default=0.01, help="allowed relative gap to the optimum")
    ap.add_argument("--nstep-tolerance", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None, backend: ew.Backend | None = None) -> dict[str, Any]:
    """Run the example; returns its results (and asserts them). ``backend`` overrides
    ``--backend``/``--adapter`` (the tests pass a backend object)."""
    args = parse_args(argv)
    be = backend if backend is not None else make_backend(args.backend, args.adapter)
    t0 = time.perf_counter()

    ids, alphabet = build_corpus(args.vocab)
    v = len(alphabet)
    counts = bigram_counts(ids, v)
    h_opt = conditional_entropy(counts)
    n_c = counts.sum(axis=1)
    total = counts.sum()

    # graph: one node per character, one edge per observed pair
    src, dst = np.nonzero(counts)
    graph = ew.Graph.from_edges(src, dst, v)
    params = ew.RouterParams.init(graph, dim=args.dim, tau=1.0, alpha=1.0, top_k=0, seed=args.seed)
    router = ew.Router(graph, params, be)

    # batch: one row per occurring character; target row c = R * C[c, :] / T (see the docstring)
    rows = np.flatnonzero(n_c > 0)
    r = len(rows)
    energies = np.zeros((r, v), dtype=np.float32)
    energies[np.arange(r), rows] = 1.0
    target = (r * counts[rows] / total).astype(np.float32)
    x = be.asarray(energies)
    y = be.asarray(target)

    opt = ew.AdamW(
        router,
        lr=args.lr,
        betas=(0.9, 0.99),
        weight_decay=0.0,
        schedule=ew.CosineLR(args.lr, total_steps=args.steps, min_lr=args.lr * 0.05),
    )
    print(
        f"markov_text on {be.describe()}: {len(ids):,} characters, {v} nodes, {graph.num_edges} edges "
        f"(observed pairs), {r} batch rows"
    )
    print(f"optimum H(next|current) = {h_opt:.5f} nats/char (closed form)")
    for step in range(1, args.steps + 1):
        res = router.train_step(x, y, opt, loss="cross_entropy", steps=1)
        if step % args.log_every == 0 or step == args.steps:
            print(f"  step {step:5d}  cross-entropy {res.loss:.5f}")

    # final cross-entropy of the trained router, recomputed in float64 from its pi
    out = router.forward(energies, steps=1)
    pred = ew.to_numpy(out.next_energies).astype(np.float64)
    with np.errstate(divide="ignore"):
        logp = np.log(np.maximum(pred, 1e-30))
    ce = float(-(counts[rows] * logp).sum() / total)
    gap = (ce - h_opt) / h_opt

    # n-step transitions against the matrix power of the count-based chain
    p_star = np.divide(counts, n_c[:, None], out=np.zeros_like(counts), where=n_c[:, None] > 0)
    eye = np.eye(v, dtype=np.float32)
    nstep_err = {}
    for n in (1, 2, 3):
        got = ew.to_numpy(router.forward(eye, steps=n).next_energies).astype(np.float64)
        nstep_err[n] = float(np.abs(got - np.linalg.matrix_power(p_star, n)).max())
    elapsed = time.perf_counter() - t0

    print(f"trained cross-entropy   = {ce:.5f} nats/char")
    print(f"gap to the optimum      = {100 * gap:.3f} %  (limit {100 * args.tolerance:g} %)")
    for n, err in nstep_err.items():
        print(f"max |pi^{n} - P*^{n}|      = {err:.5f}")
    print(f"time {elapsed:.1f} s")

    assert np.isfinite(ce), "cross-entropy is not finite"
    assert gap < args.tolerance, f"trained cross-entropy {ce:.5f} is {100 * gap:.2f} % above the optimum {h_opt:.5f}"
    for n in (2, 3):
        assert nstep_err[n] < args.nstep_tolerance, f"{n}-step transition error {nstep_err[n]:.4f}"
    return {
        "backend": be.describe(),
        "characters": int(len(ids)),
        "nodes": v,
        "edges": graph.num_edges,
        "optimum": h_opt,
        "cross_entropy": ce,
        "gap": gap,
        "nstep_err": nstep_err,
        "seconds": elapsed,
    }


if __name__ == "__main__":
    main(sys.argv[1:])
