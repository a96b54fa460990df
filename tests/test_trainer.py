"""Trainer, data sources and metrics: exact resume, Ctrl-C, readback only when logging, files."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys

import numpy as np
import pytest

import energetic_wgpu as ew
from energetic_wgpu.backends.numpy_backend import NumpyBackend
from energetic_wgpu.config import load_config
from energetic_wgpu.metrics import FIELDS, MetricsCollector, plot_metrics
from energetic_wgpu.tasks import ArrayDataset, Batch, TeacherTask
from energetic_wgpu.trainer import Trainer

SMALL = [
    "graph.layers=4", "graph.nodes_per_layer=48", "graph.local_neighbors=4", "graph.jump_neighbors=1",
    "router.dim=4", "router.top_k=2", "train.batch_size=6", "train.log_every=5", "train.steps=20",
    "train.checkpoint_every=0", "backend.name=numpy", "optimizer.schedule.warmup_steps=3",
]


def small_config(*extra):
    return load_config(overrides=[*SMALL, *extra])


def _params_bytes(trainer):
    p = trainer.router.params()
    return [getattr(p, n).tobytes() for n in ("q", "k", "bias")]


def _opt_bytes(trainer):
    s = trainer.optimizer.state()
    return [s["t"]] + [s[k][n].tobytes() for k in ("m", "v") for n in ("q", "k", "bias")]


def test_resume_is_bit_identical(tmp_path):
    cfg = small_config()
    straight = Trainer(cfg, out_dir=tmp_path / "a", progress=False)
    straight.run()
    first = Trainer(cfg, out_dir=tmp_path / "b", progress=False)
    first.run(steps=10)
    second = Trainer(cfg, out_dir=tmp_path / "b", progress=False)
    assert second.resume(tmp_path / "b") == 10
    summary = second.run()
    assert summary.steps == 20 and summary.resumed_from == 10
    assert _params_bytes(second) == _params_bytes(straight)
    assert _opt_bytes(second) == _opt_bytes(straight)
    # the resumed run's metrics continue the first half's: same rows as the straight run
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 5, 10, 15, 20]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_array_dataset_resume_is_bit_identical(tmp_path):
    cfg = small_config("train.steps=14")
    g = ew.build_lattice(cfg.graph.to_graph_config())
    rng = np.random.default_rng(3)
    energies = rng.random((13, g.num_nodes), dtype=np.float32)
    targets = rng.random((13, g.num_nodes), dtype=np.float32) * 0.1

    def make(out):
        return Trainer(cfg, data=ArrayDataset(energies, targets, batch_size=5, seed=7), out_dir=out, progress=False)

    straight = make(tmp_path / "a")
    straight.run()
    half = make(tmp_path / "b")
    half.run(steps=5)  # 2 batches per epoch: stops in the middle of epoch 2
    assert half.data.state()["epoch"] == 2
    resumed = make(tmp_path / "b")
    resumed.resume(tmp_path / "b" / "checkpoint.npz")
    resumed.run()
    assert _params_bytes(resumed) == _params_bytes(straight)


def test_array_dataset_order():
    e = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    ds = ArrayDataset(e, e, batch_size=4, seed=1)
    rows = [ds.batch(s).energies[:, 0].astype(int).tolist() for s in range(1, 6)]
    assert all(len(r) == 4 for r in rows)
    assert sorted(rows[0] + rows[1]) == sorted(set(rows[0] + rows[1]))  # no repeats within an epoch
    assert ArrayDataset(e, e, batch_size=4, seed=1).batch(1).energies.tobytes() == np.asarray(
        e[[int(v) for v in rows[0]]]).tobytes()
    with pytest.raises(ew.ShapeError, match="targets must have the shape of energies"):
        ArrayDataset(e, e[:, :2])


def test_teacher_task_is_a_function_of_seed_and_step():
    g = ew.build_lattice(ew.GraphConfig(3, 16, 2, 1))
    be = NumpyBackend()
    t1 = TeacherTask(g, be, dim=4, batch_size=3, seed=5)
    t2 = TeacherTask(g, be, dim=4, batch_size=3, seed=5)
    assert t1.batch(7).target.tobytes() == t2.batch(7).target.tobytes()
    assert t1.energies(7).tobytes() != t1.energies(8).tobytes()
    layer0 = TeacherTask(g, be, dim=4, batch_size=3, seed=5, inject="layer0").energies(1)
    assert np.all(layer0[:, 16:] == 0) and np.all(layer0[:, :16] > 0)


class _Interrupting:
    """Wraps a data source; raises KeyboardInterrupt (or sends SIGINT) when asked for step ``at``."""

    def __init__(self, inner, at, how="raise"):
        self.inner, self.at, self.how = inner, at, how

    def batch(self, step):
        if step == self.at:
            if self.how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # the trainer finishes this step, then stops
        return self.inner.batch(step)

    def state(self):
        return self.inner.state()

    def load_state(self, state):
        self.inner.load_state(state)


@pytest.mark.parametrize("how, saved_step", [("raise", 6), ("signal", 7)])
def test_ctrl_c_saves_and_resume_matches(tmp_path, how, saved_step):
    # the handler the trainer must put back (Python's default, or SIG_IGN under a shell that
    # started this process in the background ignoring SIGINT)
    before = signal.getsignal(signal.SIGINT)
    cfg = small_config("train.steps=12")
    straight = Trainer(cfg, out_dir=tmp_path / "a", progress=False)
    straight.run()
    t = Trainer(cfg, out_dir=tmp_path / "b", progress=False)
    t.data = _Interrupting(t.data, at=7, how=how)
    lines = []
    t._echo = lines.append
    summary = t.run()
    assert summary.interrupted and summary.steps == saved_step
    assert any("checkpoint saved" in line for line in lines)
    events = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "train.interrupted" and e["saved"] for e in events)
    resumed = Trainer(cfg, out_dir=tmp_path / "b", progress=False)
    assert resumed.resume(tmp_path / "b") == saved_step
    resumed.run()
    assert _params_bytes(resumed) == _params_bytes(straight)
    assert signal.getsignal(signal.SIGINT) is before


class _CountingBackend(NumpyBackend):
    def __init__(self):
        super().__init__()
        self.readbacks = 0

    def to_numpy(self, x):
        self.readbacks += 1
        return super().to_numpy(x)


def test_reads_back_only_when_logging():
    be = _CountingBackend()
    t = Trainer(small_config("train.steps=12", "train.log_every=4"), backend=be, write_files=False, progress=False)
    t.run()
    assert [r["step"] for r in t.collector.records] == [1, 4, 8, 12]
    # loss, grad_norm, metrics and the optimizer's skip counters at logged steps only, plus the
    # skip counters once at the start of the run
    assert be.readbacks == 4 * len(t.collector.records) + 1


def test_loss_decreases_and_files(tmp_path):
    out = tmp_path / "run"
    s = Trainer(small_config("train.steps=30", "train.checkpoint_every=10"), out_dir=out, progress=False).run()
    assert s.final_loss < 0.7 * json.loads((out / "metrics.json").read_text())[0]["loss"]
    assert s.best_loss <= s.final_loss and s.steps == 30 and s.num_nodes == 4 * 48 and s.layers == 4
    for name in ("metrics.jsonl", "metrics.csv", "metrics.json", "summary.json", "config.yaml", "checkpoint.npz"):
        assert (out / name).is_file(), name
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    fwd = [e for e in events if e["event"] == "router.forward"]
    bwd = [e for e in events if e["event"] == "router.backward"]
    assert [e["step"] for e in fwd] == [1, 5, 10, 15, 20, 25, 30] == [e["step"] for e in bwd]
    assert set(fwd[0]) == {"event", "timestamp", "step", "total_energy", "active_nodes", "active_edges",
                           "avg_entropy", "max_edge_flow"}
    assert set(bwd[0]) == {"event", "timestamp", "step", "loss", "grad_norm", "lr"}
    assert sum(e["event"] == "train.checkpoint" for e in events) == 3  # steps 10, 20 and the final one
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FIELDS and len(rows) == 7
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_loss"] == s.final_loss and summary["backend"] == "numpy (float32)"
    assert summary["steps_per_second"] > 0 and summary["num_edges"] > 0
    assert MetricsCollector.read_events(out / "metrics.jsonl") == json.loads((out / "metrics.json").read_text())


def test_plot_is_optional(tmp_path, monkeypatch, caplog):
    rows = [{"step": 1, "loss": 1.0, "avg_entropy": 1.0, "total_energy": 3.0}]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with caplog.at_level("INFO", logger="energetic_wgpu"):
        assert plot_metrics(rows, tmp_path / "p.png") is None
    assert "matplotlib is not installed" in caplog.text
    assert not (tmp_path / "p.png").exists()


def test_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"step": s, "loss": 1.0 / s, "avg_entropy": 1.0, "total_energy": 3.0} for s in range(1, 5)]
    assert plot_metrics(rows, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_short_run_on_every_backend(backend):
    cfg = small_config("train.steps=4", "train.log_every=2")
    t = Trainer(cfg, backend=backend, write_files=False, progress=False)
    s = t.run()
    assert s.steps == 4 and np.isfinite(s.final_loss) and len(t.collector.records) == 3


def test_resume_errors(tmp_path):
    cfg = small_config("train.steps=2")
    Trainer(cfg, out_dir=tmp_path / "a", progress=False).run()
    other = Trainer(small_config("graph.seed=3"), write_files=False, progress=False)
    with pytest.raises(ew.CheckpointError, match="another graph"):
        other.resume(tmp_path / "a")
    with pytest.raises(ew.CheckpointError, match="no checkpoint at"):
        other.resume(tmp_path / "nothing")
    wider = Trainer(small_config("router.dim=6"), write_files=False, progress=False)
    with pytest.raises(ew.CheckpointError, match="router dim 4"):
        wider.resume(tmp_path / "a")


def test_batch_dataclass():
    b = Batch(np.zeros((1, 2)), np.zeros((1, 2)))
    assert b.mask is None
