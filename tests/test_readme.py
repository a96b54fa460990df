"""The README's Python examples run and their assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: sections whose ```python blocks are complete programs
SECTIONS = ("Use", "Bring your own graph", "Use it from PyTorch")


def _blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no section '## {section}'"
    return re.findall(r"```python\n(.*?)```", m.group(1), re.S)


@pytest.mark.parametrize("section", SECTIONS)
def test_readme_python_blocks_run(section, monkeypatch):
    blocks = _blocks(section)
    assert blocks, f"no python block in '## {section}'"
    if section == "Use it from PyTorch":
        torch = pytest.importorskip("torch", reason="torch is an optional extra")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: torch's thread pool only waits for busy cores
    if section == "Bring your own graph":
        pytest.importorskip("networkx", reason="networkx is in the test extra")
    monkeypatch.setenv("ENERGETIC_BACKEND", "numpy")  # the examples' "auto": fast and the same everywhere
    try:
        for code in blocks:
            exec(compile(code, f"README.md ## {section}", "exec"), {"__name__": "__readme__"})
    finally:
        if section == "Use it from PyTorch":
            torch.set_num_threads(threads)
