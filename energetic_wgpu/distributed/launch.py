"""Starting data-parallel training from the command line.

* ``energetic-wgpu train --nproc N`` (or ``distributed.nproc: N``) runs :func:`launch_local`:
  N worker processes of the same command on this machine, with the variables ``torchrun``
  sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free MASTER_PORT).
* A process started with those variables (by this launcher, by ``torchrun`` or by any other
  launcher, on one machine or several) is a rank: :func:`run_rank`.

The launcher imports no torch. It forwards SIGINT/SIGTERM to the workers once (they agree
to stop after the same step and rank 0 writes one checkpoint); when a worker fails, the
others fail too within ``distributed.timeout`` (gloo reports a dead peer at once), and any
worker still running 5 s after that is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

from ..config import Config
from ..errors import BackendUnavailable, EnergeticError
from ..metrics import RunSummary
from ._torch import EXTRA_HINT, torch_available
from .env import WorldEnv, free_port, init_from_env, world_from_env

__all__ = ["launch_plan", "launch_local", "run_rank", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_INTERRUPTED = 130  # SIGINT
EXIT_TERMINATED = 143  # SIGTERM


def launch_plan(config: Config) -> tuple[str, WorldEnv | None]:
    """("rank", world) when this process was launched as a rank; ("launch", None) when it
    should start ``distributed.nproc`` > 1 local workers; ("single", None) otherwise."""
    world = world_from_env()
    if world is not None:
        return "rank", world
    if config.distributed.nproc > 1:
        if not torch_available():
            raise BackendUnavailable(
                f"--nproc {config.distributed.nproc} (data-parallel training) needs torch.distributed; {EXTRA_HINT}"
            )
        return "launch", None
    return "single", None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM when the launcher dies (no orphaned ranks)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch_local(
    nproc: int,
    argv: Sequence[str],
    timeout: float,
    *,
    err: Callable[[str], None] | None = None,
) -> int:
    """Run ``python -m energetic_wgpu *argv`` as ``nproc`` ranks on this machine and wait.
    ``err`` reports a failure in one line (default: the library's logger).

    Returns 0 when every rank succeeded; 130/143 when the run was interrupted by
    SIGINT/SIGTERM (and checkpointed); 2 when every failed rank reported a usage/config error;
    1 for any other failure (a rank that died, crashed or could not start), after a line
    naming each failed rank."""
    err = err or logging.getLogger("energetic_wgpu").error
    port = free_port()
    threads = max(1, (os.cpu_count() or 1) // nproc)
    procs: list[subprocess.Popen[bytes]] = []
    for rank in range(nproc):
        env = dict(os.environ)
        env.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        )
        env.setdefault("OMP_NUM_THREADS", str(threads))
        env.setdefault("OPENBLAS_NUM_THREADS", str(threads))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "energetic_wgpu", *argv], env=env, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        )

    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum)
                except OSError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    grace = timeout + 5.0
    hung: list[int] = []
    try:
        deadline = None
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0, EXIT_INTERRUPTED, EXIT_TERMINATED)]
            if failed and deadline is None:
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                for rank, p in enumerate(procs):
                    if p.poll() is None:  # stuck (e.g. stopped or hung in a driver): the launcher ends it
                        hung.append(rank)
                        p.kill()
                break
            time.sleep(0.05)
        codes = [p.wait() for p in procs]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    failures = [(r, c) for r, c in enumerate(codes) if c not in (0, EXIT_INTERRUPTED, EXIT_TERMINATED)]
    if failures:
        ranks = "; ".join(
            f"rank {r} " + (f"was still running {grace:g} s after another rank failed and was killed"
                            if r in hung else _describe_exit(c))
            for r, c in failures
        )
        err(f"data-parallel run failed ({nproc} ranks): {ranks}")
        return 2 if all(c == 2 for _, c in failures) else 1
    interrupted = [c for c in codes if c in (EXIT_INTERRUPTED, EXIT_TERMINATED)]
    if interrupted:
        return EXIT_TERMINATED if signal.SIGTERM in received or EXIT_TERMINATED in interrupted else EXIT_INTERRUPTED
    return 0


class _TermAsInterrupt:
    """Outside the training loop (joining the group, opening the backend, resuming) SIGTERM is
    handled like SIGINT; inside it the trainer handles both. Remembers that SIGTERM came."""

    def __init__(self) -> None:
        self.received = False
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = True
        os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self) -> "_TermAsInterrupt":
        try:
            self._old = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def run_rank(
    world: WorldEnv,
    config: Config,
    out: Path,
    checkpoint: Any,
    *,
    checkpoint_path: Path | None = None,
    progress: bool,
    echo: Callable[[str], None] | None,
    lock: Callable[[], ContextManager[Any]] | None = None,
) -> tuple[RunSummary, bool, int]:
    """Train as ``world.rank``: join the process group (``distributed.backend``, with
    ``distributed.timeout``), open this rank's backend, let rank 0 take ``lock()`` (the run
    folder's lock), resume from ``checkpoint`` (a path or a loaded Checkpoint) when given,
    train. A rank that fails in any of these stops every rank before step 1, naming it.

    Returns (summary, is rank 0, exit code: 0, or 130/143 when interrupted by SIGINT/SIGTERM)."""
    from .comm import DataParallel
    from .trainer import DistributedTrainer, open_rank_backend

    d = config.distributed
    with _TermAsInterrupt() as term, contextlib.ExitStack() as stack:
        init_from_env(world, backend=d.backend, timeout=d.timeout)
        dp = DataParallel()
        backend = open_rank_backend(dp, config, world)
        trainer = DistributedTrainer(config, dp, backend=backend, out_dir=out, progress=progress, echo=echo)
        lead = dp.rank == 0
        error = None
        if lead and lock is not None:
            try:
                stack.enter_context(lock())
            except EnergeticError as exc:
                error = f"{type(exc).__name__}: {exc}"
        dp.raise_if_any_failed(error, "cannot lock the run folder")
        if checkpoint is not None:
            step = trainer.resume_all(checkpoint)
            if lead:
                trainer.echo(f"resumed from {checkpoint_path or checkpoint} at step {step}")
        backends = dp.all_gather(backend.describe())
        if lead:
            trainer.echo(
                f"data-parallel: {dp.world_size} ranks ({d.backend}), global batch {sum(trainer.shard_rows)} "
                f"= shards {'+'.join(map(str, trainer.shard_rows))}; adapter_per_rank {d.adapter_per_rank}: "
                + ", ".join(f"rank {r} on {b}" for r, b in enumerate(backends))
            )
        summary = trainer.run()
        import torch.distributed as dist

        dist.destroy_process_group()
    if not summary.interrupted:
        return summary, lead, 0
    sigterm = term.received or trainer.interrupted_by == "SIGTERM"
    return summary, lead, EXIT_TERMINATED if sigterm else EXIT_INTERRUPTED
