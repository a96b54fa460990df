"""The training plot (``metrics.png``).

Drawn on a :class:`matplotlib.figure.Figure` rendered by the Agg canvas: no pyplot, so the
caller's global matplotlib backend and pyplot figure list are never touched. matplotlib is
an optional extra (``pip install 'energetic_wgpu[plot]'``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["metrics_figure", "plot_metrics", "plot_title", "PANELS"]

log = logging.getLogger("energetic_wgpu")

#: (record keys, y label, log scale when every value is > 0) of each panel, top to bottom
PANELS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("loss", "val_loss"), "loss", True),
    (("lr",), "learning rate", False),
    (("grad_norm",), "grad norm", True),
    (("avg_entropy",), "entropy", False),
    (("total_energy",), "energy", False),
)
_LABELS = {"loss": "train", "val_loss": "val"}


def plot_title(backend: str, num_nodes: int, num_edges: int, hyper: dict[str, Any] | None = None) -> str:
    """``"<backend> | N = 10,240, E = 90,112 | dim 16, top_k 4, ..."``: the plot's title."""
    title = f"{backend} | N = {num_nodes:,}, E = {num_edges:,}"
    if hyper:
        title += "\n" + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in hyper.items())
    return title


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], float(r[key])) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def metrics_figure(records: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    """A :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot) with one panel per entry of
    :data:`PANELS`: loss (train and, where logged, val), learning rate, gradient norm, entropy
    and energy over steps.

    Args:
        records: metrics rows (dicts with step and the keys of :data:`PANELS`; missing or
            None values are left out).
        title: the figure title (see :func:`plot_title`); default "energetic_wgpu training".

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib  # noqa: F401  (first: a missing or blocked package fails here)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 11))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    for ax, (keys, label, ylog) in zip(axes, PANELS):
        values: list[float] = []
        for key in keys:
            steps, ys = _series(records, key)
            if steps:
                ax.plot(steps, ys, marker=".", label=_LABELS.get(key, key))
                values += ys
        if ylog and values and all(math.isfinite(v) and v > 0 for v in values):
            ax.set_yscale("log")
        if len(ax.get_lines()) > 1:
            ax.legend(loc="upper right")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.suptitle(title or "energetic_wgpu training", fontsize=10)
    fig.tight_layout()
    return fig


def plot_metrics(records: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path | None:
    """Write :func:`metrics_figure` of ``records`` to the PNG ``path``.

    Returns:
        ``path``, or None when matplotlib is not installed (one logged note) or there is no record.
    """
    if not records:
        return None
    try:
        fig = metrics_figure(records, title)
    except ImportError:
        log.info("matplotlib is not installed: skipping the metrics plot (pip install 'energetic_wgpu[plot]')")
        return None
    p = Path(path)
    fig.savefig(p, dpi=100)
    return p
