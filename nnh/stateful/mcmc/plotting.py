r"""Figures for 2-D energy models: chains on an energy contour, and samples against the density.

Both build a `matplotlib.figure.Figure` directly (no pyplot, no display, no global state), return
it, and write a PNG when given ``save_path``. In a notebook the returned figure displays itself.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_samples_vs_density", "plot_trajectory"]

Bounds = Sequence[float]  # (x_min, x_max, y_min, y_max)


def _model_device(model: Callable[[Tensor], Tensor]) -> torch.device:
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def _energy_grid(model: Callable[[Tensor], Tensor], bounds: Bounds, resolution: int) -> tuple[np.ndarray, ...]:
    """U on a resolution x resolution grid, evaluated in one batched call."""
    xs = torch.linspace(bounds[0], bounds[1], resolution)
    ys = torch.linspace(bounds[2], bounds[3], resolution)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(_model_device(model))
    energy = model(points).reshape(resolution, resolution).float().cpu()
    return gx.numpy(), gy.numpy(), energy.numpy()


def _bounds_of(points: np.ndarray, pad: float = 0.15) -> tuple[float, float, float, float]:
    finite = points[np.isfinite(points).all(axis=1)]
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    span = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _check_2d(name: str, points: np.ndarray) -> None:
    if points.shape[-1] != 2:
        raise ValueError(f"{name}: the event shape must be (2,) for a 2-D plot, got last dimension {points.shape[-1]}.")


def _finish(fig: Figure, save_path: str | os.PathLike | None) -> Figure:
    if save_path is not None:
        folder = os.path.dirname(os.fspath(save_path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(save_path, dpi=120, bbox_inches="tight")
    return fig


def plot_trajectory(
    model: Callable[[Tensor], Tensor],
    trajectory: Tensor,
    *,
    bounds: Bounds | None = None,
    resolution: int = 150,
    max_chains: int = 8,
    levels: int = 40,
    title: str = "MCMC trajectories on the energy",
    save_path: str | os.PathLike | None = None,
) -> Figure:
    """Energy contour of a 2-D ``model`` with chains drawn on it.

    Args:
        trajectory: (n_chains, n_steps, 2) as returned by ``sample(..., return_trajectory=True)``,
            or one chain (n_steps, 2). The first ``max_chains`` chains are drawn, each with its
            start (circle) and end (star).
        bounds: (x_min, x_max, y_min, y_max); default: the chains' range, padded.
    Returns:
        The Figure; also written as PNG to ``save_path`` when given.
    """
    path = torch.as_tensor(trajectory).detach().float().cpu().numpy()
    if path.ndim == 2:
        path = path[None]
    if path.ndim != 3:
        raise ValueError(f"plot_trajectory: trajectory must be (n_chains, n_steps, 2) or (n_steps, 2), got {path.shape}.")
    _check_2d("plot_trajectory", path)
    path = path[:max_chains]
    bounds = tuple(bounds) if bounds is not None else _bounds_of(path.reshape(-1, 2))
    gx, gy, energy = _energy_grid(model, bounds, resolution)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    filled = ax.contourf(gx, gy, energy, levels=levels, cmap="viridis", alpha=0.85)
    fig.colorbar(filled, ax=ax, label="energy U(x)")
    colors = [f"C{i % 10}" for i in range(len(path))]
    for chain, color in zip(path, colors):
        ax.plot(chain[:, 0], chain[:, 1], "-", color=color, lw=0.8, alpha=0.9)
        ax.plot(chain[0, 0], chain[0, 1], "o", color="black", ms=5)
        ax.plot(chain[-1, 0], chain[-1, 1], "*", color=color, ms=11, mec="white")
    ax.set(xlim=bounds[:2], ylim=bounds[2:], xlabel="$x_1$", ylabel="$x_2$", title=title)
    return _finish(fig, save_path)


def plot_samples_vs_density(
    model: Callable[[Tensor], Tensor],
    samples: Tensor,
    *,
    bounds: Bounds | None = None,
    resolution: int = 150,
    bins: int = 60,
    title: str = "samples against the model density",
    save_path: str | os.PathLike | None = None,
) -> Figure:
    r"""Two panels on the same axes: the density :math:`e^{-U}/Z` of a 2-D ``model`` (Z by
    quadrature on the grid) and a normalised 2-D histogram of ``samples`` (n, 2), with the
    density's contours drawn over it.

    Returns:
        The Figure; also written as PNG to ``save_path`` when given.
    """
    points = torch.as_tensor(samples).detach().float().cpu().reshape(-1, torch.as_tensor(samples).shape[-1]).numpy()
    _check_2d("plot_samples_vs_density", points)
    bounds = tuple(bounds) if bounds is not None else _bounds_of(points, pad=0.05)
    gx, gy, energy = _energy_grid(model, bounds, resolution)
    log_density = -(energy - np.nanmin(energy))
    density = np.exp(log_density)
    cell = (bounds[1] - bounds[0]) * (bounds[3] - bounds[2]) / (resolution - 1) ** 2
    density /= density.sum() * cell
    fig = Figure(figsize=(12, 5))
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    vmax = float(density.max())
    shown = left.contourf(gx, gy, density, levels=40, cmap="magma", vmin=0.0, vmax=vmax)
    left.set(title="density exp(-U)/Z", xlabel="$x_1$", ylabel="$x_2$")
    right.hist2d(points[:, 0], points[:, 1], bins=bins, range=[bounds[:2], bounds[2:]], density=True,
                 cmap="magma", vmin=0.0, vmax=vmax)
    right.contour(gx, gy, density, levels=6, colors="white", linewidths=0.6, alpha=0.7)
    right.set(title=f"{len(points)} samples", xlabel="$x_1$")
    fig.colorbar(shown, ax=[left, right], label="density")
    fig.suptitle(title)
    return _finish(fig, save_path)
