"""Training metrics: a collector, a JSON-lines event log, CSV/JSON export, a run summary
and an optional plot (:func:`~energetic_wgpu.plots.plot_metrics`, re-exported here).

Events (one JSON object per line of ``metrics.jsonl``)::

    {"event": "router.forward",  "timestamp": ..., "step": 10, "total_energy": ..., "active_nodes": ...,
     "active_edges": ..., "avg_entropy": ..., "max_edge_flow": ...}
    {"event": "router.backward", "timestamp": ..., "step": 10, "loss": ..., "grad_norm": ..., "lr": ...}
    {"event": "router.validation", "timestamp": ..., "step": 10, "val_loss": ...}   (runs with a held-out set)

plus ``train.start``, ``train.checkpoint``, ``train.interrupted`` and ``train.end``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable

from .plots import plot_metrics

__all__ = [
    "FIELDS", "FORWARD_FIELDS", "BACKWARD_FIELDS", "VALIDATION_FIELDS", "MetricsCollector", "EventLog", "RunSummary",
    "plot_metrics",
]

log = logging.getLogger("energetic_wgpu")

#: fields of the router.forward event
FORWARD_FIELDS = ("total_energy", "active_nodes", "active_edges", "avg_entropy", "max_edge_flow")
#: fields of the router.backward event
BACKWARD_FIELDS = ("loss", "grad_norm", "lr")
#: fields of the router.validation event (None in records of runs without a held-out set)
VALIDATION_FIELDS = ("val_loss",)
#: columns of one metrics record
FIELDS = ("step", *FORWARD_FIELDS, *BACKWARD_FIELDS, *VALIDATION_FIELDS)
_REQUIRED = ("step", *FORWARD_FIELDS, *BACKWARD_FIELDS)


class EventLog:
    """Append-only JSON-lines event log (``path`` None: events are dropped)."""

    def __init__(self, path: str | Path | None, *, truncate_after_step: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._f: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if truncate_after_step is not None and self.path.exists():
                self._truncate(truncate_after_step)
            self._f = self.path.open("a", encoding="utf-8")

    def _truncate(self, step: int) -> None:
        """Drop events of steps after ``step`` (a resumed run logs them again)."""
        assert self.path is not None
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if ev.get("step", 0) <= step and ev.get("event") != "train.end":
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")

    def emit(self, event: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "timestamp": round(time.time(), 6), "step": step, **fields}
        if self._f is not None:
            self._f.write(json.dumps(record, default=_json_default) + "\n")
            self._f.flush()
        return record

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


class MetricsCollector:
    """Records one row of :data:`FIELDS` per logged step and emits the matching events."""

    def __init__(self, events: EventLog | None = None) -> None:
        self.records: list[dict[str, float]] = []
        self.events = events or EventLog(None)

    def record(
        self, step: int, metrics: dict[str, float], loss: float, grad_norm: float, lr: float,
        val_loss: float | None = None,
    ) -> dict[str, Any]:
        """Record the step's forward metrics, loss/grad_norm/lr and the held-out ``val_loss``
        (None: no held-out set); emits router.forward, router.backward and, with a
        ``val_loss``, router.validation."""
        fwd = {k: float(metrics[k]) for k in FORWARD_FIELDS}
        bwd = {"loss": float(loss), "grad_norm": float(grad_norm), "lr": float(lr)}
        self.events.emit("router.forward", step, **fwd)
        self.events.emit("router.backward", step, **bwd)
        val = None if val_loss is None else float(val_loss)
        if val is not None:
            self.events.emit("router.validation", step, val_loss=val)
        row = {"step": int(step), **fwd, **bwd, "val_loss": val}
        self.records.append(row)
        return row

    def latest(self) -> dict[str, Any] | None:
        return self.records[-1] if self.records else None

    def load_records(self, rows: Iterable[dict[str, Any]]) -> None:
        """Prepend earlier rows (a resumed run)."""
        self.records[:0] = [dict(r) for r in rows]

    @staticmethod
    def read_events(path: str | Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
        """Rebuild records from a metrics.jsonl (router.forward + router.backward pairs, and
        router.validation where present)."""
        rows: dict[int, dict[str, Any]] = {}
        p = Path(path)
        if not p.exists():
            return []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("event") not in ("router.forward", "router.backward", "router.validation"):
                continue
            step = ev.get("step")
            if step is None or (up_to_step is not None and step > up_to_step):
                continue
            row = rows.setdefault(step, {"step": step, "val_loss": None})
            for k in FIELDS[1:]:
                if k in ev:
                    row[k] = ev[k]
        return [rows[s] for s in sorted(rows) if all(k in rows[s] for k in _REQUIRED)]

    def export_csv(self, path: str | Path) -> Path:
        p = Path(path)
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(FIELDS))
            w.writeheader()
            for r in self.records:
                w.writerow({k: r.get(k) for k in FIELDS})
        return p

    def export_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.records, indent=1), encoding="utf-8")
        return p


@dataclass
class RunSummary:
    """What a run did: steps, final and best loss (and val_loss), speed, backend, graph size, final metrics."""

    steps: int
    final_loss: float | None
    best_loss: float | None
    best_step: int | None
    steps_per_second: float
    wall_seconds: float
    backend: str
    layers: int | None
    nodes_per_layer: int | None
    num_nodes: int
    num_edges: int
    total_energy: float | None = None
    active_nodes: float | None = None
    active_edges: float | None = None
    max_edge_flow: float | None = None
    avg_entropy: float | None = None
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    best_val_step: int | None = None
    interrupted: bool = False
    resumed_from: int | None = None
    out_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, records: list[dict[str, Any]], **kw: Any) -> "RunSummary":
        losses = [(r["loss"], r["step"]) for r in records if math.isfinite(r["loss"])]
        best = min(losses) if losses else (None, None)
        last = records[-1] if records else {}
        vals = [(r["val_loss"], r["step"]) for r in records
                if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
        best_val = min(vals) if vals else (None, None)
        return cls(
            final_loss=last.get("loss"),
            best_loss=best[0],
            best_step=best[1],
            final_val_loss=last.get("val_loss"),
            best_val_loss=best_val[0],
            best_val_step=best_val[1],
            **{k: last.get(k) for k in FORWARD_FIELDS},
            **kw,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return p
