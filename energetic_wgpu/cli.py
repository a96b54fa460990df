"""The ``energetic-wgpu`` command line (also ``python -m energetic_wgpu``).

Subcommands:

* ``info``  — every backend and wgpu adapter with PASS/FAIL and the reason, limits, features.
* ``train`` — train the router as a config file says (default: the packaged baseline);
  writes metrics, summary, plot and checkpoint; ``--resume`` continues a run. The default
  when no subcommand is given.
* ``check`` — the CPU↔GPU parity suite on every adapter (exit code 1 on any failure).
* ``bench`` — the benchmark suite on every backend and adapter (markdown, JSON, PNG).

Errors in the configuration exit with code 2 and one message naming the key (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

EXIT_CONFIG = 2
EXIT_FAIL = 1
EXIT_INTERRUPTED = 130


def _err(msg: str) -> None:
    print(f"energetic-wgpu: error: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------ info
def _fmt_limit(key: str, v: Any) -> str:
    if isinstance(v, int) and key.endswith(("buffer_size", "binding_size", "storage_size")) and v >= 1 << 20:
        return f"{v} ({v / (1 << 20):,.0f} MiB)"
    return str(v)


KEY_LIMITS = (
    "max_buffer_size",
    "max_storage_buffer_binding_size",
    "max_storage_buffers_per_shader_stage",
    "max_compute_workgroups_per_dimension",
    "max_compute_invocations_per_workgroup",
    "max_compute_workgroup_size_x",
    "max_compute_workgroup_storage_size",
)


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    import energetic_wgpu as ew

    try:
        import wgpu

        wgpu_version = wgpu.__version__
    except Exception as exc:  # noqa: BLE001
        wgpu_version = f"not importable ({type(exc).__name__}: {exc})"
    print(f"energetic_wgpu {ew.__version__}  python {sys.version.split()[0]}  numpy {np.__version__}  wgpu {wgpu_version}")
    print("backends:")
    status = ew.backend_status()
    for name, (ok, why) in status.items():
        print(f"  {name:<6} {'PASS' if ok else 'FAIL'}  {why}")
    print("wgpu adapters:")
    report: dict[str, Any] = {"backends": {k: {"ok": ok, "detail": why} for k, (ok, why) in status.items()}, "adapters": []}
    try:
        from energetic_wgpu.backends.webgpu import list_adapters  # type: ignore[attr-defined]

        adapters = list_adapters()
    except Exception as exc:  # noqa: BLE001
        print(f"  none: {type(exc).__name__}: {exc}")
        adapters = []
    for a in adapters:
        try:
            be = ew.get_backend("wgpu", adapter=a["index"])
            ok, why = True, be.describe()
        except Exception as exc:  # noqa: BLE001
            ok, why = False, f"{type(exc).__name__}: {exc}"
        report["adapters"].append({**a, "ok": ok, "detail": why})
        print(f"  [{a['index']}] {'PASS' if ok else 'FAIL'}  {a.get('name', '?')}  "
              f"({a.get('backend_type', '?')}, {a.get('adapter_type', '?')}; {a.get('description', '')})")
        if not ok:
            print(f"      reason: {why}")
        limits = a.get("limits") or {}
        shown = [f"{k} {_fmt_limit(k, limits[k])}" for k in KEY_LIMITS if k in limits]
        if shown:
            print("      limits: " + ", ".join(shown))
        feats = sorted(a.get("features") or [])
        if feats:
            print(f"      features ({len(feats)}): " + ", ".join(feats))
    env = os.environ.get("ENERGETIC_BACKEND")
    default = next((n for n in ("wgpu", "numpy") if status.get(n, (False, ""))[0]), "none")
    if env:
        default = f"{env} (from $ENERGETIC_BACKEND)"
    print(f"default backend (auto): {default}")
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    return 0 if any(ok for ok, _ in status.values()) else EXIT_FAIL


# ----------------------------------------------------------------------- train
def _latest_run(root: Path = Path("runs")) -> Path | None:
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if (p / "checkpoint.npz").is_file()]
    return max(runs, key=lambda p: (p / "checkpoint.npz").stat().st_mtime) if runs else None


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import find_checkpoint, load_checkpoint
    from .config import from_dict, load_config
    from .distributed.launch import launch_local, launch_plan, run_rank
    from .errors import CheckpointError
    from .trainer import Trainer, default_out_dir

    overrides = list(args.set or [])
    if args.backend is not None:
        overrides.append(f"backend.name={args.backend}")
    if args.adapter is not None:
        overrides.append(f"backend.adapter={args.adapter}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.nproc is not None:
        overrides.append(f"distributed.nproc={args.nproc}")

    ckpt_path: Path | None = None
    if args.resume is not None:
        if args.resume == "auto":
            where = Path(args.out) if args.out else _latest_run()
            if where is None:
                raise CheckpointError("--resume auto found no run with a checkpoint.npz under runs/; pass a path")
        else:
            where = Path(args.resume)
        ckpt_path = find_checkpoint(where)
        if ckpt_path is None:
            raise CheckpointError(f"no checkpoint at {str(where)!r} (expected a file or a folder with checkpoint.npz)")

    if ckpt_path is not None and args.config is None:
        # continue with the configuration the run was started with (plus any overrides)
        saved = load_checkpoint(ckpt_path).config
        config = from_dict(saved).replace(overrides) if saved else load_config(None, overrides)
    else:
        config = load_config(args.config, overrides)

    if args.out:
        out = Path(args.out)
    elif ckpt_path is not None:
        out = ckpt_path.parent
    else:
        out = Path(config.train.out_dir) if config.train.out_dir else default_out_dir()
    config = config.replace({"train.out_dir": str(out)})

    progress, echo = not args.no_progress, print if args.no_progress else None
    plan, world = launch_plan(config)
    if plan == "launch":  # start distributed.nproc ranks of this same command
        pinned = ["--out", str(out), *(["--resume", str(ckpt_path)] if ckpt_path is not None else [])]
        return launch_local(config.distributed.nproc, [*args.argv, *pinned], config.distributed.timeout)
    if plan == "rank":
        summary, lead, code = run_rank(world, config, out, ckpt_path, progress=progress, echo=echo)
        if lead:
            _report(summary, out)
        return code
    trainer = Trainer(config, out_dir=out, progress=progress, echo=echo)
    if ckpt_path is not None:
        step = trainer.resume(ckpt_path)
        print(f"resumed from {ckpt_path} at step {step}")
    summary = trainer.run()
    _report(summary, out)
    return EXIT_INTERRUPTED if summary.interrupted else 0


def _report(s: Any, out: Path) -> None:
    """The closing lines of a training run."""
    print(
        f"done: {s.steps} steps on {s.backend}, {s.steps_per_second:.2f} steps/s; loss "
        f"{s.final_loss:.6g} (best {s.best_loss:.6g} at step {s.best_step})"
        if s.final_loss is not None
        else f"done: {s.steps} steps on {s.backend}"
    )
    print(f"outputs in {out}/: " + ", ".join(Path(p).name for p in s.files.values()))


# ------------------------------------------------------------------ check/bench
def cmd_check(args: argparse.Namespace) -> int:
    from . import check

    if args.dawn:
        return _check_dawn(args)
    return check.run(adapter=args.adapter, as_json=args.json, include_numpy=args.numpy)


def _check_dawn(args: argparse.Namespace) -> int:
    """The same parity table under headless Chromium (Dawn/Tint): the wgpu backend's dispatch
    plans replayed with the same WGSL files, compared with NumPy."""
    from . import dawn

    try:
        rows = dawn.check(adapter=args.adapter)
    except dawn.DawnUnavailable as exc:
        print(f"check --dawn: Chromium/WebGPU unavailable: {exc}", file=sys.stderr)
        return 1
    except dawn.DawnError as exc:
        print(f"check --dawn: the browser run failed: {exc}", file=sys.stderr)
        return 1
    failed = [r for r in rows if r["status"] not in ("pass",)]
    if args.json:
        print(json.dumps({"ok": not failed, "results": rows}, indent=1, default=str))
    else:
        print(dawn.format_table(rows))
        print(f"check --dawn: {len(rows) - len(failed)}/{len(rows)} passed" + (f", {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.run(args)


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="energetic-wgpu",
        description="The energetic router on wgpu (any GPU) and NumPy. Without a subcommand: train.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"energetic_wgpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{info,train,check,bench}")

    p = sub.add_parser("info", help="list backends and wgpu adapters with PASS/FAIL, limits and features")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train the router (default: the packaged baseline config)")
    p.add_argument("--config", metavar="FILE", help="YAML config file (default: the packaged baseline.yaml)")
    p.add_argument("--backend", choices=("auto", "numpy", "wgpu"), help="override backend.name")
    p.add_argument("--adapter", metavar="X", help="override backend.adapter (index or name substring)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a config key, e.g. --set router.top_k=8 (repeatable)")
    p.add_argument("--steps", type=int, metavar="N", help="override train.steps")
    p.add_argument("--out", metavar="DIR", help="output folder (default: train.out_dir or runs/<timestamp>)")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="continue from a checkpoint file or run folder ('auto': the latest run under runs/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel training on N local worker processes (override distributed.nproc; "
                        "needs the 'distributed' extra); train.batch_size is the global batch")
    p.set_defaults(func=cmd_train, argv=[])

    p = sub.add_parser("check", help="CPU<->GPU parity of every op on every wgpu adapter")
    p.add_argument("--adapter", metavar="X", help="only adapters whose index or name matches X")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--numpy", action="store_true", help="also check the NumPy float32 backend against float64")
    p.add_argument("--dawn", action="store_true",
                   help="run the same kernels under headless Chromium (Dawn/Tint) instead of wgpu-native")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", help="benchmark suite: phases, ops, size sweep, 3-D lattices, PyTorch comparison")
    p.add_argument("--config", metavar="FILE", help="config giving the phases' lattice and router (default: baseline)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[], help="override a config key")
    p.add_argument("--backend", choices=("numpy", "wgpu", "all"), default=None, help="only this backend")
    p.add_argument("--adapter", metavar="X", help="only wgpu adapters matching X (index or name substring)")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats (5/3, 1 warm-up) and a smaller ops graph: about a minute per software adapter")
    p.add_argument("--full", action="store_true",
                   help="add N = 1,000,000 to the size sweep (minutes per software adapter)")
    p.add_argument("--sections", metavar="LIST",
                   help="comma list of phases,ops,sweep,lattice3d,torch (default: all)")
    p.add_argument("--batch", type=int, metavar="B", help="batch of the phases (default: train.batch_size)")
    p.add_argument("--repeats", type=int, metavar="N", help="timed runs of every measurement (median reported)")
    p.add_argument("--warmup", type=int, metavar="N", help="untimed warm-up runs")
    p.add_argument("--json", metavar="FILE", help="write every sample and the machine as JSON ('-': to stdout)")
    p.add_argument("--markdown", metavar="FILE", help="write the markdown report to FILE")
    p.add_argument("--plot", metavar="FILE", help="write the size sweep as a log-log PNG (needs matplotlib)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 bad config/usage, 130 interrupted)."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")  # Mesa complains otherwise
    from .errors import BackendUnavailable, CheckpointError, ConfigError, EnergeticError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["train", *argv]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    args.argv = argv  # the data-parallel launcher starts its workers with the same arguments
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except (CheckpointError, BackendUnavailable) as exc:
        _err(str(exc))
        return EXIT_FAIL
    except EnergeticError as exc:
        _err(f"{type(exc).__name__}: {exc}")
        return EXIT_FAIL
    except NotImplementedError as exc:
        _err(f"not implemented on this backend: {exc} (try --backend numpy)")
        return EXIT_FAIL
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
