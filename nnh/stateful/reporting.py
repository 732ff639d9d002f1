"""A handler's plots and text summary, over its history.

The plots use matplotlib's object API with the Agg canvas, so they work without a display
and never touch pyplot's global state."""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nnh.stateful.parts import History


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


def plot_losses(history: History, log_y_scale: bool = False, save_path: str | None = None) -> Figure:
    """Training and validation loss per epoch; saved as PNG when `save_path` is given."""
    fig = history_figure("Loss", "loss", {"train": history.train_losses, "validation": history.val_losses}, log_y_scale)
    if save_path is not None:
        save_figure(fig, save_path)
    return fig


def plot_metrics(history: History, names: Sequence[str], log_y_scale: bool = False,
                 save_path_prefix: str | None = None) -> dict[str, Figure]:
    """One figure per metric (train and validation); with `save_path_prefix`, saved as
    `{prefix}_{name}.png`."""
    figs = {}
    for name in names:
        series = {"train": history.train_metrics.get(name, []), "validation": history.val_metrics.get(name, [])}
        figs[name] = history_figure(name, name, series, log_y_scale)
        if save_path_prefix is not None:
            save_figure(figs[name], f"{save_path_prefix}_{name}.png")
    return figs


def summary(handler: Any, show_model_structure: bool = False) -> str:
    """A summary of a handler's configuration and history (from its public properties)."""
    loss_fn = handler.loss_fn
    lines = [
        "NNHandler",
        f"  model: {type(handler.module).__name__} ({handler.count_parameters()} trainable parameters)",
        f"  model_type: {handler.model_type.value}   device: {handler.device}   seed: {handler.seed}",
        f"  optimizer: {type(handler.optimizer).__name__ if handler.optimizer else None}",
        f"  scheduler: {type(handler.scheduler).__name__ if handler.scheduler else None}",
        f"  loss_fn: {getattr(loss_fn, '__name__', type(loss_fn).__name__) if loss_fn else None}",
        f"  metrics: {list(handler.metrics)}   callbacks: {[type(c).__name__ for c in handler.callbacks]}",
        f"  epochs trained: {handler.epoch}",
    ]
    if handler.train_losses:
        lines.append(f"  last train loss: {handler.train_losses[-1]:.6g}   last val loss: {handler.val_losses[-1]:.6g}")
    if show_model_structure:
        lines.append(str(handler.module))
    return "\n".join(lines)
