"""Timing utilities of the benchmark suite (and of the scripts in the repository's ``benchmarks/``).

A measurement warms the function up, then times ``repeats`` calls one by one (each call
followed by the backend's ``synchronize`` callback, so queued GPU work is inside the timed
region) and reports the median and the interquartile range: robust on a noisy machine,
where a mean is dragged by a few slow outliers.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "Timing", "time_fn", "time_interleaved", "machine_info", "write_json", "format_table", "ms_stats", "loglog_slope",
]


@dataclass
class Timing:
    """The times of one benchmarked op, in milliseconds."""

    name: str
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    repeats: int
    #: median process CPU time per call (all threads of the process): on a busy machine it
    #: shows how much of the wall time was spent waiting for a core
    cpu_median_ms: float = float("nan")
    samples_ms: list[float] = field(repr=False, default_factory=list)

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["iqr_ms"] = self.iqr_ms
        return d


def time_fn(
    name: str,
    fn: Callable[[], Any],
    *,
    repeats: int = 50,
    warmup: int = 5,
    synchronize: Callable[[], None] | None = None,
) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    ``synchronize`` (e.g. ``backend.synchronize``) runs after every call, inside the timed
    region, so asynchronous work is counted.
    """
    return time_interleaved({name: fn}, repeats=repeats, warmup=warmup, synchronize=synchronize)[name]


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    repeats: int = 50,
    warmup: int = 5,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time several functions round-robin (a, b, c, a, b, c, ...), so that on a machine whose
    load changes during the run every function sees the same conditions and their ratio
    stays fair. Returns a :class:`Timing` per name."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append((t1 - t0) * 1e3)
            cpu[name].append((c1 - c0) * 1e3)
    out = {}
    for name in fns:
        samples = wall[name]
        if len(samples) >= 2:
            q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        else:
            q1 = q3 = samples[0]
        out[name] = Timing(
            name, statistics.median(samples), q1, q3, min(samples), repeats, statistics.median(cpu[name]), samples
        )
    return out


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def machine_info(extra_modules: tuple[str, ...] = ()) -> dict[str, Any]:
    """CPU model, core count, OS, Python and the versions of numpy, scipy and ``extra_modules``."""
    import numpy
    import scipy

    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        load = None
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "loadavg_1_5_15": load,
    }
    for mod in extra_modules:
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # not installed, or broken
            info[mod] = None
    return info


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (creating parent folders)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with right-aligned columns (the first column left-aligned)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def ms_stats(samples: list[float]) -> dict[str, float]:
    """median, quartiles and minimum of a list of milliseconds."""
    a = np.asarray(samples, dtype=np.float64)
    return {
        "median_ms": float(np.median(a)),
        "q1_ms": float(np.percentile(a, 25)),
        "q3_ms": float(np.percentile(a, 75)),
        "min_ms": float(a.min()),
    }


def loglog_slope(sizes: Sequence[float], times: Sequence[float]) -> float:
    """The least-squares slope of log(time) against log(size): 1.0 for time proportional to
    size, 0.0 for a constant cost. NaN with fewer than two usable (positive, finite) points."""
    x = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(times, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"sizes and times must have the same length, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if np.count_nonzero(ok) < 2 or np.ptp(x[ok]) == 0:
        return float("nan")
    lx, ly = np.log(x[ok]), np.log(y[ok])
    lx_c = lx - lx.mean()
    return float(np.dot(lx_c, ly - ly.mean()) / np.dot(lx_c, lx_c))
