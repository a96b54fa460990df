"""The command line behaves like the tools people know: no progress bar into a pipe, JSON that
is only JSON, one JSON row schema for both parity checks, -q/-v, --help with an example,
--adapter that never falls back, no Mesa complaint, no print() in the library, and a plot
that leaves matplotlib's global state alone."""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import energetic_wgpu
from energetic_wgpu.check import ROW_KEYS
from energetic_wgpu.cli import build_parser, main

from conftest import ADAPTERS

SMALL = ["--set", "graph.layers=3", "--set", "graph.nodes_per_layer=16", "--set", "router.dim=4",
         "--set", "train.batch_size=4", "--set", "train.log_every=1"]
PACKAGE = Path(energetic_wgpu.__file__).resolve().parent


def run_cli(*args: str, env_drop: tuple[str, ...] = (), env: dict[str, str] | None = None,
            merge: bool = False) -> subprocess.CompletedProcess:
    """``python -m energetic_wgpu ARGS`` with stdout and stderr on pipes (never a terminal)."""
    e = {k: v for k, v in os.environ.items() if k not in env_drop}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "energetic_wgpu", *args], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True, env=e, timeout=300,
    )


# ----------------------------------------------------------------- progress
def test_no_carriage_returns_when_output_is_a_pipe(tmp_path):
    """`train ... 2>&1 | cat`: no progress bar (no \\r), the log lines instead."""
    res = run_cli("train", "--backend", "numpy", "--steps", "3", "--out", str(tmp_path / "run"), *SMALL, merge=True)
    assert res.returncode == 0, res.stdout
    assert "\r" not in res.stdout
    assert "step     3/3  loss" in res.stdout and "done: 3 steps" in res.stdout


def test_progress_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    """The same run with stderr a terminal draws the bar (the control for the test above)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["train", "--backend", "numpy", "--steps", "3", "--out", str(tmp_path / "run"), *SMALL]) == 0
    err = capsys.readouterr().err
    assert "\r" in err and "3/3" in err


def test_quiet_and_verbose(tmp_path, capsys):
    assert main(["train", "-q", "--backend", "numpy", "--steps", "2", "--out", str(tmp_path / "q"), *SMALL]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert (tmp_path / "q" / "summary.json").is_file()
    assert main(["-v", "train", "--backend", "numpy", "--steps", "2", "--out", str(tmp_path / "v"),
                 "--no-progress", *SMALL]) == 0
    out, err = capsys.readouterr()
    assert "debug: energetic_wgpu: graph Graph(num_nodes=48" in err and "done: 2 steps" in out
    assert main(["train", "--backend", "numpy", "--steps", "2", "--out", str(tmp_path / "d"),
                 "--no-progress", *SMALL]) == 0
    assert "debug:" not in capsys.readouterr().err
    # the in-process CLI leaves the library's logger as it found it
    logger = logging.getLogger("energetic_wgpu")
    assert logger.level == logging.NOTSET and not [h for h in logger.handlers if "Stderr" in type(h).__name__]
    assert main(["train", "-q", "-v"]) == 2  # exclusive
    assert "not allowed with argument" in capsys.readouterr().err


# ---------------------------------------------------------------------- json
def test_info_json_is_only_json_and_mesa_stays_quiet():
    """`info --json` prints one JSON document; without XDG_RUNTIME_DIR Mesa's complaint never shows."""
    res = run_cli("info", "--json", env_drop=("XDG_RUNTIME_DIR",))
    report = json.loads(res.stdout)  # the whole of stdout
    assert res.returncode == 0, res.stderr
    assert report["backends"]["numpy"] == {"ok": True, "detail": "numpy (float32)"}
    assert report["auto"]["backend"] in ("numpy", "wgpu") and report["auto"]["reason"]
    assert len(report["adapters"]) == len(ADAPTERS)
    assert "XDG_RUNTIME_DIR" not in res.stderr


def test_library_sets_xdg_runtime_dir_before_the_drivers_load():
    if not ADAPTERS:
        pytest.skip("no wgpu adapter: nothing loads a driver")
    code = ("import wgpu; a = wgpu.gpu.enumerate_adapters_sync()[{i}]; a.request_device_sync()",
            "import energetic_wgpu as ew; ew.get_backend('wgpu', adapter={i})")
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    raw = subprocess.run([sys.executable, "-c", code[0].format(i=0)], capture_output=True, text=True, env=env)
    if "XDG_RUNTIME_DIR" not in raw.stderr:
        pytest.skip("this machine's drivers do not complain about XDG_RUNTIME_DIR")
    ours = subprocess.run([sys.executable, "-c", code[1].format(i=0)], capture_output=True, text=True, env=env)
    assert ours.returncode == 0, ours.stderr
    assert "XDG_RUNTIME_DIR" not in ours.stderr


def test_check_and_check_dawn_share_one_row_schema(capsys, monkeypatch):
    from energetic_wgpu import dawn

    assert main(["check", "--json", "--numpy", "--adapter", "no-such-adapter"]) == 0
    plain = json.loads(capsys.readouterr().out)
    dawn_rows = [
        {"op": "edge_logits", "max_error": 1e-7, "tolerance": 1e-5, "passed": True, "status": "pass", "detail": ""},
        {"op": "mse_b1", "max_error": 2e-3, "tolerance": 1e-5, "passed": False, "status": "fail", "detail": "pred: big"},
        {"op": "adamw", "max_error": None, "tolerance": None, "passed": None, "status": "not on wgpu yet", "detail": "x"},
        {"op": "compile:softmax", "max_error": None, "tolerance": None, "passed": True, "status": "pass", "detail": ""},
    ]
    monkeypatch.setattr(dawn, "check", lambda adapter=None: dawn_rows)
    assert main(["check", "--dawn", "--json"]) == 1
    browser = json.loads(capsys.readouterr().out)
    assert set(plain) == set(browser) == {"ok", "notes", "results"}
    for row in plain["results"] + browser["results"]:
        assert tuple(row) == ROW_KEYS, row
    assert [r["status"] for r in browser["results"]] == ["pass", "fail", "not on wgpu yet", "pass"]
    assert [r["ok"] for r in browser["results"]] == [True, False, False, True]
    assert browser["results"][1]["reason"] == "pred: big" and browser["ok"] is False
    assert all(r["status"] == "pass" and r["ok"] for r in plain["results"])


# ---------------------------------------------------------------------- help
@pytest.mark.parametrize("command", ["info", "train", "check", "bench"])
def test_every_subcommand_help_has_a_description_and_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]
    assert len(description.split()) >= 8, out
    examples = out[out.index("examples:"):]
    assert f"energetic-wgpu {command}" in examples


def test_steps_help_says_it_is_the_total():
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                  if "--steps" in a.option_strings)
    assert "total" in action.help and "not N more" in action.help


# ------------------------------------------------------------------- adapter
def test_unknown_adapter_is_an_error_not_a_fallback(tmp_path, capsys):
    rc = main(["train", "--adapter", "no-such-adapter", "--steps", "1", "--out", str(tmp_path / "r"), *SMALL])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "--adapter 'no-such-adapter'" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "summary.json").exists()
    assert main(["train", "--adapter", "0", "--backend", "numpy", "--steps", "1", *SMALL]) == 2
    assert "--adapter selects a wgpu adapter; it cannot be combined with --backend numpy" in capsys.readouterr().err


def test_adapter_implies_wgpu(tmp_path, capsys):
    if not ADAPTERS:
        pytest.skip("no wgpu adapter")
    out = tmp_path / "r"
    assert main(["train", "--adapter", "0", "--steps", "1", "--out", str(out), "--no-progress", *SMALL]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"].startswith("wgpu")
    assert "name: wgpu" in (out / "config.yaml").read_text()


# ----------------------------------------------------------------- no print
def test_the_library_prints_nothing_outside_the_cli():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


# --------------------------------------------------------------------- plots
def test_plot_leaves_matplotlib_global_state_alone(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    from energetic_wgpu.metrics import plot_metrics
    from energetic_wgpu.plots import metrics_figure

    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")  # a user's choice, not Agg
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    open_before = plt.get_fignums()
    rows = [{"step": s, "loss": 1.0 / s, "val_loss": 1.5 / s if s % 2 else None, "lr": 0.01, "grad_norm": 0.1 * s,
             "avg_entropy": 1.0, "total_energy": 3.0} for s in range(1, 6)]
    assert plot_metrics(rows, tmp_path / "p.png", title="numpy | N = 3, E = 4").read_bytes()[:4] == b"\x89PNG"
    assert matplotlib.get_backend() == before == "svg"
    assert plt.get_fignums() == open_before

    fig = metrics_figure(rows, title="numpy | N = 3, E = 4")
    assert fig._suptitle.get_text() == "numpy | N = 3, E = 4"
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "learning rate", "grad norm", "entropy", "energy"]
    train, val = axes[0].get_lines()
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5] and list(val.get_xdata()) == [1, 3, 5]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["train", "val"]


def test_trainer_plot_title_names_backend_graph_and_hyper_parameters():
    from energetic_wgpu.config import load_config
    from energetic_wgpu.trainer import Trainer

    cfg = load_config(None, [s for s in SMALL if s != "--set"] + ["router.top_k=2", "optimizer.lr=0.05"])
    t = Trainer(cfg, backend="numpy", write_files=False, progress=False)
    title = t.plot_title()
    assert title.startswith("numpy (float32) | N = 48, E = ")
    assert f"E = {t.graph.num_edges:,}" in title
    for part in ("dim 4", "top_k 2", "lr 0.05", "batch 4", "loss mse"):
        assert part in title


def test_ensure_xdg_runtime_dir(monkeypatch, tmp_path):
    from energetic_wgpu.environment import ensure_xdg_runtime_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert ensure_xdg_runtime_dir() == str(tmp_path)  # a directory is kept
    for bad in (None, "", str(tmp_path / "missing")):
        if bad is None:
            monkeypatch.delenv("XDG_RUNTIME_DIR")
        else:
            monkeypatch.setenv("XDG_RUNTIME_DIR", bad)
        path = ensure_xdg_runtime_dir()
        assert os.environ["XDG_RUNTIME_DIR"] == path != bad
        assert os.path.isdir(path) and (os.stat(path).st_mode & 0o777) == 0o700
