"""Training on the user's graph and data: graph.path, train.task (arrays), val_loss, --graph/--data.

A CLI run on a user graph + data file writes val_loss to every metrics file (jsonl, CSV, JSON,
summary); val_loss is the training objective on the held-out rows (checked against a direct
NumPy computation, and on every backend against NumPy); every bad file is an error naming
the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from energetic_wgpu import Graph, Router, get_backend
from energetic_wgpu.cli import main
from energetic_wgpu.config import from_dict, load_config
from energetic_wgpu.errors import ConfigError, DataError
from energetic_wgpu.trainer import Trainer
from energetic_wgpu.userdata import load_arrays, load_graph, split_holdout
from energetic_wgpu.heldout import HeldOut

N = 12
# src, dst, weight: every node links to i+1 and i+5; node 11 is a sink; node 4 has 3 out-edges
EDGES = [(i, (i + 1) % N, 0.5) for i in range(N - 1)] + [(i, (i + 5) % N, -0.25) for i in range(N - 1)] + [(4, 4, 1.0)]


def write_edges(path: Path, edges=EDGES, weights: bool = True) -> Path:
    lines = ["# a test graph", ""]
    for k, (s, d, w) in enumerate(edges):
        sep = "," if k % 3 == 0 else ("\t" if k % 3 == 1 else " ")
        lines.append(f"{s}{sep}{d}" + (f"{sep}{w}" if weights else "") + ("  % trailing comment" if k == 2 else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_data(path: Path, samples: int = 30, n: int = N, seed: int = 0, **extra) -> Path:
    rng = np.random.default_rng(seed)
    e = rng.random((samples, n)).astype(np.float32)
    arrays = {"energies": e, "targets": 0.75 * np.roll(e, 1, axis=1) + 0.25 * np.roll(e, 5, axis=1), **extra}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def small(*extra: str) -> list[str]:
    return ["--set", "router.dim=4", "--set", "train.batch_size=4", "--set", "train.log_every=3", *extra]


# ------------------------------------------------------------------- graphs
def test_graph_formats_agree(tmp_path):
    """Edge list, CSR .npz and scipy .npz give one graph: same CSR arrays and weights."""
    from_text = load_graph(write_edges(tmp_path / "g.txt"))
    src = np.array([e[0] for e in EDGES])
    order = np.argsort(src, kind="stable")
    assert from_text.num_nodes == N and from_text.num_edges == len(EDGES)
    np.testing.assert_array_equal(from_text.col_idx, np.array([e[1] for e in EDGES])[order])
    np.testing.assert_array_equal(from_text.weights, np.array([e[2] for e in EDGES])[order])
    assert from_text.out_degree[4] == 3 and from_text.out_degree[N - 1] == 0
    # per-edge results go back to the file's edge order
    np.testing.assert_array_equal(from_text.to_input_order(from_text.weights), [e[2] for e in EDGES])

    np.savez(tmp_path / "csr.npz", row_ptr=from_text.row_ptr, col_idx=from_text.col_idx, weights=from_text.weights)
    from_csr = load_graph(tmp_path / "csr.npz")
    m = sp.csr_matrix((from_text.weights, from_text.col_idx, from_text.row_ptr), shape=(N, N))
    sp.save_npz(tmp_path / "scipy.npz", m.tocoo())
    from_scipy = load_graph(tmp_path / "scipy.npz")
    assert from_csr.fingerprint == from_text.fingerprint
    np.testing.assert_array_equal(from_csr.weights, from_text.weights)
    # scipy orders each row by column: the same edges and weights, sorted within a source
    assert from_scipy.num_edges == len(EDGES)
    np.testing.assert_array_equal(from_scipy.row_ptr, from_text.row_ptr)
    dense = np.zeros((N, N))
    dense[from_scipy.src, from_scipy.col_idx] = from_scipy.weights
    np.testing.assert_array_equal(dense, m.toarray())

    unweighted = load_graph(write_edges(tmp_path / "u.edges", weights=False))
    assert unweighted.weights is None and unweighted.fingerprint == from_text.fingerprint


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 1\n1 2\n2 x\n", "line 3: dst must be an int node id >= 0, got 'x'"),
        ("0 1\n\n# c\n1 2 3 4\n", "line 4: expected 'src dst' or 'src dst weight', got '1 2 3 4'"),
        ("0 1 0.5\n1 2\n", "line 2: every line must have a weight or none does"),
        ("0 1 nan\n", "line 1: the weight must be finite, got 'nan'"),
        ("0 1 heavy\n", "line 1: the weight must be a number, got 'heavy'"),
        ("0 -1\n", "line 1: dst must be an int node id >= 0, got -1"),
        ("# nothing\n", "the edge list holds no edges"),
    ],
)
def test_bad_edge_list_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_graph(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_bad_graph_npz(tmp_path):
    np.savez(tmp_path / "a.npz", rows=np.arange(3))
    with pytest.raises(DataError, match=r"a\.npz: missing arrays: a graph \.npz needs row_ptr and col_idx.*found: rows"):
        load_graph(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", row_ptr=np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"b\.npz: missing array 'col_idx'"):
        load_graph(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", row_ptr=np.array([0, 1, 2]), col_idx=np.array([1, 7]))
    with pytest.raises(DataError, match=r"c\.npz: col_idx values must be node ids in \[0, 2\), got col_idx\[1\] = 7"):
        load_graph(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", row_ptr=np.array([0, 1]), col_idx=np.array([0]), weights=np.array([np.inf]))
    with pytest.raises(DataError, match=r"d\.npz: weights must be finite"):
        load_graph(tmp_path / "d.npz")
    sp.save_npz(tmp_path / "e.npz", sp.csr_matrix(np.ones((2, 3))))
    with pytest.raises(DataError, match=r"must be square \[N, N\].*got shape \(2, 3\)"):
        load_graph(tmp_path / "e.npz")
    with pytest.raises(DataError, match=r"nope\.txt: no such graph file"):
        load_graph(tmp_path / "nope.txt")


# --------------------------------------------------------------------- data
def test_bad_data_files(tmp_path):
    def err(**arrays) -> str:
        path = tmp_path / "d.npz"
        np.savez(path, **arrays)
        with pytest.raises(DataError) as info:
            load_arrays(path, N)
        assert str(info.value).startswith(str(path))
        return str(info.value)

    e = np.ones((5, N), np.float32)
    assert "missing array 'targets'" in err(energies=e) and "arrays found: energies" in err(energies=e)
    assert "missing array 'energies'" in err(targets=e)
    assert "energies has 7 columns but the graph has N = 12 nodes" in err(energies=np.ones((5, 7)), targets=e)
    assert "targets must have the shape of energies (5, 12), got (4, 12)" in err(energies=e, targets=e[:4])
    bad = e.copy()
    bad[2, 3] = np.nan
    assert "targets must be finite, got targets[2, 3] = nan (1 non-finite values)" in err(energies=e, targets=bad)
    assert "energies must be 2-D [S, N]" in err(energies=e[0], targets=e)
    assert "unexpected arrays weights" in err(energies=e, targets=e, weights=e)
    assert "mask must be bool (or 0/1 integers)" in err(energies=e, targets=e, mask=np.full((5, N), 2))
    assert "mask must have the shape of energies" in err(energies=e, targets=e, mask=np.ones((5, 3), bool))
    assert "holds no samples" in err(energies=e[:0], targets=e[:0])
    assert "energies must be a float array" in err(energies=e.astype(bool), targets=e)
    np.save(tmp_path / "single.npy", e)
    with pytest.raises(DataError, match="single.npy: expected a .npz archive"):
        load_arrays(tmp_path / "single.npy", N)
    e_, t_, m_ = load_arrays(write_data(tmp_path / "ok.npz", mask=np.eye(30, N, dtype=np.int8)), N)
    assert e_.dtype == t_.dtype == np.float32 and m_.dtype == np.bool_ and m_.sum() == N


def test_split_is_deterministic_and_disjoint():
    train, val = split_holdout(31, 0.1, seed=3)
    assert len(val) == 4 and len(train) == 27  # ceil(3.1)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(31))
    t2, v2 = split_holdout(31, 0.1, seed=3)
    assert train.tolist() == t2.tolist() and val.tolist() == v2.tolist()
    assert split_holdout(31, 0.1, seed=4)[1].tolist() != val.tolist()
    assert len(split_holdout(5, 0.0, 0)[1]) == 0
    with pytest.raises(DataError, match="leaves no training sample"):
        split_holdout(1, 0.5, 0)


# ------------------------------------------------------------------- config
def test_config_graph_path_and_arrays_task(tmp_path):
    cfg = from_dict({"graph": {"path": "g.txt"}, "train": {"task": {"name": "arrays", "path": "d.npz"}}})
    assert cfg.graph.path == "g.txt" and cfg.train.task.val_fraction == 0.1
    assert cfg.to_dict()["graph"] == {"path": "g.txt"}  # no lattice keys next to a path
    assert from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"graph\.path and the lattice keys \(graph\.layers\) are exclusive"):
        from_dict({"graph": {"path": "g.txt", "layers": 3}})
    assert load_config(None, ["graph.path=g.txt"]).graph.path == "g.txt"  # the defaults name no lattice key
    (tmp_path / "lattice.yaml").write_text("graph:\n  layers: 4\n  nodes_per_layer: 8\n")
    with pytest.raises(ConfigError, match=r"graph\.path and the lattice keys \(graph\.layers, graph\.nodes_per_layer\)"):
        load_config(tmp_path / "lattice.yaml", ["graph.path=g.txt"])
    with pytest.raises(ConfigError, match=r"train\.task\.path must name a \.npz file"):
        from_dict({"train": {"task": {"name": "arrays"}}})
    with pytest.raises(ConfigError, match=r"train\.task\.path is only read when train\.task\.name is 'arrays'"):
        from_dict({"train": {"task": {"path": "d.npz"}}})
    with pytest.raises(ConfigError, match=r"train\.task\.val_fraction must be a finite number >= 0 and < 1, got 1"):
        from_dict({"train": {"task": {"val_fraction": 1}}})


# --------------------------------------------------------------- validation
def test_val_loss_is_the_objective_on_held_out_rows(tmp_path):
    """Trainer.val_loss() equals the mse of a direct NumPy forward over the held-out rows, and
    does not change the parameters."""
    cfg = from_dict({
        "graph": {"path": str(write_edges(tmp_path / "g.txt"))},
        "router": {"dim": 4, "top_k": 0},
        "train": {"steps": 5, "batch_size": 4, "seed": 2,
                  "task": {"name": "arrays", "path": str(write_data(tmp_path / "d.npz")), "val_fraction": 0.25}},
        "backend": {"name": "numpy"},
    })
    t = Trainer(cfg, write_files=False, progress=False)
    t.run()
    e, y, _ = load_arrays(tmp_path / "d.npz", N)
    _, val_rows = split_holdout(30, 0.25, seed=2)
    assert t.validation.num_samples == len(val_rows) == 8 and t.data.n == 22
    before = t.router.params()
    got = t.val_loss()
    ref = Router(t.graph, t.router.params(), get_backend("numpy", dtype="float64"))
    pred = np.asarray(ref.forward(e[val_rows].astype(np.float64)).next_energies)
    np.testing.assert_allclose(got, np.mean((pred - y[val_rows]) ** 2), rtol=1e-5)
    np.testing.assert_array_equal(t.router.params().q, before.q)
    assert [r["val_loss"] for r in t.collector.records][-1] == pytest.approx(got, rel=1e-6)


@pytest.mark.parametrize("loss, use_mask, lam", [("mse", False, 0.0), ("mse", True, 0.3), ("cross_entropy", False, 0.0)])
def test_held_out_chunks_and_backends_agree(backend, loss, use_mask, lam):
    """Chunked evaluation equals one forward over all rows; every backend matches NumPy."""
    from energetic_wgpu import RouterParams

    g = Graph.from_edges([s for s, _, _ in EDGES], [d for _, d, _ in EDGES], N)
    rng = np.random.default_rng(5)
    e = rng.random((11, N)).astype(np.float32)
    y = rng.random((11, N)).astype(np.float32)
    mask = rng.random((11, N)) < 0.4 if use_mask else None
    params = RouterParams.init(g, dim=4, top_k=0, seed=1, noise=0.5)
    np_be = get_backend("numpy")
    whole = HeldOut(np_be, e, y, mask, chunk=64).evaluate(Router(g, params, np_be), loss, entropy_lambda=lam)
    chunked = HeldOut(np_be, e, y, mask, chunk=3).evaluate(Router(g, params, np_be), loss, entropy_lambda=lam)
    assert chunked == pytest.approx(whole, rel=1e-6) and whole > 0
    got = HeldOut(backend, e, y, mask, chunk=4).evaluate(Router(g, params, backend), loss, entropy_lambda=lam)
    assert abs(got - whole) <= 1e-5 * max(1.0, abs(whole))


# ---------------------------------------------------------------------- CLI
def test_cli_train_on_user_graph_and_data_writes_val_loss_everywhere(tmp_path, capsys):
    graph, data, out = write_edges(tmp_path / "g.txt"), write_data(tmp_path / "d.npz"), tmp_path / "run"
    rc = main(["train", "--graph", str(graph), "--data", str(data), "--backend", "numpy", "--steps", "7",
               "--out", str(out), "--no-progress", *small()])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert f"{N} nodes, {len(EDGES)} edges" in text and "val_loss" in text
    logged = [1, 3, 6, 7]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val_events = [ev for ev in events if ev["event"] == "router.validation"]
    assert [ev["step"] for ev in val_events] == logged and all(ev["val_loss"] > 0 for ev in val_events)
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_loss"]) for r in rows] == [ev["val_loss"] for ev in val_events]
    records = json.loads((out / "metrics.json").read_text())
    assert [r["val_loss"] for r in records] == [ev["val_loss"] for ev in val_events]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_val_loss"] == val_events[-1]["val_loss"]
    assert summary["best_val_loss"] == min(ev["val_loss"] for ev in val_events)
    assert summary["num_nodes"] == N and summary["layers"] is None
    saved = (out / "config.yaml").read_text()
    assert f"path: {graph}" in saved and f"path: {data}" in saved and "layers" not in saved
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    # resuming rereads the files named in the run's config and keeps logging val_loss
    assert main(["train", "--resume", str(out), "--steps", "9", "--no-progress"]) == 0
    capsys.readouterr()
    records = json.loads((out / "metrics.json").read_text())
    assert [r["step"] for r in records] == [*logged, 9] and records[-1]["val_loss"] > 0


def test_teacher_runs_have_an_empty_val_loss_column(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--backend", "numpy", "--steps", "2", "--out", str(out), "--no-progress",
                 "--set", "graph.layers=2", "--set", "graph.nodes_per_layer=8", *small()]) == 0
    capsys.readouterr()
    with open(out / "metrics.csv") as f:
        assert [r["val_loss"] for r in csv.DictReader(f)] == ["", ""]
    assert json.loads((out / "summary.json").read_text())["final_val_loss"] is None


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_array", "d.npz: missing array 'targets'"),
        ("columns", "d.npz: energies has 9 columns but the graph has N = 12 nodes"),
        ("nonfinite", "d.npz: energies must be finite, got energies[0, 0] = inf"),
        ("edge_line", "g.txt, line 4: expected 'src dst' or 'src dst weight'"),
        ("no_graph", "missing.txt: no such graph file"),
        ("graph_and_set", "--graph replaces the graph section; it cannot be combined with --set graph.layers"),
        ("mask_ce", "d.npz: a mask is only supported with train.loss: mse"),
        ("too_few", "d.npz: val_fraction 0.5 of 1 samples leaves no training sample"),
    ],
)
def test_cli_bad_files_exit_2_naming_the_file(tmp_path, capsys, case, message):
    graph, data = write_edges(tmp_path / "g.txt"), tmp_path / "d.npz"
    extra: list[str] = []
    e = np.ones((6, N), np.float32)
    arrays = {"energies": e, "targets": e}
    if case == "missing_array":
        del arrays["targets"]
    elif case == "columns":
        arrays = {"energies": np.ones((6, 9)), "targets": np.ones((6, 9))}
    elif case == "nonfinite":
        arrays["energies"] = np.where(np.eye(6, N) > 0, np.inf, e)
    elif case == "edge_line":
        graph.write_text("0 1\n1 2\n\n2 3 0.5 9\n")
    elif case == "no_graph":
        graph = tmp_path / "missing.txt"
    elif case == "graph_and_set":
        extra = ["--set", "graph.layers=3"]
    elif case == "mask_ce":
        arrays["mask"] = np.ones((6, N), bool)
        extra = ["--set", "train.loss=cross_entropy"]
    elif case == "too_few":
        arrays = {"energies": e[:1], "targets": e[:1]}
        extra = ["--set", "train.task.val_fraction=0.5"]
    np.savez(data, **arrays)
    rc = main(["train", "--graph", str(graph), "--data", str(data), "--backend", "numpy", "--steps", "1",
               "--out", str(tmp_path / "run"), "--no-progress", *small(*extra)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------- README
def readme_section() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("### Train on your data")
    end = text.index("\n### ", start + 1)
    return text[start:end]


def test_readme_train_on_your_data_example_runs(tmp_path, capsys, monkeypatch):
    """The README's example, as written: the Python block writes the files, the command trains."""
    section = readme_section()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = next(line[2:] for line in section.splitlines() if line.startswith("$ energetic-wgpu train"))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    argv = command.split()[1:]
    assert argv[:1] == ["train"] and "--graph" in argv and "--data" in argv
    rc = main([*argv, "--backend", "numpy", "--no-progress"])
    capsys.readouterr()
    assert rc == 0
    out = Path(argv[argv.index("--out") + 1])
    records = json.loads((out / "metrics.json").read_text())
    # the routing in the example's targets is learnable: the held-out loss falls 100-fold
    assert records[-1]["val_loss"] < 0.01 * records[0]["val_loss"]


def test_trainer_api_with_a_graph_data_and_held_out_set(tmp_path):
    """From Python: Trainer(graph=..., data=ArrayDataset(...), validation=HeldOut(...))."""
    from energetic_wgpu.config import load_config
    from energetic_wgpu.tasks import ArrayDataset

    g = load_graph(write_edges(tmp_path / "g.txt"))
    e, y, _ = load_arrays(write_data(tmp_path / "d.npz"), N)
    be = get_backend("numpy")
    cfg = load_config(None, ["router.dim=4", "train.steps=4", "train.log_every=2", "backend.name=numpy"])
    t = Trainer(cfg, graph=g, data=ArrayDataset(e[:24], y[:24], batch_size=4), validation=HeldOut(be, e[24:], y[24:]),
                write_files=False, progress=False)
    s = t.run()
    assert t.graph is g and s.num_nodes == N and s.num_edges == len(EDGES)
    assert [r["step"] for r in t.collector.records] == [1, 2, 4]
    assert all(r["val_loss"] > 0 for r in t.collector.records) and s.final_val_loss == t.collector.records[-1]["val_loss"]
    with pytest.raises(Exception, match="graph must be an energetic_wgpu.Graph"):
        Trainer(cfg, graph="g.txt", write_files=False, progress=False)


def test_edge_list_node_count_comment(tmp_path):
    """'# nodes: N' (SNAP writes '# Nodes: N Edges: E') adds nodes after the last id used, and
    allows a graph without edges."""
    path = tmp_path / "g.txt"
    path.write_text("# Nodes: 6 Edges: 2\n0 1\n1 2\n")
    g = load_graph(path)
    assert g.num_nodes == 6 and g.num_edges == 2 and g.sink_mask.tolist() == [False, False, True, True, True, True]
    path.write_text("# nodes: 3\n")
    assert load_graph(path).num_nodes == 3 and load_graph(path).num_edges == 0
    path.write_text("0 1\n# nodes: 2\n1 5\n")
    with pytest.raises(DataError, match=r"g\.txt, line 2: '# nodes: 2' but the edges use node id 5"):
        load_graph(path)
    path.write_text("0 1 # nodes in a comment that says nothing\n")
    assert load_graph(path).num_nodes == 2


def test_size_check_uses_the_loaded_graph(tmp_path):
    from energetic_wgpu.sizing import check_train_fits, estimate_train_bytes

    path = write_edges(tmp_path / "g.txt")
    g, cfg = load_graph(path), from_dict({"graph": {"path": str(path)}})
    need = estimate_train_bytes(cfg, g)
    assert 0 < need < estimate_train_bytes(cfg) / 100  # 12 nodes, not the default lattice's 10,240
    assert check_train_fits(cfg, available=need, graph=g) == need
    with pytest.raises(ConfigError, match=rf"graph\.path {re.escape(str(path))} \(12 nodes, 23 edges\) with "
                                          r"train\.batch_size 64 needs about .* lower train\.batch_size"):
        check_train_fits(cfg, available=need - 1, graph=g)
