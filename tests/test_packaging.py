"""The built wheel carries everything a non-editable install needs: the WGSL shaders (from the
top-level shaders/ folder, as energetic_wgpu/_shaders), the browser runner, the default config, py.typed — and an
installed copy, imported from outside the repository, runs the GPU kernels from its own files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}")
    (whl,) = out.glob("energetic_wgpu-*.whl")
    return whl


def test_wheel_contains_shaders_web_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    repo_shaders = sorted(p.name for p in (REPO / "shaders").glob("*.wgsl"))
    assert repo_shaders, "no shaders in the repository"
    missing = [s for s in repo_shaders if f"energetic_wgpu/_shaders/{s}" not in names]
    # the shader folder is package data, not a package named like a module
    assert not [n for n in names if n.startswith("energetic_wgpu/shaders")], "a stale energetic_wgpu/shaders"
    assert not missing, f"shaders missing from the wheel: {missing}"
    for f in ("energetic_wgpu/web/runner.js", "energetic_wgpu/web/runner.html",
              "energetic_wgpu/configs/baseline.yaml", "energetic_wgpu/py.typed"):
        assert f in names, f"{f} missing from the wheel"


def test_installed_copy_loads_its_own_shaders_and_runs(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel unpacked is an install
    script = r"""
import json, numpy as np, energetic_wgpu as ew
from energetic_wgpu.wgsl import shader_dir, shader_source
out = {"file": ew.__file__, "shader_dir": shader_dir(), "n": len(shader_source("edge_probs.wgsl"))}
try:
    be = ew.get_backend("wgpu")
except ew.BackendUnavailable as exc:
    be = None
    out["wgpu"] = str(exc)
if be is not None:
    g = ew.build_lattice(ew.GraphConfig(3, 16, 4, 2))
    r = ew.Router(g, ew.RouterParams.init(g, 4, top_k=2), be)
    ref = ew.Router(g, ew.RouterParams.init(g, 4, top_k=2), "numpy")
    e = np.random.default_rng(0).random((3, g.num_nodes), dtype=np.float32)
    out["err"] = float(np.abs(ew.to_numpy(r.forward(e).next_energies) - ref.forward(e).next_energies).max())
print(json.dumps(out))
"""
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(site)), out
    assert out["shader_dir"].startswith(str(site)), out
    assert out["n"] > 100
    if "wgpu" in out:
        pytest.skip(f"wgpu unavailable: {out['wgpu']}")
    assert out["err"] <= 1e-5, out
