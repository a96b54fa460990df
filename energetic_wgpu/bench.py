"""``energetic-wgpu bench``: the benchmark suite (:mod:`energetic_wgpu.benchmarking`) on every
backend and wgpu adapter — train-step phases beside the router design's M4 figures, every op
with its effective bandwidth, a size sweep with log-log slopes, 3-D lattices beside
vectorized-forward.md's table, and the PyTorch comparison when torch is installed.

Progress goes to the ``energetic_wgpu.bench`` logger (stderr on the command line); the markdown report to stdout (or ``--markdown FILE``); ``--json
FILE`` writes every sample and the machine description (``--json -``: JSON on stdout instead
of the markdown); ``--plot FILE`` the size sweep as a PNG (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any, Callable

from .benchmarking.suite import SECTIONS, run_suite

__all__ = ["run"]

log = logging.getLogger("energetic_wgpu.bench")


def _sections(value: str | None) -> list[str]:
    if not value:
        return list(SECTIONS)
    out = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in out if s not in SECTIONS]
    if bad:
        from .errors import ConfigError

        raise ConfigError(f"--sections must be a comma list of {', '.join(SECTIONS)}; got {', '.join(bad)}")
    return out


def run(args: argparse.Namespace | None = None, echo: Callable[[str], None] | None = None) -> int:
    """Entry point of ``energetic-wgpu bench``. ``args`` carries config, set, backend, adapter,
    batch, repeats, warmup, quick, full, sections, json, markdown, plot. The report goes to
    ``echo`` (default: the logger at INFO; the command line passes ``print``). Returns 0 unless
    no target could run."""
    echo = echo or log.info
    from .config import load_config

    a: dict[str, Any] = vars(args) if args is not None else {}
    config = load_config(a.get("config"), a.get("set") or [])
    payload = run_suite(
        config,
        backend=a.get("backend"),
        adapter=a.get("adapter"),
        quick=bool(a.get("quick")),
        full=bool(a.get("full")),
        sections=_sections(a.get("sections")),
        batch=a.get("batch"),
        repeats=a.get("repeats"),
        warmup=a.get("warmup"),
    )
    from .benchmarking.report import plot_sweep, to_markdown
    from .benchmarking.timing import write_json

    if a.get("plot"):
        reason = plot_sweep(payload, a["plot"])
        payload["notes"].append(f"plot skipped: {reason}" if reason else f"plot written to {a['plot']}")
        log.info(payload["notes"][-1])
    md = to_markdown(payload)
    if a.get("markdown"):
        os.makedirs(os.path.dirname(os.path.abspath(a["markdown"])), exist_ok=True)
        with open(a["markdown"], "w", encoding="utf-8") as f:
            f.write(md)
    dest = a.get("json")
    if dest == "-":
        echo(json.dumps(payload, indent=1, default=str))
    else:
        if dest:
            write_json(dest, payload)
        echo(md)
    return 0 if any("error" not in t for t in payload["targets"]) else 1
