"""A roofline model of the train step on real GPUs, from the bytes it must move and its dispatches.

No GPU has run this table: it is arithmetic on published hardware figures, for the default and
the large workload of benchmarks/bench_ab.py. For each GPU class:

* bandwidth time = minimum bytes of a step (``bench_ab.min_bytes``, T = 1, mse) / DRAM bandwidth
  (the default workload's ~30 MB would sit in L2/SLC; DRAM bandwidth is the conservative bound);
* dispatch time = dispatches per step x the GPU's cost per dispatch boundary in one pass
  (a barrier and a ramp: ~2-5 us on an H100, ~5-10 us on an M-series GPU; low and high ends);
* modelled device time = bandwidth time + dispatch time (no overlap: a bound, not a prediction);
* host time: the measured encode + submit of one step here (Python, lavapipe; a GPU driver's
  own submit cost is not included) — a step is host-bound when host time exceeds device time.

    python benchmarks/roofline.py --dispatches 9 --host-ms 0.6 [--large-dispatches 9]
"""

from __future__ import annotations

import argparse

from bench_ab import min_bytes  # type: ignore[import-not-found]  (run from benchmarks/ or as a script)

#: name -> (DRAM GB/s, per-dispatch us low, high)
GPUS = {
    "H100 SXM (3.35 TB/s)": (3350.0, 2.0, 5.0),
    "M4 Pro (273 GB/s)": (273.0, 5.0, 10.0),
    "M4 (120 GB/s)": (120.0, 5.0, 10.0),
}

WORKLOADS = {
    "default: lattice 10x1024, E = 90,112, B = 64, d = 16": (10 * 1024, 90_112, 64, 16),
    "large: N = 1M, E = 10M, B = 8, d = 16": (1_000_000, 10_000_000, 8, 16),
}


def table(dispatches: dict[str, int], host_ms: float) -> str:
    rows = ["| workload | GPU | min bytes / step | bandwidth time | dispatches | dispatch time | modelled device time "
            "| host encode+submit (measured here) | bound by |", "|---|---|---|---|---|---|---|---|---|"]
    for wname, (n, e, b, d) in WORKLOADS.items():
        nbytes = sum(min_bytes(n, e, b, d).values())
        disp = dispatches[wname]
        for gname, (gbs, lo, hi) in GPUS.items():
            bw_ms = nbytes / (gbs * 1e9) * 1e3
            d_lo, d_hi = disp * lo * 1e-3, disp * hi * 1e-3
            dev_lo, dev_hi = bw_ms + d_lo, bw_ms + d_hi
            bound = "host" if host_ms > dev_hi else ("device" if host_ms < dev_lo else "either")
            rows.append(f"| {wname} | {gname} | {nbytes / 1e6:.1f} MB | {bw_ms:.3f} ms | {disp} | "
                        f"{d_lo:.3f}-{d_hi:.3f} ms | {dev_lo:.3f}-{dev_hi:.3f} ms | {host_ms:.2f} ms | {bound} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dispatches", type=int, required=True, help="dispatches of the default step (T = 1)")
    ap.add_argument("--large-dispatches", type=int, default=None, help="of the large step (default: the same)")
    ap.add_argument("--host-ms", type=float, required=True, help="measured host encode+submit of one step")
    args = ap.parse_args()
    names = list(WORKLOADS)
    disp = {names[0]: args.dispatches, names[1]: args.large_dispatches or args.dispatches}
    print(table(disp, args.host_ms))


if __name__ == "__main__":
    main()
