"""The training loop: batch → forward → loss → backward → AdamW → metrics every N steps
→ checkpoint every M steps.

Each step is one :meth:`Router.train_step`; on a GPU backend nothing is read back except
every ``train.log_every`` steps (loss, gradient norm, forward metrics, skipped-step
counters) and at checkpoints. Ctrl-C (SIGINT) or SIGTERM finishes the current step,
writes a checkpoint and returns cleanly (:attr:`Trainer.interrupted_by` says which);
:meth:`Trainer.resume` continues bit-identically to an uninterrupted run on the same
backend (parameters, optimizer state, step, data state and learning-rate schedule are all
restored; see :mod:`energetic_wgpu.resume` for the values a resumed run may change).
While it runs, the output folder is locked (:class:`~energetic_wgpu.rundir.RunLock`).

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
from .checkpoint import Checkpoint, clean_stale_temp_files, find_checkpoint, load_checkpoint, save_checkpoint
from .config import Config
from .errors import CheckpointError, ConfigError, InvalidArgumentError, TrainingError
from .graph import Graph, build_lattice
from .heldout import HeldOut
from .metrics import EventLog, MetricsCollector, RunSummary, plot_metrics
from .optim import AdamW, Schedule
from .plots import plot_title
from .resume import config_changes, describe_change, resumed_schedule, resolve_schedule, schedule_from_spec
from .router import Router, RouterParams
from .rundir import RunLock
from .sizing import check_train_fits
from .tasks import DataSource, make_data

__all__ = ["Trainer", "make_backend", "make_graph", "make_optimizer_schedule", "default_out_dir"]

log = logging.getLogger("energetic_wgpu")


def make_backend(config: Config) -> Backend:
    """The backend of ``config.backend`` (the adapter option only where it means something;
    an adapter with ``name: auto`` means wgpu: naming an adapter never falls back to NumPy).

    Raises:
        ConfigError: ``backend.name`` is auto and ``$ENERGETIC_BACKEND`` names no backend.
        BackendUnavailable: the backend cannot start here.
    """
    name, adapter = config.backend.name, config.backend.adapter
    if name == "auto" and adapter is not None:
        name = "wgpu"
    try:
        if name == "numpy" or adapter is None:
            return get_backend(name)
        return get_backend(name, adapter=adapter)
    except InvalidArgumentError as exc:  # only a bad $ENERGETIC_BACKEND gets here (names are validated)
        raise ConfigError(str(exc)) from None


def make_graph(config: Config) -> Graph:
    """The graph of ``config.graph``: the file ``graph.path`` (see
    :func:`energetic_wgpu.userdata.load_graph`) or the lattice of the other keys."""
    if config.graph.path is not None:
        from .userdata import load_graph

        return load_graph(config.graph.path)
    return build_lattice(config.graph.to_graph_config())


def make_optimizer_schedule(config: Config) -> Schedule:
    """The learning-rate schedule of ``config.optimizer.schedule`` (``total_steps`` null: ``train.steps``)."""
    return schedule_from_spec(resolve_schedule(config))


def default_out_dir() -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` under the current directory."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


class _DeferredInterrupt:
    """While active (main thread only), the first SIGINT (Ctrl-C) or SIGTERM sets a flag
    that the loop checks between steps, so a step is never cut in half; a second one
    interrupts at once (KeyboardInterrupt carrying ``signum``)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.requested = False
        self.signum: int | None = None
        self._notify = notify
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            exc = KeyboardInterrupt()
            exc.signum = signum  # type: ignore[attr-defined]
            raise exc
        self.requested = True
        self.signum = signum
        self._notify(
            f"{signal.Signals(signum).name}: finishing the current step, then saving a checkpoint "
            "(send it again to abort)"
        )

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                try:
                    self._old[sig] = signal.signal(sig, self._handler)
                except ValueError:  # not allowed here (embedded interpreter)
                    pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class Trainer:
    """Train a router as ``config`` describes.

    Args:
        config: the run configuration.
        backend: a backend (default: from ``config.backend``).
        graph: the routing graph (default: from ``config.graph``, see :func:`make_graph`).
        data: a :class:`~energetic_wgpu.tasks.DataSource` (default: the task of
            ``config.train.task``, see :func:`energetic_wgpu.tasks.make_data`), e.g. an
            :class:`~energetic_wgpu.tasks.ArrayDataset`.
        validation: a :class:`~energetic_wgpu.heldout.HeldOut` set whose ``val_loss`` is
            logged every ``train.log_every`` steps (default: the held-out rows of an "arrays"
            task when ``data`` is not given, else none).
        out_dir: where metrics, summary, plot and checkpoint go (default: ``train.out_dir``
            or ``runs/<timestamp>``); None and ``write_files=False`` write nothing.
        progress: show a tqdm progress bar (default: True).
        echo: prints the log lines (default: ``tqdm.write``); pass ``lambda s: None`` to silence.

    Attributes:
        graph, router, optimizer, data, validation, backend, step (completed steps), collector.
    """

    def __init__(
        self,
        config: Config,
        *,
        backend: Backend | str | None = None,
        graph: Graph | None = None,
        data: DataSource | None = None,
        validation: HeldOut | None = None,
        out_dir: str | Path | None = None,
        progress: bool = True,
        echo: Callable[[str], None] | None = None,
        write_files: bool = True,
    ) -> None:
        if not isinstance(config, Config):
            raise InvalidArgumentError(f"config must be an energetic_wgpu.config.Config, got {type(config).__name__}")
        self.config = config
        if graph is None and config.graph.path is None:  # an impossible lattice is refused before it is built
            check_train_fits(config)
        self.backend = make_backend(config) if backend is None else get_backend(backend)
        if graph is not None and not isinstance(graph, Graph):
            raise InvalidArgumentError(f"graph must be an energetic_wgpu.Graph or None, got {type(graph).__name__}")
        self.graph = make_graph(config) if graph is None else graph
        if graph is not None or config.graph.path is not None:  # a given graph: refused before any backend work
            check_train_fits(config, graph=self.graph)
        r = config.router
        params = RouterParams.init(
            self.graph, dim=r.dim, tau=r.tau, alpha=r.alpha, top_k=r.top_k, seed=config.train.seed
        )
        self.router = Router(self.graph, params, self.backend)
        o = config.optimizer
        #: the learning-rate schedule resolved at the start of the run (stored in checkpoints)
        self.schedule_spec = resolve_schedule(config)
        self.optimizer = AdamW(
            self.router,
            lr=o.lr,
            betas=o.betas,
            eps=o.eps,
            weight_decay=o.weight_decay,
            max_grad_norm=o.max_grad_norm,
            schedule=schedule_from_spec(self.schedule_spec),
        )
        if data is None:
            data, held = make_data(config, self.graph, self.backend)
            validation = held if validation is None else validation
        self.data: DataSource = data
        self.validation = validation
        log.debug(
            "graph %r (%s); data %s; held-out rows: %s", self.graph, config.graph.path or "lattice",
            type(data).__name__, "none" if validation is None else validation.num_samples,
        )
        self.step = 0
        self.resumed_from: int | None = None
        #: [(key, checkpoint value, new value)] applied by :meth:`resume`
        self.resume_changes: list[tuple[str, Any, Any]] = []
        #: "SIGINT" or "SIGTERM" when the last :meth:`run` stopped on a signal, else None
        self.interrupted_by: str | None = None
        self._skips_seen = 0
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
            schedule=dict(self.schedule_spec),
        )
        from . import __version__

        return save_checkpoint(  # written with 0o666 & ~umask, like the run's other outputs
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
        corrupt, of another graph or of an unsupported version.

        Parameters, optimizer moments, step and data state come from the checkpoint; the
        hyper-parameters (``router.tau``, ``alpha``, ``top_k``, ``steps``, ``retain_sinks``,
        ``optimizer.*``, ``train.*``) from this trainer's config. Each value that differs
        from the checkpoint's config is echoed once (``router.tau: 1.0 (checkpoint) -> 0.5``)
        and listed in :attr:`resume_changes`. The stored learning-rate schedule is kept
        unless the config changes one of its keys (:func:`energetic_wgpu.resume.resumed_schedule`)."""
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
        changes = config_changes(ckpt.config, self.config)
        spec = resumed_schedule(ckpt.optimizer.get("schedule"), changes, self.config)
        try:
            schedule = schedule_from_spec(spec)
        except (InvalidArgumentError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the checkpoint's optimizer.schedule is invalid: {exc}") from None
        r, p = self.config.router, ckpt.params
        self.router.set_params(RouterParams(p.q, p.k, p.bias, r.tau, r.alpha, r.top_k))
        self.optimizer.load_state(ckpt.optimizer)
        self.optimizer.schedule = schedule
        self.schedule_spec = spec
        try:
            self.data.load_state(ckpt.data_state)
        except (KeyError, TypeError, ValueError) as exc:  # a data_state of another source or damaged
            raise CheckpointError(
                f"the checkpoint's data_state does not fit this data source: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
        self.step = ckpt.step
        self.resumed_from = ckpt.step
        self.resume_changes = changes
        for change in changes:
            self.echo(describe_change(*change))
        return ckpt.step

    # ------------------------------------------------------------- evaluation
    def val_loss(self) -> float | None:
        """The objective on the held-out set with the current parameters (no update), or None
        without a held-out set."""
        if self.validation is None:
            return None
        tr, r = self.config.train, self.config.router
        return self.validation.evaluate(
            self.router, loss=tr.loss, steps=r.steps, retain_sinks=r.retain_sinks, entropy_lambda=tr.entropy_lambda
        )

    def plot_title(self) -> str:
        """The title of metrics.png: backend, graph size and the key hyper-parameters."""
        c = self.config
        hyper = {
            "dim": c.router.dim, "top_k": c.router.top_k, "tau": c.router.tau, "steps": c.router.steps,
            "lr": c.optimizer.lr, "batch": c.train.batch_size, "loss": c.train.loss,
        }
        if c.train.entropy_lambda:
            hyper["entropy_lambda"] = c.train.entropy_lambda
        return plot_title(self.backend.describe(), self.graph.num_nodes, self.graph.num_edges, hyper)

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
        metrics.json, summary.json, metrics.png (with matplotlib), config.yaml, checkpoint.npz.

        Raises:
            RunLockedError: another process is running into the same ``out_dir``.
            TrainingError: ``train.max_skipped_steps`` consecutive steps were skipped
                (non-finite loss or gradient norm); the parameters are left as they were.
        """
        out = self.out_dir if self.write_files else None
        if out is None:
            return self._run(steps, None)
        with RunLock(out):
            return self._run(steps, out)

    def _check_skipped(self, step: int, events: EventLog) -> None:
        """Log the steps skipped since the last check; raise TrainingError after
        ``train.max_skipped_steps`` in a row. One tiny readback (the optimizer's counters)."""
        consecutive, total = self.optimizer.skip_counts()
        new = total - self._skips_seen
        self._skips_seen = total
        if new > 0:
            events.emit("train.skipped", step, skipped=new, consecutive=consecutive, total=total)
            self.echo(
                f"warning: {new} step(s) up to step {step} skipped (non-finite loss or gradient norm; "
                f"parameters unchanged), {consecutive} in a row"
            )
        limit = self.config.train.max_skipped_steps
        if consecutive >= limit:
            events.emit("train.stopped", step, reason="skipped_steps", consecutive=consecutive)
            raise TrainingError(
                f"training stopped at step {step}: the last {consecutive} steps were skipped because the loss or "
                f"the gradient norm was not finite (train.max_skipped_steps = {limit}); the parameters are those "
                f"before step {step - consecutive + 1}. Check the data for inf/NaN, lower optimizer.lr or set "
                "optimizer.max_grad_norm"
            )

    def _run(self, steps: int | None, out: Path | None) -> RunSummary:
        from tqdm import tqdm

        cfg, tr = self.config, self.config.train
        total = tr.steps if steps is None else int(steps)
        self.interrupted_by = None
        if out is not None:
            clean_stale_temp_files(out)  # left by a process killed while saving (this run holds the lock)
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
            **({"changed": {k: [old, new] for k, old, new in self.resume_changes}} if self.resume_changes else {}),
        )
        self._skips_seen = self.optimizer.skip_counts()[1]
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
                        self._check_skipped(step, events)
                        row = self.collector.record(
                            step, res.metrics, res.loss, res.grad_norm, self.optimizer.lr_at(step),
                            val_loss=self.val_loss(),
                        )
                        bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
                        val = "" if row["val_loss"] is None else f"  val_loss {row['val_loss']:.6g}"
                        self.echo(
                            f"step {step:5d}/{total}  loss {row['loss']:.6g}{val}  grad_norm {row['grad_norm']:.4g}  "
                            f"lr {row['lr']:.3g}  entropy {row['avg_entropy']:.4f}  energy {row['total_energy']:.1f}"
                        )
                    bar.update(1)
                    if out is not None and tr.checkpoint_every and step % tr.checkpoint_every == 0 and step < total:
                        self._check_skipped(step, events)
                        path = self.save()
                        events.emit("train.checkpoint", step, path=str(path))
                    if self._stop_now(res, intr.requested):
                        interrupted = True
                        self.interrupted_by = signal.Signals(intr.signum or signal.SIGINT).name
                        break
        except TrainingError:
            events.close()
            raise
        except KeyboardInterrupt as exc:
            interrupted = True
            self.interrupted_by = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
            if in_step:
                # cut inside a step: parameters may be half-updated; keep the last checkpoint
                bar.close()
                events.emit("train.interrupted", self.step, saved=False, signal=self.interrupted_by)
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
                events.emit("train.interrupted", self.step, saved=True, signal=self.interrupted_by)
                self.echo(
                    f"interrupted ({self.interrupted_by}) at step {self.step}: checkpoint saved to {path}; "
                    f"continue with: energetic-wgpu train --resume {out}"
                )
            files["metrics_csv"] = str(self.collector.export_csv(out / "metrics.csv"))
            files["metrics_json"] = str(self.collector.export_json(out / "metrics.json"))
            files["events"] = str(out / "metrics.jsonl")
            files["config"] = str(out / "config.yaml")
            png = plot_metrics(self.collector.records, out / "metrics.png", title=self.plot_title())
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
            layers=g.layers,
            nodes_per_layer=None if g.layers is None else cfg.graph.nodes_per_layer,
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
