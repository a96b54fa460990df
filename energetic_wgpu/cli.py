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
``-q/--quiet`` shows only warnings and errors, ``-v/--verbose`` adds debug messages: they set
the level of the ``energetic_wgpu`` logger, through which the library reports. The progress
bar only appears when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
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


# --------------------------------------------------------------------- logging
class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (so that a redirected
    or captured stderr is honoured)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _log_level(args: argparse.Namespace) -> int:
    if getattr(args, "quiet", 0):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", 0) else logging.INFO


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"energetic-wgpu: {record.levelname.lower()}: {msg}"
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {msg}"
        return msg


def setup_logging(level: int) -> Any:
    """Send the ``energetic_wgpu`` logger's records of ``level`` and above to stderr; returns
    a function that restores the logger as it was (the CLI can run in-process)."""
    logger = logging.getLogger("energetic_wgpu")
    old_level = logger.level
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(level)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    return restore


# ------------------------------------------------------------------------ info
def _fmt_limit(key: str, v: Any) -> str:
    if isinstance(v, int) and key.endswith(("_size", "_bytes")) and v >= 1 << 20:
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


def _info_report() -> dict[str, Any]:
    """Everything ``info`` shows, as JSON-able data (starts every backend and adapter)."""
    import numpy as np

    import energetic_wgpu as ew
    from . import backends

    try:
        import wgpu

        wgpu_version = wgpu.__version__
    except Exception as exc:  # noqa: BLE001
        wgpu_version = f"not importable ({type(exc).__name__}: {exc})"
    status = ew.backend_status()
    report: dict[str, Any] = {
        "versions": {"energetic_wgpu": ew.__version__, "python": sys.version.split()[0], "numpy": np.__version__,
                     "wgpu": wgpu_version},
        "backends": {k: {"ok": ok, "detail": why} for k, (ok, why) in status.items()},
        "adapters": [],
        "adapter_error": None,
    }
    try:
        from energetic_wgpu.backends.webgpu import list_adapters  # type: ignore[attr-defined]

        adapters = list_adapters()
    except Exception as exc:  # noqa: BLE001
        report["adapter_error"] = f"{type(exc).__name__}: {exc}"
        adapters = []
    for a in adapters:
        in_use = None
        try:
            be = ew.get_backend("wgpu", adapter=a["index"])
            ok, why = True, be.describe()
            in_use = be.limits_in_use()
        except Exception as exc:  # noqa: BLE001
            ok, why = False, f"{type(exc).__name__}: {exc}"
        # "limits": the adapter's maxima (what limits="adapter" requests); "limits_in_use": the
        # default backend's (WebGPU's default limits)
        report["adapters"].append({**a, "ok": ok, "detail": why, "limits_in_use": in_use})
    try:  # "numpy, since every wgpu adapter is a CPU/software one ..." and the like
        reason = backends.explain_auto()
        default = reason.split(",", 1)[0].strip()
    except Exception as exc:  # noqa: BLE001
        default, reason = "numpy", f"the auto choice could not be explained: {type(exc).__name__}: {exc}"
    report["auto"] = {"backend": default, "reason": reason}
    return report


def _print_info(report: dict[str, Any]) -> None:
    v = report["versions"]
    print(f"energetic_wgpu {v['energetic_wgpu']}  python {v['python']}  numpy {v['numpy']}  wgpu {v['wgpu']}")
    print("backends:")
    for name, b in report["backends"].items():
        print(f"  {name:<6} {'PASS' if b['ok'] else 'FAIL'}  {b['detail']}")
    print("wgpu adapters:")
    if report["adapter_error"]:
        print(f"  none: {report['adapter_error']}")
    for a in report["adapters"]:
        print(f"  [{a['index']}] {'PASS' if a['ok'] else 'FAIL'}  {a.get('name', '?')}  "
              f"({a.get('backend_type', '?')}, {a.get('adapter_type', '?')}; {a.get('description', '')})")
        if not a["ok"]:
            print(f"      reason: {a['detail']}")
        limits = a.get("limits") or {}
        shown = [f"{k} {_fmt_limit(k, limits[k])}" for k in KEY_LIMITS if k in limits]
        if shown:
            print("      adapter limits (limits='adapter'): " + ", ".join(shown))
        in_use = a.get("limits_in_use")
        if in_use:
            print(f"      limits in use ({in_use['limits_mode']}): " + ", ".join(
                f"{k} {_fmt_limit(k, in_use[k])}" for k in ("max_binding_bytes", "max_buffer_size")))
        feats = sorted(a.get("features") or [])
        if feats:
            print(f"      features ({len(feats)}): " + ", ".join(feats))
    auto = report["auto"]
    print(f"default backend (auto): {auto['reason']}")


def cmd_info(args: argparse.Namespace) -> int:
    report = _info_report()
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        _print_info(report)
    return 0 if any(b["ok"] for b in report["backends"].values()) else EXIT_FAIL


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
    from .errors import CheckpointError, ConfigError
    from .resume import check_resumable, config_changes
    from .rundir import RunLock
    from .trainer import Trainer, default_out_dir

    overrides = list(args.set or [])
    backend_name = args.backend
    if args.adapter is not None:
        if backend_name == "numpy":
            raise ConfigError("--adapter selects a wgpu adapter; it cannot be combined with --backend numpy")
        backend_name = "wgpu"  # naming an adapter means wgpu, never a silent NumPy fallback
    if backend_name is not None:
        overrides.append(f"backend.name={backend_name}")
    if args.adapter is not None:
        overrides.append(f"backend.adapter={args.adapter}")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.nproc is not None:
        overrides.append(f"distributed.nproc={args.nproc}")
    files = _user_files(args, overrides)

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
    if files:
        config = config.replace(files)
    if ckpt is not None:  # graph.* and router.dim cannot change; refused before any allocation
        check_resumable(config_changes(ckpt.config, config))
    if args.adapter is not None:
        _check_adapter(args.adapter)

    if args.out:
        out = Path(args.out)
    elif ckpt_path is not None:
        out = ckpt_path.parent
    else:
        out = Path(config.train.out_dir) if config.train.out_dir else default_out_dir()
    config = config.replace({"train.out_dir": str(out)})

    quiet = bool(args.quiet)
    progress = not (args.no_progress or quiet) and sys.stderr.isatty()
    say = (lambda text: None) if quiet else print
    echo = None if progress else say
    plan, world = launch_plan(config)
    if plan == "launch":  # start distributed.nproc ranks of this same command (rank 0 locks the folder)
        pinned = ["--out", str(_out_dir(out)), *(["--resume", str(ckpt_path)] if ckpt_path is not None else [])]
        return launch_local(config.distributed.nproc, [*args.argv, *pinned], config.distributed.timeout, err=_err)
    if plan == "rank":
        summary, lead, code = run_rank(
            world, config, out, ckpt, checkpoint_path=ckpt_path, progress=progress, echo=echo,
            lock=lambda: RunLock(_out_dir(out)),
        )
        if lead:
            _report(summary, out, say)
        return code
    # the trainer checks the size and starts the backend before the folder is created or locked
    trainer = Trainer(config, out_dir=out, progress=progress, echo=echo)
    with RunLock(_out_dir(out)):  # held from before the resume to the end of the run
        if ckpt is not None:
            step = trainer.resume(ckpt)
            say(f"resumed from {ckpt_path} at step {step}")
        summary = trainer.run()
    _report(summary, out, say)
    if not summary.interrupted:
        return 0
    return EXIT_TERMINATED if trainer.interrupted_by == "SIGTERM" else EXIT_INTERRUPTED


def _report(s: Any, out: Path, say: Any) -> None:
    """The closing lines of a training run."""
    val = "" if s.final_val_loss is None else f", val_loss {s.final_val_loss:.6g} (best {s.best_val_loss:.6g} at step {s.best_val_step})"
    say(
        f"done: {s.steps} steps on {s.backend}, {s.steps_per_second:.2f} steps/s; loss "
        f"{s.final_loss:.6g} (best {s.best_loss:.6g} at step {s.best_step}){val}"
        if s.final_loss is not None
        else f"done: {s.steps} steps on {s.backend}"
    )
    say(f"outputs in {out}/: " + ", ".join(Path(p).name for p in s.files.values()))


def _user_files(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    """Config changes of ``--graph`` / ``--data`` (absolute paths, so the run folder's
    config.yaml works from anywhere). ``--graph`` replaces the whole graph section."""
    from .errors import ConfigError

    files: dict[str, Any] = {}
    if args.graph is not None:
        clash = [o.split("=", 1)[0] for o in overrides if o.split("=", 1)[0].strip().startswith("graph.")]
        if clash:
            raise ConfigError(f"--graph replaces the graph section; it cannot be combined with --set {clash[0]}=...")
        files["graph"] = {"path": str(Path(args.graph).resolve())}
    if args.data is not None:
        files["train.task.name"] = "arrays"
        files["train.task.path"] = str(Path(args.data).resolve())
    return files


def _check_adapter(selector: str) -> None:
    """Start the wgpu backend on ``selector`` now: an adapter that does not exist is a usage
    error (exit 2) naming the adapters there are, not a fallback."""
    from .backends import get_backend
    from .errors import BackendUnavailable, ConfigError

    try:
        get_backend("wgpu", adapter=selector)
    except BackendUnavailable as exc:
        raise ConfigError(f"--adapter {selector!r}: {exc}") from None


# ------------------------------------------------------------------ check/bench
def cmd_check(args: argparse.Namespace) -> int:
    from . import check

    if args.dawn:
        return _check_dawn(args)
    return check.run(adapter=args.adapter, as_json=args.json, include_numpy=args.numpy, echo=print)


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
        from .check import json_report

        print(json_report(dawn.to_check_results(rows), notes=[]))
    else:
        print(dawn.format_table(rows))
        print(f"check --dawn: {len(rows) - len(failed)}/{len(rows)} passed" + (f", {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.run(args, echo=print)


# ---------------------------------------------------------------------- parser
#: (name, one-line help, description, example epilog) of each subcommand
_COMMANDS = {
    "info": (
        "list backends and wgpu adapters with PASS/FAIL, limits and features",
        "List every backend and wgpu adapter with PASS/FAIL and the reason, the adapters' key limits "
        "and features, and which backend 'auto' picks and why.",
        "examples:\n  energetic-wgpu info\n  energetic-wgpu info --json > machine.json",
    ),
    "train": (
        "train the router (default: the packaged baseline config)",
        "Train the router as a config file says (default: the packaged baseline: a lattice graph and a "
        "synthetic teacher task), or on your own graph and data (--graph, --data). Writes metrics "
        "(jsonl, CSV, JSON), summary.json, metrics.png, config.yaml and checkpoint.npz to the output folder.",
        "examples:\n"
        "  energetic-wgpu train --backend numpy --steps 50\n"
        "  energetic-wgpu train --graph edges.txt --data samples.npz --out runs/mine\n"
        "  energetic-wgpu train --resume runs/mine --steps 400   # continue up to 400 steps in total",
    ),
    "check": (
        "CPU<->GPU parity of every op on every wgpu adapter",
        "Run every op on every wgpu adapter (or, with --dawn, under headless Chromium) and compare with "
        "the NumPy reference; exit code 1 on any failure.",
        "examples:\n  energetic-wgpu check\n  energetic-wgpu check --adapter vulkan --json",
    ),
    "bench": (
        "benchmark suite: phases, ops, size sweep, 3-D lattices, PyTorch comparison",
        "Time the train-step phases, every op, a size sweep, 3-D lattices and (when torch is installed) "
        "PyTorch, on every backend and adapter; markdown to stdout.",
        "examples:\n  energetic-wgpu bench --quick\n  energetic-wgpu bench --backend numpy --sections phases --json -",
    ),
}


def _verbosity(parser: argparse.ArgumentParser, top: bool) -> None:
    # on the subcommands too (``train -q``); there the default must not clobber the top level's
    default = 0 if top else argparse.SUPPRESS
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="count", default=default,
                   help="only warnings and errors (no progress bar, no step lines)")
    g.add_argument("-v", "--verbose", action="count", default=default, help="also debug messages")


def _sub(sub: Any, name: str) -> argparse.ArgumentParser:
    short, description, epilog = _COMMANDS[name]
    p = sub.add_parser(name, help=short, description=textwrap.fill(description, 79), epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _verbosity(p, top=False)
    p.add_argument("--debug", action="store_true", help="on failure, also print the Python traceback")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="energetic-wgpu",
        description="The energetic router on wgpu (any GPU) and NumPy. Without a subcommand: train.",
        epilog="examples:\n  energetic-wgpu info\n  energetic-wgpu train --steps 50\n  energetic-wgpu check\n"
               "run 'energetic-wgpu COMMAND --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"energetic_wgpu {__version__}")
    _verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="{info,train,check,bench}")

    p = _sub(sub, "info")
    p.add_argument("--json", action="store_true", help="print the report as JSON only (nothing else on stdout)")
    p.set_defaults(func=cmd_info)

    p = _sub(sub, "train")
    p.add_argument("--config", metavar="FILE", help="YAML config file (default: the packaged baseline.yaml)")
    p.add_argument("--graph", metavar="PATH",
                   help="train on this graph file instead of the config's lattice: a .npz with row_ptr/col_idx "
                        "[+ weights], a scipy.sparse .npz, or an edge list 'src dst [weight]' per line")
    p.add_argument("--data", metavar="PATH",
                   help="train on this .npz (energies and targets [S, N], optional mask) instead of the "
                        "synthetic task; train.task.val_fraction of the rows are held out for val_loss")
    p.add_argument("--backend", choices=("auto", "numpy", "wgpu"), help="override backend.name")
    p.add_argument("--adapter", metavar="X",
                   help="run on this wgpu adapter (index or name substring); implies --backend wgpu, and an "
                        "adapter that does not exist is an error")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a config key, e.g. --set router.top_k=8 (repeatable)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="total optimizer steps of the run (train.steps); with --resume the run continues up to "
                        "N steps in all, not N more")
    p.add_argument("--out", metavar="DIR", help="output folder (default: train.out_dir or runs/<timestamp>)")
    p.add_argument("--resume", metavar="PATH|auto",
                   help="continue from a checkpoint file or run folder ('auto': the latest run under runs/)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar, log lines instead (the default when stderr is not a terminal)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel training on N local worker processes (override distributed.nproc; "
                        "needs the 'distributed' extra); train.batch_size is the global batch")
    p.set_defaults(func=cmd_train, argv=[])

    p = _sub(sub, "check")
    p.add_argument("--adapter", metavar="X", help="only adapters whose index or name matches X")
    p.add_argument("--json", action="store_true",
                   help="print the results as JSON (the same row schema with and without --dawn)")
    p.add_argument("--numpy", action="store_true", help="also check the NumPy float32 backend against float64")
    p.add_argument("--dawn", action="store_true",
                   help="run the same kernels under headless Chromium (Dawn/Tint) instead of wgpu-native")
    p.set_defaults(func=cmd_check)

    p = _sub(sub, "bench")
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


_GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def _with_command(argv: list[str]) -> list[str]:
    """Insert the default subcommand (train) after any leading -q/-v when none is given."""
    i = 0
    while i < len(argv) and (argv[i] in _GLOBAL_FLAGS or argv[i] in ("-qq", "-vv")):
        i += 1
    rest = argv[i:]
    if not rest or rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version"):
        return [*argv[:i], "train", *rest]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 runtime failure, 2 bad config or
    usage, 130 SIGINT, 141 closed stdout pipe, 143 SIGTERM). Failures print one line."""
    from .environment import ensure_xdg_runtime_dir

    ensure_xdg_runtime_dir()  # before wgpu loads the drivers: Mesa complains otherwise
    from .errors import BackendUnavailable, CheckpointError, ConfigError, EnergeticError, RunLockedError

    argv = _with_command(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    args.argv = argv  # the data-parallel launcher starts its workers with the same arguments
    restore_logging = setup_logging(_log_level(args))
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
    finally:
        restore_logging()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
