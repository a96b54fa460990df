"""The benchmark suite of energetic_wgpu (``energetic-wgpu bench``), shipped with the package.

* :mod:`.timing` — warm-up, synchronized, interleaved timing (median and IQR), machine info,
  JSON output, the log-log slope;
* :mod:`.ops` — every op with its effective GB/s against the backend's copy bandwidth;
* :mod:`.suite` — train-step phases, ops, size sweep, 3-D lattices, PyTorch comparison;
* :mod:`.report` — markdown tables and the size-sweep PNG;
* :mod:`.torch_ref` — the PyTorch reference step (imports torch lazily).

The scripts in the repository's ``benchmarks/`` folder reuse these modules.
"""

from .timing import Timing, format_table, loglog_slope, machine_info, ms_stats, time_fn, time_interleaved, write_json

__all__ = ["Timing", "time_fn", "time_interleaved", "machine_info", "write_json", "format_table", "ms_stats",
           "loglog_slope"]
