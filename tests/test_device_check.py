"""scripts/device-check.sh --dry-run: lavapipe, tiny sizes; one JSON file with the parity check,
the train-step figures at both sizes and the torch entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ADAPTERS
from test_step_budget import STEP_DISPATCHES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not any(a["backend_type"] == "Vulkan" for a in ADAPTERS), reason="no Vulkan adapter")
def test_device_check_dry_run(tmp_path):
    out = tmp_path / "dc.json"
    env = dict(os.environ, PYTHON=sys.executable, ENERGETIC_WGPU_DEVICE_CHECK_DRY_RUN="1")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device-check.sh"), "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["ok"] is True
    (adapter,) = report["adapters"]
    assert adapter["backend_type"] == "Vulkan"
    assert adapter["check"] == {"ok": True, "cases": 3, "failed": []}
    sizes = [f["size"]["name"] for f in adapter["train_step"]]
    assert sizes == ["default", "large"]
    for fig in adapter["train_step"]:
        assert fig["per_step"] == {"submits": 1, "dispatches": STEP_DISPATCHES[(1, False)], "buffers_created": 0,
                                   "bytes_uploaded": 0, "bytes_read_back": 0}
        assert fig["step_ms"] > 0 and fig["host_encode_submit_ms"] > 0
    torch = report["torch"]
    assert torch["available"] is True or torch["reason"] == "PyTorch is not installed"
    assert f"wrote {out}" in proc.stdout
