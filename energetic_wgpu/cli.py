"""The ``energetic-wgpu`` command line (also ``python -m energetic_wgpu``).

Subcommands:

* ``info``  — every backend and wgpu adapter with PASS/FAIL and the reason, limits, features.
* ``train`` — train the router as a config file says (default: the packaged baseline);
  writes metrics, summary, plot and checkpoint; ``--resume`` continues a run. The default
  when no subcommand is given.
* ``check`` — the CPU↔GPU parity suite on every adapter (exit code 1 on any failure).
* ``bench`` — the benchmark suite on every backend and adapter (markdown, JSON, PNG).

Every failure prints one line naming its cause (``--debug`` adds the traceback). Exit
codes: 0 done, 1 runtime failure (backend, checkpoint, training, a folder locked by another
run), 2 usage or configuration error, 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM,
141 when stdout is a closed pipe (``train | head -1``: the run ends quietly).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

EXIT_CONFIG = 2
EXIT_FAIL = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141


def _err(msg: str) -> None:
    one_line = "; ".join(part.strip() for part in str(msg).splitlines() if part.strip())
    print(f"energetic-wgpu: error: {one_line}", file=sys.stderr)


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
    print(f"default backend (auto): {ew.explain_auto()}")
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    return 0 if any(ok for ok, _ in status.values()) else EXIT_FAIL


# ----------------------------------------------------------------------- train
def _latest_run(root: Path = Path("runs")) -> Path | None:
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if (p / "checkpoint.npz").is_file()]
    return max(runs, key=lambda p: (p / "checkpoint.npz").stat().st_mtime) if runs else None


def _out_dir(out: Path) -> Path:
    """``out`` as a usable output folder (created); ConfigError naming ``--out`` otherwise."""
    from .errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a folder; pass a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".energetic-wgpu.write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {str(out)!r} cannot be used as the output folder: {exc.strerror or exc}") from None
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import find_checkpoint, load_checkpoint
    from .config import from_dict, load_config
    from .distributed.launch import launch_local, launch_plan, run_rank
    from .errors import CheckpointError
    from .resume import check_resumable, config_changes
    from .rundir import RunLock
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

    ckpt = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None and args.config is None:
        # continue with the configuration the run was started with (plus any overrides)
        config = from_dict(ckpt.config).replace(overrides) if ckpt.config else load_config(None, overrides)
    else:
        config = load_config(args.config, overrides)
    if ckpt is not None:  # graph.* and router.dim cannot change; refused before any allocation
        check_resumable(config_changes(ckpt.config, config))

    if args.out:
        out = Path(args.out)
    elif ckpt_path is not None:
        out = ckpt_path.parent
    else:
        out = Path(config.train.out_dir) if config.train.out_dir else default_out_dir()
    config = config.replace({"train.out_dir": str(out)})

    progress, echo = not args.no_progress, print if args.no_progress else None
    plan, world = launch_plan(config)
    if plan == "launch":  # start distributed.nproc ranks of this same command (rank 0 locks the folder)
        pinned = ["--out", str(_out_dir(out)), *(["--resume", str(ckpt_path)] if ckpt_path is not None else [])]
        return launch_local(config.distributed.nproc, [*args.argv, *pinned], config.distributed.timeout)
    if plan == "rank":
        summary, lead, code = run_rank(
            world, config, out, ckpt, checkpoint_path=ckpt_path, progress=progress, echo=echo,
            lock=lambda: RunLock(_out_dir(out)),
        )
        if lead:
            _report(summary, out)
        return code
    # the trainer checks the size and starts the backend before the folder is created or locked
    trainer = Trainer(config, out_dir=out, progress=progress, echo=echo)
    with RunLock(_out_dir(out)):  # held from before the resume to the end of the run
        if ckpt is not None:
            step = trainer.resume(ckpt)
            print(f"resumed from {ckpt_path} at step {step}")
        summary = trainer.run()
    _report(summary, out)
    if not summary.interrupted:
        return 0
    return EXIT_TERMINATED if trainer.interrupted_by == "SIGTERM" else EXIT_INTERRUPTED


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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on failure, also print the Python traceback")
    sub = parser.add_subparsers(dest="command", metavar="{info,train,check,bench}")

    p = sub.add_parser("info", parents=[common],
                       help="list backends and wgpu adapters with PASS/FAIL, limits and features")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", parents=[common], help="train the router (default: the packaged baseline config)")
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

    p = sub.add_parser("check", parents=[common], help="CPU<->GPU parity of every op on every wgpu adapter")
    p.add_argument("--adapter", metavar="X", help="only adapters whose index or name matches X")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--numpy", action="store_true", help="also check the NumPy float32 backend against float64")
    p.add_argument("--dawn", action="store_true",
                   help="run the same kernels under headless Chromium (Dawn/Tint) instead of wgpu-native")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", parents=[common],
                       help="benchmark suite: phases, ops, size sweep, 3-D lattices, PyTorch comparison")
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


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that the interpreter's final flush
    does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a descriptor (captured)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 runtime failure, 2 bad config or
    usage, 130 SIGINT, 141 closed stdout pipe, 143 SIGTERM). Failures print one line."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")  # Mesa complains otherwise
    from .errors import BackendUnavailable, CheckpointError, ConfigError, EnergeticError, RunLockedError

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
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here when the output was still buffered
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt as exc:
        _err("interrupted")
        return EXIT_TERMINATED if getattr(exc, "signum", None) == signal.SIGTERM else EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (--debug: traceback)
        if getattr(args, "debug", False):
            traceback.print_exc()
        if isinstance(exc, ConfigError):
            _err(str(exc))
            return EXIT_CONFIG
        if isinstance(exc, (CheckpointError, BackendUnavailable, RunLockedError)):
            _err(str(exc))
        elif isinstance(exc, NotImplementedError):
            _err(f"not implemented on this backend: {exc} (try --backend numpy)")
        elif isinstance(exc, EnergeticError):
            _err(f"{type(exc).__name__}: {exc}")
        elif isinstance(exc, MemoryError):
            _err("out of memory (MemoryError); lower graph.nodes_per_layer, graph.layers or train.batch_size")
        elif isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            _err(f"{type(exc).__name__}{where}: {exc.strerror or exc}")
        else:
            _err(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
