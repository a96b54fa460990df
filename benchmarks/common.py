"""Timing utilities shared by the benchmark scripts: a re-export of
:mod:`energetic_wgpu.benchmarking.timing` (the code ships with the package, so that
``energetic-wgpu bench`` works without the repository)."""

from energetic_wgpu.benchmarking.timing import (  # noqa: F401
    Timing,
    format_table,
    loglog_slope,
    machine_info,
    ms_stats,
    time_fn,
    time_interleaved,
    write_json,
)

__all__ = ["Timing", "time_fn", "time_interleaved", "machine_info", "write_json", "format_table", "ms_stats",
           "loglog_slope"]
