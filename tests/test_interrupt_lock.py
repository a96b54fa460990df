"""Interruption and locking: SIGTERM handled like SIGINT (checkpoint, event, exit 143), one
trainer per output folder (fcntl lock naming the holder's PID, released when it dies),
outputs with ordinary permissions, and the skipped-step guard of the training loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from energetic_wgpu.checkpoint import load_checkpoint
from energetic_wgpu.cli import main
from energetic_wgpu.config import load_config
from energetic_wgpu.errors import RunLockedError, TrainingError
from energetic_wgpu.optim import AdamW
from energetic_wgpu.rundir import LOCK_NAME, RunLock
from energetic_wgpu.tasks import Batch
from energetic_wgpu.trainer import Trainer

SMALL = ["--backend", "numpy", "--no-progress", "--set", "graph.layers=3", "--set", "graph.nodes_per_layer=32",
         "--set", "router.dim=4", "--set", "train.batch_size=4", "--set", "train.log_every=1"]
ENV = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp")}


def _events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _start_trainer(out: Path, steps: int = 100_000) -> subprocess.Popen:
    """A real `energetic-wgpu train` process, returned once it has finished a step."""
    cmd = [sys.executable, "-m", "energetic_wgpu", "train", *SMALL, "--steps", str(steps), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    for line in proc.stdout:
        if line.startswith("step"):
            return proc
    proc.kill()
    raise AssertionError(f"the trainer did not start: {proc.stderr.read()}")


def test_sigterm_checkpoints_and_exits_143_and_the_folder_is_locked(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _start_trainer(out)
    try:
        # a second trainer on the same folder is refused, naming the folder and the holder
        assert main(["train", *SMALL, "--steps", "3", "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"energetic-wgpu: error: the output folder {str(out)!r} is in use by another run "
                       f"(PID {proc.pid}); wait for it to finish or choose another --out")
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM) at step" in rest and "Traceback" not in err
    stopped = [e for e in _events(out) if e["event"] == "train.interrupted"]
    assert len(stopped) == 1 and stopped[0]["saved"] is True and stopped[0]["signal"] == "SIGTERM"
    step = load_checkpoint(out / "checkpoint.npz").step
    assert step == stopped[0]["step"] >= 1
    # the lock died with the process: resuming in this folder works
    assert main(["train", "--resume", str(out), "--steps", str(step + 2), "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoint.npz").step == step + 2


def test_lock_is_released_when_the_holder_is_killed(tmp_path, capsys):
    code = ("import sys; from energetic_wgpu.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(holder.pid)
        with pytest.raises(RunLockedError, match=rf"in use by another run \(PID {holder.pid}\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
        holder.wait(timeout=30)
    with RunLock(tmp_path) as lock, RunLock(tmp_path):  # re-entrant within one process
        assert lock.path.read_text().strip() == str(os.getpid())
    assert main(["train", *SMALL, "--steps", "2", "--out", str(tmp_path)]) == 0


def test_sigterm_in_process_finishes_the_step(tmp_path):
    cfg = load_config(overrides=["graph.layers=3", "graph.nodes_per_layer=32", "router.dim=4",
                                 "train.batch_size=4", "train.steps=12", "backend.name=numpy"])
    t = Trainer(cfg, out_dir=tmp_path, progress=False, echo=lambda s: None)
    inner = t.data

    class Terminating:
        def batch(self, step):
            if step == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            return inner.batch(step)

        def state(self):
            return inner.state()

    t.data = Terminating()
    summary = t.run()
    assert summary.interrupted and summary.steps == 5 and t.interrupted_by == "SIGTERM"
    assert load_checkpoint(tmp_path / "checkpoint.npz").step == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_outputs_share_the_umask_permissions(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert main(["train", *SMALL, "--steps", "2", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir() if p.is_file()}
    assert {"checkpoint.npz", "config.yaml", "metrics.jsonl", "summary.json", LOCK_NAME} <= set(modes)
    assert set(modes.values()) == {0o640}, modes


# --------------------------------------------------------------- skipped steps
def _skipping_after(n_ok: int):
    """An AdamW.skip_counts stand-in: every update after the first ``n_ok`` is skipped."""
    def skip_counts(self):
        skipped = max(0, self.t - n_ok)
        return skipped, skipped
    return skip_counts


def test_skipped_steps_are_logged_and_stop_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(AdamW, "skip_counts", _skipping_after(3), raising=False)
    rc = main(["train", *SMALL, "--steps", "50", "--set", "train.max_skipped_steps=4", "--out", str(tmp_path)])
    assert rc == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "energetic-wgpu: error: TrainingError: training stopped at step 7: the last 4 steps were skipped because "
        "the loss or the gradient norm was not finite (train.max_skipped_steps = 4); the parameters are those "
        "before step 4. Check the data for inf/NaN, lower optimizer.lr or set optimizer.max_grad_norm"
    )
    assert "warning: 1 step(s) up to step 4 skipped" in captured.out
    events = _events(tmp_path)
    skipped = [(e["step"], e["skipped"], e["consecutive"]) for e in events if e["event"] == "train.skipped"]
    assert skipped == [(4, 1, 1), (5, 1, 2), (6, 1, 3), (7, 1, 4)]
    assert [e["step"] for e in events if e["event"] == "train.stopped"] == [7]


def test_skipped_steps_checked_only_at_log_points(tmp_path, monkeypatch):
    calls = []

    def skip_counts(self):
        calls.append(self.t)
        return 0, 2  # two skipped steps before this run, none in a row now

    monkeypatch.setattr(AdamW, "skip_counts", skip_counts, raising=False)
    cfg = load_config(overrides=["graph.layers=3", "graph.nodes_per_layer=32", "router.dim=4", "train.batch_size=4",
                                 "train.steps=12", "train.log_every=4", "backend.name=numpy"])
    t = Trainer(cfg, out_dir=tmp_path, progress=False, echo=lambda s: None)
    assert t.run().steps == 12
    assert calls == [0, 1, 4, 8, 12]  # run start, then the log points
    assert not [e for e in _events(tmp_path) if e["event"] == "train.skipped"]
    assert np.isfinite(t.collector.records[-1]["loss"])


def test_temp_file_of_a_killed_save_is_removed_at_start(tmp_path, capsys):
    stale = tmp_path / ".checkpoint.npz.k1ll3d00.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"
    other.write_text("mine")
    assert main(["train", *SMALL, "--steps", "1", "--out", str(tmp_path)]) == 0
    assert not stale.exists() and other.read_text() == "mine"
    assert load_checkpoint(tmp_path / "checkpoint.npz").step == 1


class _HugeTargets:
    """Wraps a data source: targets of 1e30, so every step's loss overflows float32 to inf."""

    def __init__(self, inner):
        self.inner = inner

    def batch(self, step):
        b = self.inner.batch(step)
        return Batch(b.energies, np.full(tuple(b.target.shape), 1e30, dtype=np.float32), b.mask)

    def state(self):
        return self.inner.state()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_every_step_skipped_stops_the_run_with_parameters_unchanged(backend, tmp_path):
    cfg = load_config(overrides=["graph.layers=3", "graph.nodes_per_layer=32", "router.dim=4", "train.batch_size=4",
                                 "train.steps=40", "train.log_every=2", "train.max_skipped_steps=5"])
    t = Trainer(cfg, backend=backend, out_dir=tmp_path, progress=False, echo=lambda s: None)
    before = t.router.params()
    t.data = _HugeTargets(t.data)
    with pytest.raises(TrainingError, match=r"^training stopped at step 6: the last 6 steps were skipped .*"
                                            r"max_skipped_steps = 5\); the parameters are those before step 1\."):
        t.run()
    after = t.router.params()
    for name in ("q", "k", "bias"):
        assert np.array_equal(getattr(after, name), getattr(before, name)), name
        assert np.isfinite(getattr(after, name)).all()
    assert t.optimizer.skip_counts() == (6, 6)
    events = _events(tmp_path)
    assert [(e["step"], e["skipped"]) for e in events if e["event"] == "train.skipped"] == [(1, 1), (2, 1), (4, 2), (6, 2)]
    assert [e["step"] for e in events if e["event"] == "train.stopped"] == [6]
