"""The trajectory and samples-against-density figures."""

import pytest
import torch
from matplotlib.figure import Figure

from nnh import DoubleWellModel, LangevinDynamics, plot_samples_vs_density, plot_trajectory


def test_plot_trajectory_writes_a_png(tmp_path):
    model = DoubleWellModel(barrier_height=2.0)
    traj = LangevinDynamics(model, step_size=0.01).sample(x=torch.randn(3, 2), n_steps=50, return_trajectory=True)
    path = tmp_path / "figs" / "trajectory.png"
    fig = plot_trajectory(model, traj, save_path=path)
    assert isinstance(fig, Figure) and path.stat().st_size > 10_000
    assert len(fig.axes) == 2  # the contour and its colour bar
    assert len(fig.axes[0].lines) == 3 * 3  # per chain: path, start, end
    one_chain = plot_trajectory(model, traj[0], bounds=(-2, 2, -2, 2))
    assert one_chain.axes[0].get_xlim() == (-2, 2)


def test_plot_samples_vs_density(tmp_path):
    model = DoubleWellModel()
    samples = LangevinDynamics(model, step_size=0.01).sample(x=torch.randn(2000, 2), n_steps=100)
    path = tmp_path / "density.png"
    fig = plot_samples_vs_density(model, samples, bounds=(-2.5, 2.5, -2.5, 2.5), save_path=path)
    assert isinstance(fig, Figure) and path.stat().st_size > 10_000
    assert len(fig.axes) == 3  # density, histogram, colour bar


def test_plots_need_two_dimensions():
    with pytest.raises(ValueError, match="event shape must be \\(2,\\)"):
        plot_trajectory(DoubleWellModel(), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="event shape must be \\(2,\\)"):
        plot_samples_vs_density(DoubleWellModel(), torch.zeros(5, 3))
