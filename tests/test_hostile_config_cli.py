"""Hostile configs and command lines: one defaults source, duplicate keys, alias bombs,
huge numbers, non-UTF-8 files, impossible sizes, bad --out, closed pipes, bad
$ENERGETIC_BACKEND, and resuming with changed values (each a reproduction of a defect)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from energetic_wgpu.config import Config, from_dict, load_config
from energetic_wgpu.errors import ConfigError
from energetic_wgpu.shortrepr import LIMIT, short_repr

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
