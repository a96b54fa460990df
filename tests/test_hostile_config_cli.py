"""Hostile configs and command lines: one defaults source, duplicate keys, alias bombs,
huge numbers, non-UTF-8 files, impossible sizes, bad --out, closed pipes, bad
$ENERGETIC_BACKEND, and resuming with changed values (each a reproduction of a defect)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from energetic_wgpu.checkpoint import load_checkpoint
from energetic_wgpu.cli import main
from energetic_wgpu.config import Config, from_dict, load_config
from energetic_wgpu.errors import ConfigError
from energetic_wgpu.optim import make_schedule
from energetic_wgpu.shortrepr import LIMIT, short_repr
from energetic_wgpu.sizing import check_train_fits, estimate_train_bytes
from energetic_wgpu.trainer import Trainer

REPO_BASELINE = Path(__file__).resolve().parents[1] / "configs" / "baseline.yaml"



def _alias_bomb() -> str:
    """About 340 bytes: 9 nested levels, each a list of 9 aliases of the level below (9**9 leaves)."""
    names = "abcdefghi"
    value = "&a [" + ", ".join(["1"] * 9) + "]"
    for prev, cur in zip(names, names[1:]):
        value = f"&{cur} [{value}, " + ", ".join([f"*{prev}"] * 8) + "]"
    return f"optimizer:\n  betas: {value}\n"


# ------------------------------------------------------------------- defaults
def test_defaults_come_from_one_place(tmp_path):
    """No file, an empty file and a partial file all get the dataclass defaults."""
    assert load_config() == Config()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()
    partial = tmp_path / "partial.yaml"
    partial.write_text("router:\n  top_k: 2\n")
    c = load_config(partial)
    assert c.router.top_k == 2
    assert c.optimizer.schedule == Config().optimizer.schedule
    assert (c.optimizer.schedule.name, c.optimizer.schedule.warmup_steps) == ("cosine", 10)
    assert c.replace({"router.top_k": 4}) == load_config()


def test_baseline_yaml_spells_out_the_defaults():
    raw = yaml.safe_load(REPO_BASELINE.read_text())
    assert raw == Config().to_dict()


def test_duplicate_key_is_refused_with_its_line(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("router:\n  top_k: 2\n  tau: 0.5\n  top_k: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"{p}: duplicate key 'top_k' on line 4 (first on line 2)"
    p.write_text("router: {}\ngraph: {}\nrouter: {}\n")
    with pytest.raises(ConfigError, match="duplicate key 'router' on line 3 "):
        load_config(p)


# ----------------------------------------------------------------- alias bomb
def test_alias_bomb_is_refused_fast(tmp_path):
    bomb = _alias_bomb()
    assert len(bomb) < 350
    p = tmp_path / "bomb.yaml"
    p.write_text(bomb)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert time.perf_counter() - t0 < 2.0
    assert "expands to more than 100,000 YAML nodes" in str(info.value)
    assert len(str(info.value)) < 300


def test_recursive_alias_is_refused(tmp_path):
    p = tmp_path / "loop.yaml"
    p.write_text("optimizer:\n  betas: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(p)


def test_messages_show_a_short_value():
    nested = [1] * 9
    for _ in range(9):
        nested = [nested] * 9  # 9**10 leaves, shared
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        from_dict({"optimizer": {"betas": nested}})
    assert time.perf_counter() - t0 < 1.0
    msg = str(info.value)
    assert msg.startswith("optimizer.betas must be a list of two numbers in [0, 1), got [[[[")
    assert len(msg) < 100 + LIMIT
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["train.out_dir=" + "x" * 5000, "router.top_k=-1"])
    assert str(info.value) == "router.top_k must be an int >= 0, got -1"
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["router.top_k=" + "-9" * 2500])
    assert str(info.value).startswith("router.top_k must be an int >= 0, got '-9-9-9")
    assert len(str(info.value)) <= 50 + LIMIT
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["router.top_k=-" + "9" * 3000])
    assert str(info.value).startswith("router.top_k must be an int >= 0, got -9999")
    assert len(str(info.value)) <= 50 + LIMIT
    text = short_repr("y" * 1000)
    assert "..." in text and len(text) <= LIMIT
    assert short_repr(10**10000) == "<int of 33220 bits>"


def test_huge_int_for_a_float_key_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["router.alpha=1" + "0" * 400])
    msg = str(info.value)
    assert msg.startswith("router.alpha must be a finite number, got 1000")
    assert len(msg) < 150


def test_non_utf8_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("router:\n  tau: 0.5 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"config file {str(p)!r} is not UTF-8 text (byte 0xe9 at offset 24)"


# ------------------------------------------------------------------------ CLI
SMALL = ["--backend", "numpy", "--no-progress", "--set", "graph.layers=3", "--set", "graph.nodes_per_layer=32",
         "--set", "router.dim=4", "--set", "train.batch_size=4", "--set", "train.log_every=1"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("energetic-wgpu: error: ")
    return lines[0]


def test_cli_huge_number_is_a_config_error(capsys):
    assert main(["train", "--set", "router.alpha=1" + "0" * 400]) == 2
    assert "router.alpha must be a finite number, got 1000" in _one_line_error(capsys)


def test_cli_non_utf8_config(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"router:\n  tau: \xff\n")
    assert main(["train", "--config", str(p)]) == 2
    assert "is not UTF-8 text (byte 0xff" in _one_line_error(capsys)


def test_cli_yaml_error_is_one_line(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("router: [1, 2\n")
    assert main(["train", "--config", str(p)]) == 2
    assert "is not valid YAML" in _one_line_error(capsys)


def test_cli_impossible_size_is_refused_before_allocation(tmp_path, capsys):
    t0 = time.perf_counter()
    rc = main(["train", *SMALL, "--set", "graph.nodes_per_layer=1000000000", "--out", str(tmp_path / "r")])
    assert rc == 2 and time.perf_counter() - t0 < 5
    line = _one_line_error(capsys)
    assert "graph.layers x graph.nodes_per_layer = 3 x 1,000,000,000" in line
    assert "bytes, estimated), more than this machine's" in line
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


def test_size_estimate_scales_with_the_config():
    base = load_config()
    need = estimate_train_bytes(base)
    assert 100 * 2**20 < need < 1 << 30  # the 10 x 1024 baseline: a few hundred MiB
    assert estimate_train_bytes(base.replace({"train.batch_size": 128})) > need
    assert check_train_fits(base, available=need) == need
    with pytest.raises(ConfigError, match=r"needs about .* GiB \(\d[\d,]* bytes, estimated\)"):
        check_train_fits(base, available=need - 1)


def test_cli_out_is_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", *SMALL, "--out", str(f)]) == 2
    assert f"--out {str(f)!r} exists and is not a folder" in _one_line_error(capsys)
    assert main(["train", *SMALL, "--out", "/proc/energetic-wgpu-test"]) == 2
    assert "--out '/proc/energetic-wgpu-test' cannot be used as the output folder: " in _one_line_error(capsys)
    assert main(["train", *SMALL, "--out", str(f / "sub")]) == 2
    assert "cannot be used as the output folder" in _one_line_error(capsys)


def test_cli_bad_backend_env_is_a_config_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ENERGETIC_BACKEND", "cuda")
    assert main(["train", "--no-progress", "--set", "graph.layers=2", "--out", str(tmp_path)]) == 2
    assert "$ENERGETIC_BACKEND='cuda' is not a backend" in _one_line_error(capsys)


def test_cli_unexpected_error_is_one_line_and_debug_shows_traceback(monkeypatch, tmp_path, capsys):
    import energetic_wgpu.trainer as trainer_mod

    def boom(self, steps=None):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer_mod.Trainer, "run", boom)
    assert main(["train", *SMALL, "--out", str(tmp_path / "a")]) == 1
    assert _one_line_error(capsys) == (
        "energetic-wgpu: error: unexpected RuntimeError: disk on fire (run with --debug for the traceback)"
    )
    assert main(["train", *SMALL, "--debug", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: disk on fire" in err


def test_cli_closed_pipe_ends_quietly(tmp_path):
    cmd = [sys.executable, "-m", "energetic_wgpu", "train", *SMALL, "--steps", "40", "--out", str(tmp_path / "r")]
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert first.startswith(b"training on numpy")
    assert rc == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


# --------------------------------------------------------------------- resume
def _rows(folder: Path) -> dict[int, dict]:
    return {r["step"]: r for r in json.loads((folder / "metrics.json").read_text())}


def test_resume_applies_changed_values_and_prints_each_once(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--steps", "4", "--out", str(out)]) == 0
    capsys.readouterr()
    rc = main(["train", "--resume", str(out), "--steps", "8", "--no-progress",
               "--set", "router.top_k=8", "--set", "router.tau=0.5", "--set", "router.retain_sinks=true"])
    assert rc == 0
    text = capsys.readouterr().out
    for line in ("router.tau: 1.0 (checkpoint) -> 0.5", "router.top_k: 4 (checkpoint) -> 8",
                 "router.retain_sinks: false (checkpoint) -> true", "train.steps: 4 (checkpoint) -> 8"):
        assert text.count(line) == 1, (line, text)
    assert "train.out_dir" not in text and "graph." not in text
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert (ckpt.params.tau, ckpt.params.top_k, ckpt.step) == (0.5, 8, 8)
    # the resumed steps really used top_k 8: more edges carry flow than with 4 (degree 10 here)
    rows = _rows(out)
    assert max(rows[s]["active_edges"] for s in (1, 2, 3, 4)) < min(rows[s]["active_edges"] for s in (5, 6, 7, 8))
    # and the library path does the same
    t = Trainer(from_dict(ckpt.config).replace({"router.tau": 0.25, "router.alpha": 0.5}), write_files=False,
                progress=False, echo=lambda s: None)
    t.resume(ckpt)
    assert (t.router.tau, t.router.alpha, t.router.top_k) == (0.25, 0.5, 8)
    assert t.resume_changes == [("router.tau", 0.5, 0.25), ("router.alpha", 1.0, 0.5)]


@pytest.mark.parametrize("override, message", [
    ("graph.layers=4", "graph.layers cannot change when resuming (checkpoint: 3, requested: 4)"),
    ("graph.seed=7", "graph.seed cannot change when resuming (checkpoint: 0, requested: 7)"),
    ("router.dim=8", "router.dim cannot change when resuming (checkpoint: 4, requested: 8)"),
])
def test_resume_refuses_graph_and_dim_changes(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress", "--set", override]) == 2
    assert message in _one_line_error(capsys)


def test_resume_keeps_the_schedule_of_the_run(tmp_path, capsys):
    """--steps 16 after a 10-step cosine run continues the same curve (it stays at min_lr)
    instead of re-planning a cosine over 16 steps; setting total_steps re-plans it."""
    out = tmp_path / "run"
    sched = ["--set", "optimizer.schedule.warmup_steps=2", "--set", "optimizer.schedule.min_lr=0.001"]
    assert main(["train", *SMALL, *sched, "--steps", "10", "--out", str(out)]) == 0
    stored = load_checkpoint(out / "checkpoint.npz").optimizer["schedule"]
    assert stored == {"name": "cosine", "lr": 0.02, "total_steps": 10, "min_lr": 0.001, "step_size": 100,
                      "gamma": 0.5, "warmup_steps": 2}
    first = make_schedule("cosine", 0.02, total_steps=10, min_lr=0.001, warmup_steps=2)
    assert main(["train", "--resume", str(out), "--steps", "16", "--no-progress"]) == 0
    rows = _rows(out)
    assert [rows[s]["lr"] for s in range(1, 17)] == pytest.approx([first(s) for s in range(1, 17)], rel=1e-12)
    assert rows[11]["lr"] == pytest.approx(0.001) and rows[10]["lr"] > rows[11]["lr"]
    assert load_checkpoint(out / "checkpoint.npz").optimizer["schedule"] == stored
    capsys.readouterr()
    # an explicit schedule key replaces the stored one: a cosine over 20 steps from here on
    assert main(["train", "--resume", str(out), "--steps", "18", "--no-progress",
                 "--set", "optimizer.schedule.total_steps=20"]) == 0
    assert "optimizer.schedule.total_steps: null (checkpoint) -> 20" in capsys.readouterr().out
    second = make_schedule("cosine", 0.02, total_steps=20, min_lr=0.001, warmup_steps=2)
    rows = _rows(out)
    assert [rows[s]["lr"] for s in (17, 18)] == pytest.approx([second(17), second(18)], rel=1e-12)
    assert rows[17]["lr"] > 0.002


def test_cli_refusals_leave_no_folder_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--set", "graph.nodes_per_layer=1000000000"]) == 2
    monkeypatch.setenv("ENERGETIC_BACKEND", "cuda")
    assert main(["train", "--set", "graph.layers=2", "--out", "r"]) == 2
    capsys.readouterr()
    assert list(tmp_path.iterdir()) == []
