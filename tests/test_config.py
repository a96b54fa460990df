"""Configuration: the packaged baseline, overrides, validation messages, round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from energetic_wgpu.config import Config, default_config_path, from_dict, load_config, parse_override
from energetic_wgpu.errors import ConfigError

REPO_BASELINE = Path(__file__).resolve().parents[1] / "configs" / "baseline.yaml"


def test_baseline_values():
    c = load_config()
    assert (c.graph.layers, c.graph.nodes_per_layer, c.graph.local_neighbors, c.graph.jump_neighbors) == (10, 1024, 8, 2)
    assert (c.router.dim, c.router.tau, c.router.alpha, c.router.top_k, c.router.steps) == (16, 1.0, 1.0, 4, 1)
    assert c.router.retain_sinks is False
    assert c.train.batch_size == 64 and c.backend.name == "auto" and c.backend.adapter is None
    assert isinstance(c.optimizer.betas, tuple)


def test_packaged_copy_equals_repo_file():
    assert default_config_path().read_text() == REPO_BASELINE.read_text()
    assert load_config(REPO_BASELINE) == load_config()


def test_round_trip():
    c = load_config(overrides=["router.top_k=8", "optimizer.betas=[0.8, 0.9]", "backend.adapter=1"])
    assert from_dict(c.to_dict()) == c
    assert Config().to_dict()["train"]["task"]["name"] == "teacher"


def test_overrides_parse_with_yaml():
    c = load_config(overrides=["optimizer.eps=1e-3", "optimizer.max_grad_norm=null", "router.retain_sinks=true",
                               "backend.adapter=opengl", "train.out_dir=runs/x"])
    assert c.optimizer.eps == 1e-3 and c.optimizer.max_grad_norm is None and c.router.retain_sinks is True
    assert c.backend.adapter == "opengl" and c.train.out_dir == "runs/x"
    assert parse_override("a.b= 3") == ("a.b", 3)


def test_file_with_partial_sections(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("router:\n  top_k: 2\ngraph:\n  layers: 3\n")
    c = load_config(p)
    assert c.router.top_k == 2 and c.graph.layers == 3 and c.graph.nodes_per_layer == 1024


@pytest.mark.parametrize(
    "override, message",
    [
        ("router.top_k=-1", "router.top_k must be an int >= 0, got -1"),
        ("router.top_k=2.5", "router.top_k must be an int >= 0, got 2.5"),
        ("router.dim=0", "router.dim must be an int >= 1, got 0"),
        ("router.tau=0", "router.tau must be a finite number > 0, got 0"),
        ("router.tau=.inf", "router.tau must be a finite number > 0"),
        ("router.retain_sinks=1", "router.retain_sinks must be true or false, got 1"),
        ("router.steps=0", "router.steps must be an int >= 1"),
        ("graph.layers=0", "graph.layers must be an int >= 1, got 0"),
        ("graph.local_neighbors=5000", "graph.local_neighbors must be an int in [0, graph.nodes_per_layer = 1024]"),
        ("graph.seed=-3", "graph.seed must be an int >= 0"),
        ("optimizer.lr=-1", "optimizer.lr must be a finite number >= 0, got -1"),
        ("optimizer.betas=[1.0, 0.9]", "optimizer.betas[0] must be a finite number >= 0 and < 1, got 1.0"),
        ("optimizer.betas=0.9", "optimizer.betas must be a list of two numbers in [0, 1)"),
        ("optimizer.eps=0", "optimizer.eps must be a finite number > 0"),
        ("optimizer.max_grad_norm=-1", "optimizer.max_grad_norm must be a finite number > 0, got -1 (or null)"),
        ("optimizer.schedule.name=linear", "optimizer.schedule.name must be one of 'constant', 'step', 'cosine'"),
        ("optimizer.schedule.warmup_steps=-1", "optimizer.schedule.warmup_steps must be an int >= 0"),
        ("train.steps=0", "train.steps must be an int >= 1, got 0"),
        ("train.batch_size=abc", "train.batch_size must be an int >= 1, got 'abc'"),
        ("train.log_every=0", "train.log_every must be an int >= 1"),
        ("train.loss=l1", "train.loss must be one of 'mse', 'cross_entropy'"),
        ("train.task.inject=everywhere", "train.task.inject must be one of 'all', 'layer0'"),
        ("backend.name=cuda", "backend.name must be one of 'auto', 'numpy', 'wgpu', got 'cuda'"),
        ("backend.adapter=-1", "backend.adapter must be an adapter index"),
        ("router.foo=1", "unknown key 'router.foo'; allowed keys in router: dim, tau"),
        ("nope.x=1", "unknown key 'nope'"),
        ("router.dim.x=1", "router.dim is a value, not a section"),
        ("router=3", "router is a section"),
        ("router.top_k", "an override must look like key.path=value"),
    ],
)
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("router:\n  topk: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'router.topk'"):
        load_config(p)
    p.write_text("routers: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'routers'; allowed keys at the top level"):
        load_config(p)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("router: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(p)
    p.write_text("router: 3\n")
    with pytest.raises(ConfigError, match="router must be a mapping"):
        load_config(p)


def test_frozen():
    c = load_config()
    with pytest.raises(AttributeError):
        c.router.top_k = 3  # type: ignore[misc]
