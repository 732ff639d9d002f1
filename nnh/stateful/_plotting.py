"""Loss and metric plots. Built on matplotlib's object API with the Agg canvas, so they work
without a display and never touch pyplot's global state."""

from __future__ import annotations

import math
import os
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def history_figure(
    title: str,
    ylabel: str,
    series: dict[str, Sequence[float]],
    log_y_scale: bool = False,
) -> Figure:
    """One line per non-empty series against the 1-based epoch; NaN entries (epochs without
    validation) are left out of their line."""
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, values in series.items():
        points = [(i + 1, v) for i, v in enumerate(values) if not math.isnan(v)]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log_y_scale:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
