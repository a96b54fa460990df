"""The training loop (the seed's "Training Loop": batch → forward → loss → backward → AdamW
→ metrics every N steps → checkpoint every M steps).

Each step is one :meth:`Router.train_step`; on a GPU backend nothing is read back except
every ``train.log_every`` steps (loss, gradient norm and forward metrics) and at
checkpoints. Ctrl-C finishes the current step, writes a checkpoint and returns cleanly;
:meth:`Trainer.resume` continues bit-identically to an uninterrupted run on the same
backend (parameters, optimizer state, step and data state are all restored).

Example::

    from energetic_wgpu.config import load_config
    from energetic_wgpu.trainer import Trainer
    summary = Trainer(load_config(overrides=["train.steps=50"]), out_dir="runs/demo").run()
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .backends import Backend, get_backend
from .checkpoint import Checkpoint, find_checkpoint, load_checkpoint, save_checkpoint
from .config import Config
from .errors import CheckpointError, InvalidArgumentError
from .graph import build_lattice
from .metrics import EventLog, MetricsCollector, RunSummary, plot_metrics
from .optim import AdamW, Schedule, make_schedule
from .router import Router, RouterParams
from .tasks import DataSource, make_task

__all__ = ["Trainer", "make_backend", "make_optimizer_schedule", "default_out_dir"]

log = logging.getLogger("energetic_wgpu")


def make_backend(config: Config) -> Backend:
    """The backend of ``config.backend`` (the adapter option only where it means something)."""
    name, adapter = config.backend.name, config.backend.adapter
    if name == "numpy" or adapter is None:
        return get_backend(name)
    return get_backend(name, adapter=adapter)


def make_optimizer_schedule(config: Config) -> Schedule:
    """The learning-rate schedule of ``config.optimizer.schedule``."""
    s = config.optimizer.schedule
    return make_schedule(
        s.name,
        config.optimizer.lr,
        total_steps=s.total_steps or config.train.steps,
        step_size=s.step_size,
        gamma=s.gamma,
        min_lr=s.min_lr,
        warmup_steps=s.warmup_steps,
    )


def default_out_dir() -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` under the current directory."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


class _DeferredInterrupt:
    """While active (main thread only), the first Ctrl-C sets a flag that the loop checks
    between steps, so a step is never cut in half; a second Ctrl-C interrupts at once."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.requested = False
        self._notify = notify
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._notify("interrupt: finishing the current step, then saving a checkpoint (Ctrl-C again to abort)")

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not allowed here (embedded interpreter)
                self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Trainer:
    """Train a router as ``config`` describes.

    Args:
        config: the run configuration.
        backend: a backend (default: from ``config.backend``).
        data: a :class:`~energetic_wgpu.tasks.DataSource` (default: the built-in task of
            ``config.train.task``), e.g. an :class:`~energetic_wgpu.tasks.ArrayDataset`.
        out_dir: where metrics, summary, plot and checkpoint go (default: ``train.out_dir``
            or ``runs/<timestamp>``); None and ``write_files=False`` write nothing.
        progress: show a tqdm progress bar (default: True).
        echo: prints the log lines (default: ``tqdm.write``); pass ``lambda s: None`` to silence.

    Attributes:
        graph, router, optimizer, data, backend, step (completed steps), collector.
    """

    def __init__(
        self,
        config: Config,
        *,
        backend: Backend | str | None = None,
        data: DataSource | None = None,
        out_dir: str | Path | None = None,
        progress: bool = True,
        echo: Callable[[str], None] | None = None,
        write_files: bool = True,
    ) -> None:
        if not isinstance(config, Config):
            raise InvalidArgumentError(f"config must be an energetic_wgpu.config.Config, got {type(config).__name__}")
        self.config = config
        self.backend = make_backend(config) if backend is None else get_backend(backend)
        self.graph = build_lattice(config.graph.to_graph_config())
        r = config.router
        params = RouterParams.init(
            self.graph, dim=r.dim, tau=r.tau, alpha=r.alpha, top_k=r.top_k, seed=config.train.seed
        )
        self.router = Router(self.graph, params, self.backend)
        o = config.optimizer
        self.optimizer = AdamW(
            self.router,
            lr=o.lr,
            betas=o.betas,
            eps=o.eps,
            weight_decay=o.weight_decay,
            max_grad_norm=o.max_grad_norm,
            schedule=make_optimizer_schedule(config),
        )
        self.data: DataSource = data if data is not None else make_task(config, self.graph, self.backend)
        self.step = 0
        self.resumed_from: int | None = None
        self.write_files = write_files
        if out_dir is None and write_files:
            out_dir = config.train.out_dir or default_out_dir()
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.progress = progress
        self._echo = echo
        self.collector = MetricsCollector()
        self.last_result: Any = None

    # ----------------------------------------------------------------- output
    def echo(self, text: str) -> None:
        if self._echo is not None:
            self._echo(text)
        elif self.progress:
            from tqdm import tqdm

            tqdm.write(text)

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoint.npz"

    # ------------------------------------------------------------- checkpoints
    def save(self, path: str | Path | None = None) -> Path:
        """Write a checkpoint of the current state (default: ``out_dir/checkpoint.npz``)."""
        target = Path(path) if path is not None else self.checkpoint_path
        if target is None:
            raise InvalidArgumentError("no checkpoint path: pass path= or give the trainer an out_dir")
        o = self.optimizer
        opt_state = o.state()
        opt_state.update(
            lr=o.lr, betas=list(o.betas), eps=o.eps, weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm,
            schedule=repr(o.schedule),
        )
        from . import __version__

        return save_checkpoint(
            target,
            step=self.step,
            params=self.router.params(),
            optimizer_state=opt_state,
            graph=self.graph,
            data_state=self.data.state(),
            config=self.config.to_dict(),
            extra={"backend": self.backend.describe(), "library_version": __version__, **self._checkpoint_extra()},
        )

    def _checkpoint_extra(self) -> dict[str, Any]:
        """More JSON fields for the checkpoint header (a data-parallel trainer records its world)."""
        return {}

    def resume(self, source: str | Path | Checkpoint) -> int:
        """Restore a checkpoint (a file, a run folder holding ``checkpoint.npz`` or a loaded
        :class:`Checkpoint`); returns its step. Raises CheckpointError if it is missing,
        corrupt, of another graph or of an unsupported version."""
        if isinstance(source, Checkpoint):
            ckpt = source
            if ckpt.graph_fingerprint != self.graph.fingerprint:
                raise CheckpointError("the checkpoint was written for another graph than this trainer's")
        else:
            path = find_checkpoint(source)
            if path is None:
                raise CheckpointError(f"no checkpoint at {str(source)!r} (expected a file or a folder with checkpoint.npz)")
            ckpt = load_checkpoint(path, self.graph)
        if ckpt.params.dim != self.router.dim:
            raise CheckpointError(
                f"the checkpoint has router dim {ckpt.params.dim}, the config says router.dim = {self.router.dim}"
            )
        self.router.set_params(ckpt.params)
        self.optimizer.load_state(ckpt.optimizer)
        self.data.load_state(ckpt.data_state)
        self.step = ckpt.step
        self.resumed_from = ckpt.step
        return ckpt.step

    # -------------------------------------------------------------------- loop
    def _train_step(self, step: int, batch: Any, stop_requested: bool) -> Any:
        """One optimizer step on ``batch`` (step number ``step``); returns the step's result
        (``loss``, ``grad_norm``, ``metrics``). A data-parallel trainer combines the gradients
        of every rank here and votes ``stop_requested`` to the others."""
        tr, r = self.config.train, self.config.router
        return self.router.train_step(
            batch.energies, batch.target, self.optimizer, loss=tr.loss, mask=batch.mask,
            steps=r.steps, retain_sinks=r.retain_sinks, entropy_lambda=tr.entropy_lambda,
        )

    def _stop_now(self, result: Any, requested: bool) -> bool:
        """Whether to stop (checkpoint and return) after the step of ``result``: when an
        interrupt was requested (data-parallel: when any rank requested one)."""
        return requested

    def run(self, steps: int | None = None) -> RunSummary:
        """Train until ``steps`` completed steps (default ``config.train.steps``) and return
        the run summary. Writes into ``out_dir``: metrics.jsonl (events), metrics.csv,
        metrics.json, summary.json, metrics.png (with matplotlib), config.yaml, checkpoint.npz."""
        from tqdm import tqdm

        cfg, tr = self.config, self.config.train
        total = tr.steps if steps is None else int(steps)
        out = self.out_dir if self.write_files else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        events = EventLog(
            None if out is None else out / "metrics.jsonl",
            truncate_after_step=self.step if self.resumed_from is not None else None,
        )
        if self.resumed_from is not None and out is not None and not self.collector.records:
            self.collector.load_records(MetricsCollector.read_events(out / "metrics.jsonl", self.step))
        self.collector.events = events
        g = self.graph
        events.emit(
            "train.start", self.step, backend=self.backend.describe(), num_nodes=g.num_nodes,
            num_edges=g.num_edges, total_steps=total, resumed=self.resumed_from is not None,
        )
        self.echo(
            f"training on {self.backend.describe()}: {g.num_nodes:,} nodes, {g.num_edges:,} edges, "
            f"batch {tr.batch_size}, steps {self.step + 1}..{total}" + (f" -> {out}" if out is not None else "")
        )
        start_step = self.step
        interrupted = False
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True, leave=True)
        t0 = time.perf_counter()
        in_step = False
        try:
            with _DeferredInterrupt(lambda s: bar.write(s)) as intr:
                while self.step < total:
                    step = self.step + 1
                    batch = self.data.batch(step)
                    in_step = True
                    res = self._train_step(step, batch, intr.requested)
                    in_step = False
                    self.step = step
                    self.last_result = res
                    if step % tr.log_every == 0 or step == total or step == 1:
                        row = self.collector.record(
                            step, res.metrics, res.loss, res.grad_norm, self.optimizer.lr_at(step)
                        )
                        bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
                        self.echo(
                            f"step {step:5d}/{total}  loss {row['loss']:.6g}  grad_norm {row['grad_norm']:.4g}  "
                            f"lr {row['lr']:.3g}  entropy {row['avg_entropy']:.4f}  energy {row['total_energy']:.1f}"
                        )
                    bar.update(1)
                    if out is not None and tr.checkpoint_every and step % tr.checkpoint_every == 0 and step < total:
                        path = self.save()
                        events.emit("train.checkpoint", step, path=str(path))
                    if self._stop_now(res, intr.requested):
                        interrupted = True
                        break
        except KeyboardInterrupt:
            interrupted = True
            if in_step:
                # cut inside a step: parameters may be half-updated; keep the last checkpoint
                bar.close()
                events.emit("train.interrupted", self.step, saved=False)
                events.close()
                self.echo(f"interrupted inside step {self.step + 1}; the last checkpoint on disk is kept")
                raise
        finally:
            bar.close()
        self.backend.synchronize()
        wall = time.perf_counter() - t0
        done = self.step - start_step
        files: dict[str, str] = {}
        if out is not None:
            path = self.save()
            files["checkpoint"] = str(path)
            events.emit("train.checkpoint", self.step, path=str(path))
            if interrupted:
                events.emit("train.interrupted", self.step, saved=True)
                self.echo(
                    f"interrupted at step {self.step}: checkpoint saved to {path}; "
                    f"continue with: energetic-wgpu train --resume {out}"
                )
            files["metrics_csv"] = str(self.collector.export_csv(out / "metrics.csv"))
            files["metrics_json"] = str(self.collector.export_json(out / "metrics.json"))
            files["events"] = str(out / "metrics.jsonl")
            files["config"] = str(out / "config.yaml")
            png = plot_metrics(self.collector.records, out / "metrics.png")
            if png is None:
                self.echo("note: matplotlib is not installed, skipping metrics.png (pip install 'energetic_wgpu[plot]')")
            else:
                files["plot"] = str(png)
            files["summary"] = str(out / "summary.json")
        summary = RunSummary.build(
            self.collector.records,
            steps=self.step,
            steps_per_second=done / wall if wall > 0 else 0.0,
            wall_seconds=wall,
            backend=self.backend.describe(),
            layers=cfg.graph.layers,
            nodes_per_layer=cfg.graph.nodes_per_layer,
            num_nodes=g.num_nodes,
            num_edges=g.num_edges,
            interrupted=interrupted,
            resumed_from=self.resumed_from,
            out_dir=None if out is None else str(out),
            files=files,
        )
        events.emit("train.end", self.step, interrupted=interrupted, steps_per_second=summary.steps_per_second)
        events.close()
        if out is not None:
            summary.write(out / "summary.json")
        return summary
