"""The energetic-wgpu command line, run in-process."""

from __future__ import annotations

import json

import pytest

from energetic_wgpu.cli import main

SMALL = ["--set", "graph.layers=3", "--set", "graph.nodes_per_layer=32", "--set", "router.dim=4",
         "--set", "train.batch_size=4"]


def test_info_lists_numpy_pass(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy  PASS  numpy (float32)" in out
    assert "wgpu adapters:" in out and "default backend (auto):" in out


def test_train_writes_files(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--backend", "numpy", "--steps", "6", "--set", "train.log_every=2", "--out", str(out),
               "--no-progress", *SMALL])
    assert rc == 0
    text = capsys.readouterr().out
    assert "step     6/6  loss" in text and "done: 6 steps on numpy" in text
    for name in ("metrics.jsonl", "metrics.csv", "metrics.json", "summary.json", "config.yaml", "checkpoint.npz"):
        assert (out / name).is_file(), name
    assert [r["step"] for r in json.loads((out / "metrics.json").read_text())] == [1, 2, 4, 6]
    # resume continues from the run's own config and extends it
    assert main(["train", "--resume", str(out), "--steps", "8", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "at step 6" in text and "done: 8 steps" in text
    assert json.loads((out / "summary.json").read_text())["steps"] == 8


def test_bad_key_exits_2_without_traceback(capsys):
    assert main(["train", "--set", "router.top_kk=4"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'router.top_kk'" in err and "Traceback" not in err
    assert main(["train", "--set", "router.top_k=-1"]) == 2
    assert "router.top_k must be an int >= 0, got -1" in capsys.readouterr().err
    assert main(["train", "--config", "/nonexistent.yaml"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_resume_missing_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "none")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_check_numpy_and_table(capsys):
    rc = main(["check", "--numpy", "--adapter", "no-such-adapter"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "op" in out and "max error" in out and "bit-stable" in out
    for op in ("edge_logits", "segment_softmax_topk", "energy_scatter_backward_b33", "adamw_step_packed_x3",
               "cross_entropy_eps_b33", "router_steps3_b33"):
        assert op in out
    assert "numpy-float32" in out and "FAIL" not in out


def test_check_runs_the_shared_case_table(capsys):
    """`check` and `check --dawn` run one table: energetic_wgpu.parity_cases.CASES, one row per case."""
    from energetic_wgpu import parity_cases
    from energetic_wgpu.dawn import cases as dawn_cases

    assert dawn_cases.CASES is parity_cases.CASES
    rc = main(["check", "--json", "--numpy", "--adapter", "no-such-adapter"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [r["op"] for r in report["results"]] == [c.name for c in parity_cases.CASES]


def test_check_json(capsys):
    rc = main(["check", "--json", "--numpy", "--adapter", "no-such-adapter"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"] is True
    assert {r["target"] for r in report["results"]} == {"numpy-float32"}


def test_check_every_adapter(capsys):
    """On each wgpu adapter: the table has one row per case; exit code 0 exactly when all pass."""
    from energetic_wgpu.parity_cases import CASES

    rc = main(["check", "--json"])
    report = json.loads(capsys.readouterr().out)
    if not report["results"]:
        pytest.skip(f"no wgpu adapter: {report['notes']}")
    assert rc == (0 if all(r["ok"] for r in report["results"]) else 1)
    for target in {r["target"] for r in report["results"]}:
        assert [r["op"] for r in report["results"] if r["target"] == target] == [c.name for c in CASES]
    for r in report["results"]:
        assert r["ok"] or r["reason"], r


def test_bench_numpy(capsys):
    rc = main(["bench", "--backend", "numpy", "--sections", "phases", "--repeats", "2", "--warmup", "1", *SMALL,
               "--json", "-"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    (row,) = report["targets"]
    t = row["phases"]["timings"]
    assert row["target"] == "numpy" and t["forward"]["median_ms"] > 0 and t["train_step"]["median_ms"] > 0
    assert main(["bench", "--backend", "numpy", "--sections", "phases", "--repeats", "1", *SMALL]) == 0
    assert "| train_step | 15–30 |" in capsys.readouterr().out
    assert main(["bench", "--sections", "nope"]) == 2  # a config error names the flag


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "info,train,check,bench" in capsys.readouterr().out
    assert main(["--version"]) == 0


def test_check_adapter_digit_is_an_index_not_a_substring():
    """`--adapter 0` selects adapter 0 only, even though "0" occurs in "LLVM 15.0.6"."""
    from energetic_wgpu import check

    targets, _ = check.list_targets(adapter="0")
    labels = [t[0] for t in targets]
    assert all(label.startswith("wgpu:0:") for label in labels), labels
    targets1, _ = check.list_targets(adapter="1")
    assert all(label.startswith("wgpu:1:") for label in (t[0] for t in targets1))
