"""The API reference (scripts/build_api_docs.py): every public name documented, every
cross-reference resolvable, and pdoc builds the HTML."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import energetic_wgpu as ew

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api_docs():
    spec = importlib.util.spec_from_file_location("build_api_docs", ROOT / "scripts" / "build_api_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_public_name_has_a_docstring_and_resolvable_references(api_docs):
    assert api_docs.check() == []
    checked = {qual for qual, *_ in api_docs._documented_objects()}
    for name in ew.__all__:
        if name not in ("__version__", "losses"):
            assert f"energetic_wgpu.{name}" in checked, name
    assert {"energetic_wgpu.Router.forward", "energetic_wgpu.Graph.to_input_order", "energetic_wgpu.losses.mse",
            "energetic_wgpu.Backend.write"} <= checked
    assert {"energetic_wgpu.distributed.all_reduce_gradients", "energetic_wgpu.distributed.DataParallel.check_replicas",
            "energetic_wgpu.distributed.data_parallel_step", "energetic_wgpu.distributed.shard_bounds"} <= checked
    if importlib.util.find_spec("torch") is not None:
        assert {"energetic_wgpu.torch.EnergeticRouter", "energetic_wgpu.torch.EnergeticRouter.edge_pi"} <= checked


def test_check_reports_a_missing_docstring_and_a_broken_reference(api_docs, monkeypatch):
    def undocumented(self):
        return 1

    monkeypatch.setattr(ew.Graph, "to_scipy", undocumented)
    monkeypatch.setattr(ew.Router, "__doc__", "Uses :meth:`forwrd` and :class:`~energetic_wgpu.Grph`.")
    problems = api_docs.check()
    assert problems == [
        "energetic_wgpu.Graph.to_scipy: no docstring",
        "energetic_wgpu.Router: cross-reference :meth:`forwrd` names nothing",
        "energetic_wgpu.Router: cross-reference :class:`~energetic_wgpu.Grph` names nothing",
    ]
    assert api_docs.main(["--check"]) == 1


def test_pdoc_builds_the_html_with_links(api_docs, tmp_path):
    pytest.importorskip("pdoc", reason="pdoc is in the test extra")
    assert api_docs.main(["--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "energetic_wgpu" in index
    page = (tmp_path / "energetic_wgpu.html").read_text(encoding="utf-8")
    assert 'id="Graph.from_edge_index"' in page and 'id="list_adapters"' in page
    assert ":class:`" not in page and ":meth:`" not in page  # roles became links or code
    if importlib.util.find_spec("torch") is not None:
        torch_page = (tmp_path / "energetic_wgpu" / "torch.html").read_text(encoding="utf-8")
        assert '<a href="../energetic_wgpu.html#Router.backward">' in torch_page
