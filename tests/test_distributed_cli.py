"""`energetic-wgpu train --nproc 2`: the same parameters as one process, resume with another
world size, SIGTERM stops every rank after the same step with one checkpoint (exit 143), a
killed rank makes the run fail within the timeout naming it, a rank that cannot open its
adapter fails the launch before step 1, and no torch gives an error naming the extra."""

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

from energetic_wgpu import distributed as ewd
from energetic_wgpu.checkpoint import load_checkpoint
from energetic_wgpu.cli import main
from energetic_wgpu.config import load_config
from energetic_wgpu.trainer import Trainer

from parity import assert_parity

needs_torch = pytest.mark.skipif(not ewd.torch_available(), reason="torch is not installed")

SMALL = [
    "graph.layers=4", "graph.nodes_per_layer=48", "graph.local_neighbors=4", "graph.jump_neighbors=1",
    "router.dim=4", "router.top_k=2", "train.batch_size=7", "train.log_every=2", "backend.name=numpy",
    "optimizer.schedule.name=constant", "optimizer.schedule.warmup_steps=0", "train.checkpoint_every=4",
    "distributed.timeout=20",
]


def _sets(*extra):
    return [a for kv in (*SMALL, *extra) for a in ("--set", kv)]


def _params(p):
    return {k: getattr(p, k) for k in ("q", "k", "bias")}


def _start(out: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    log, err = out.parent / f"{out.name}.out", out.parent / f"{out.name}.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "energetic_wgpu", "train", *_sets(), "--no-progress", "--out", str(out), *args],
        stdout=log.open("w"), stderr=err.open("w"), start_new_session=True,
    )
    return proc, log, err


def _wait_for(pred, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _rank_pid(launcher: int, rank: int) -> int:
    kids = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for pid in kids:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no rank {rank} among the launcher's children {kids}")


@needs_torch
@pytest.mark.slow
def test_nproc_2_equals_one_process_and_resumes_with_another_world_size(tmp_path):
    out = tmp_path / "dp"
    proc, log, err = _start(out, "--nproc", "2", "--steps", "8")
    assert proc.wait(timeout=180) == 0, err.read_text()[-3000:]
    text = log.read_text()
    assert ("data-parallel: 2 ranks (gloo), global batch 7 = shards 4+3; adapter_per_rank round_robin: "
            "rank 0 on numpy (float32), rank 1 on numpy (float32)") in text
    assert text.count("done: 8 steps") == 1  # rank 0 reports; the other rank prints nothing
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt.step == 8
    assert ckpt.extra["distributed"]["world_size"] == 2 and ckpt.extra["distributed"]["shard_rows"] == [4, 3]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("train.start") == 1  # one writer

    ref = Trainer(load_config(overrides=[*SMALL, "train.steps=12"]), out_dir=tmp_path / "ref", progress=False)
    ref.run(steps=8)
    for key, want in _params(ref.router.params()).items():
        assert_parity(getattr(ckpt.params, key), want, f"2 ranks vs 1 process, {key} at step 8")

    # resume the 2-rank run's checkpoint in ONE process (another world size), same global batch
    assert main(["train", "--resume", str(out), "--steps", "12", "--nproc", "1", "--no-progress"]) == 0
    ref.run()
    resumed = load_checkpoint(out / "checkpoint.npz")
    assert resumed.step == 12 and "distributed" not in resumed.extra
    for key, want in _params(ref.router.params()).items():
        assert_parity(getattr(resumed.params, key), want, f"resumed {key} at step 12")


@needs_torch
@pytest.mark.slow
def test_sigterm_stops_every_rank_after_the_same_step_with_one_checkpoint(tmp_path):
    out = tmp_path / "dp"
    proc, log, err = _start(out, "--nproc", "2", "--steps", "100000", "--set", "train.checkpoint_every=0")
    _wait_for(lambda: "step     2/" in log.read_text(), 150, "step 2")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, err.read_text()[-3000:]
    ckpt = load_checkpoint(out / "checkpoint.npz")
    text = log.read_text()
    assert f"interrupted (SIGTERM) at step {ckpt.step}: checkpoint saved" in text
    assert 2 <= ckpt.step < 100000
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    saved = [e for e in events if e["event"] == "train.checkpoint"]
    assert [e["step"] for e in saved] == [ckpt.step]  # exactly one checkpoint, at the agreed step
    (stop,) = [e for e in events if e["event"] == "train.interrupted"]
    assert stop["step"] == ckpt.step and stop["saved"] is True and stop["signal"] == "SIGTERM"


@needs_torch
@pytest.mark.slow
def test_a_killed_rank_fails_the_run_within_the_timeout_naming_it(tmp_path):
    out = tmp_path / "dp"
    proc, log, err = _start(out, "--nproc", "2", "--steps", "100000")
    _wait_for(lambda: (out / "checkpoint.npz").is_file(), 150, "the first checkpoint")
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    t0 = time.monotonic()
    code = proc.wait(timeout=90)
    assert time.monotonic() - t0 < 60  # distributed.timeout = 20 s bounds it; gloo usually notices at once
    text = err.read_text()
    assert code == 1, text
    assert "rank 1 was killed by SIGKILL" in text
    assert "DistributedError: rank 0: the gradient all-reduce failed, another rank died" in text
    ckpt = load_checkpoint(out / "checkpoint.npz")  # the last checkpoint stays resumable
    assert ckpt.step % 4 == 0 and ckpt.step >= 4


@needs_torch
@pytest.mark.slow
def test_a_hung_rank_fails_the_run_after_the_timeout(tmp_path):
    """A rank that stops answering (SIGSTOP) is noticed after distributed.timeout: the other
    rank fails with the collective's timeout, the launcher kills the stuck one and exits 1."""
    out = tmp_path / "dp"
    proc, log, err = _start(out, "--nproc", "2", "--steps", "100000", "--set", "distributed.timeout=5")
    _wait_for(lambda: "step     2/" in log.read_text(), 150, "step 2")
    os.kill(_rank_pid(proc.pid, 1), signal.SIGSTOP)
    t0 = time.monotonic()
    code = proc.wait(timeout=90)
    waited = time.monotonic() - t0
    text = err.read_text()
    assert code == 1, text
    assert 5 <= waited < 60, waited  # the timeout (5 s), then 5 s of grace; never a hang
    assert "DistributedError: rank 0: the gradient all-reduce failed" in text and "Timed out" in text
    assert "rank 1 was still running 10 s after another rank failed and was killed" in text


@needs_torch
@pytest.mark.slow
def test_a_rank_that_cannot_open_its_adapter_fails_the_launch_before_step_1(tmp_path):
    out = tmp_path / "dp"
    proc, log, err = _start(out, "--nproc", "2", "--steps", "5", "--set", "backend.name=wgpu", "--set",
                            "backend.adapter=no-such-adapter", "--set", "distributed.adapter_per_rank=same")
    assert proc.wait(timeout=150) == 1
    text = err.read_text()
    # every rank fails to open the adapter; the launcher stops the others as soon as the first
    # one exits, so which ranks get to report it depends on timing: at least one, with the reason
    reported = [r for r in (0, 1) if f"rank {r} cannot open its backend/adapter: BackendUnavailable" in text]
    assert reported, text[-3000:]
    assert any(f"rank {r} exited with code 1" in text for r in reported), text[-3000:]
    assert "no-such-adapter" in text
    assert "step " not in log.read_text() and not (out / "checkpoint.npz").exists()


def test_nproc_without_torch_names_the_extra(monkeypatch, tmp_path, capsys):
    from energetic_wgpu.distributed import launch

    monkeypatch.setattr(launch, "torch_available", lambda: False)
    code = main(["train", *_sets(), "--nproc", "2", "--steps", "2", "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--nproc 2 (data-parallel training) needs torch.distributed" in err
    assert "pip install 'energetic_wgpu[distributed]'" in err
    assert not (tmp_path / "x" / "checkpoint.npz").exists()


def test_distributed_config_keys_are_validated():
    from energetic_wgpu.errors import ConfigError

    with pytest.raises(ConfigError, match="distributed.adapter_per_rank must be one of 'round_robin', 'same', 'numpy'"):
        load_config(overrides=["distributed.adapter_per_rank=each"])
    with pytest.raises(ConfigError, match="distributed.nproc must be an int >= 1, got 0"):
        load_config(overrides=["distributed.nproc=0"])
    with pytest.raises(ConfigError, match="distributed.backend must be one of 'gloo'"):
        load_config(overrides=["distributed.backend=nccl"])
    assert load_config().distributed.nproc == 1
