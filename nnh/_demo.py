"""`python -m nnh demo`: train a small classifier on a synthetic dataset, sample a 2-D energy
model with MALA, and train, sample and evaluate the likelihood of a 2-D score-based model, on
CPU, in well under a minute."""

from __future__ import annotations

import argparse
import math
import os
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from nnh.func.score import denoising_score_matching
from nnh.func.sde import VPSDE
from nnh.stateful.handler import NNHandler
from nnh.stateful.mcmc import MALA, DoubleWellModel, plot_samples_vs_density, plot_trajectory


class SpiralClassifier(nn.Module):
    """An MLP for 2-D points: 2 -> hidden -> hidden -> n_classes."""

    def __init__(self, hidden: int = 64, n_classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def accuracy(output: Tensor, targets: Tensor) -> Tensor:
    """Fraction of correct arg-max predictions (a 0-d tensor: no host sync per batch)."""
    return (output.argmax(dim=-1) == targets).float().mean()


def spirals(n_per_class: int, n_classes: int = 3, noise: float = 0.15, seed: int = 0) -> TensorDataset:
    """Interleaved 2-D spirals, one arm per class."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(n_classes):
        r = torch.linspace(0.1, 1.0, n_per_class)
        theta = 4.0 * r + 2 * math.pi * c / n_classes + noise * torch.randn(n_per_class, generator=g)
        xs.append(torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1))
        ys.append(torch.full((n_per_class,), c, dtype=torch.long))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def run_demo(out: str = "nnh-demo", epochs: int = 30, device: str = "cpu", progress_bar: bool = True) -> dict[str, float]:
    """Train, then write `loss.png`, `metric_accuracy.png` and `checkpoint.pth` into `out`."""
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)  # the model's initial weights
    handler = NNHandler(SpiralClassifier, device=device, hidden=64, n_classes=3)
    handler.seed = 0
    handler.set_optimizer(torch.optim.AdamW, lr=3e-3, weight_decay=1e-4)
    handler.set_scheduler(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)
    handler.set_loss_fn(nn.functional.cross_entropy)
    handler.set_train_loader(spirals(600, seed=0), batch_size=64, shuffle=True)
    handler.set_val_loader(spirals(200, seed=1), batch_size=256)
    handler.add_metric("accuracy", accuracy)
    handler.train(epochs, ema_decay=0.99, progress_bar=progress_bar)
    handler.plot_losses(save_path=os.path.join(out, "loss.png"))
    handler.plot_metrics(save_path_prefix=os.path.join(out, "metric"))
    handler.save(os.path.join(out, "checkpoint.pth"))
    return {
        "train_loss": handler.train_losses[-1], "val_loss": handler.val_losses[-1],
        "train_accuracy": handler.train_metrics_history["accuracy"][-1],
        "val_accuracy": handler.val_metrics_history["accuracy"][-1],
    }


def run_mcmc_demo(out: str = "nnh-demo", device: str = "cpu", seed: int = 0) -> dict[str, float]:
    """MALA on the 2-D double well: writes `mcmc_trajectory.png` (chains on the energy
    contour) and `mcmc_samples.png` (samples against the model density) into `out`."""
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    model = DoubleWellModel(barrier_height=2.0, b=1.0)
    sampler = MALA(model, step_size=0.05, device=device)
    x0 = 0.3 * torch.randn(1000, 2, device=device)
    trajectory = sampler.sample(x=x0[:8], n_steps=200, return_trajectory=True)
    samples, diagnostics = sampler.sample(x=x0, n_steps=400, return_diagnostics=True)
    plot_trajectory(model, trajectory, save_path=os.path.join(out, "mcmc_trajectory.png"))
    plot_samples_vs_density(model, samples, save_path=os.path.join(out, "mcmc_samples.png"))
    return {
        "mcmc_mean_abs_x": float(samples.abs().mean()),
        "mcmc_acceptance": float(torch.as_tensor(diagnostics["acceptance_rate"])[-1]),
    }


class ScoreMLP(nn.Module):
    """A score network for 2-D points: net(t, x) = sigma(t) * score, from x and sin/cos
    features of t at `n_freq` frequencies from 1 to 200 (geometric), through `depth` hidden
    SiLU layers of width `hidden`."""

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, n_freq: int = 8) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(200.0), n_freq)))
        layers: list[nn.Module] = [nn.Linear(dim + 2 * n_freq, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        phase = t[:, None] * self.freqs
        return self.net(torch.cat([x, phase.sin(), phase.cos()], dim=-1))


def gaussian_ring(n: int, k: int = 6, radius: float = 2.0, std: float = 0.2, seed: int = 0) -> Tensor:
    """`n` points from k equal Gaussians N(c_j, std^2 I) with centres evenly on a circle."""
    g = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.randint(0, k, (n,), generator=g) / k
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1) + std * torch.randn(n, 2, generator=g)


def gaussian_ring_log_density(x: Tensor, k: int = 6, radius: float = 2.0, std: float = 0.2) -> Tensor:
    """The exact log-density of `gaussian_ring`'s distribution at x (B, 2)."""
    angle = 2 * math.pi * torch.arange(k, dtype=x.dtype) / k
    centres = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    sq = ((x[:, None, :] - centres) ** 2).sum(-1)
    return torch.logsumexp(-sq / (2 * std ** 2), dim=1) - math.log(k) - math.log(2 * math.pi * std ** 2)


def run_score_demo(out: str = "nnh-demo", device: str = "cpu", epochs: int = 80, seed: int = 0) -> dict[str, float]:
    """Train a score model (VP SDE, denoising score matching) on a ring of six Gaussians, then
    write `score_samples.png` (data against reverse-SDE samples) and
    `score_log_likelihood.png` (contours of the model's log-density, from the
    probability-flow ODE, beside the exact one) into `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    handler = NNHandler(ScoreMLP, device=device)
    handler.set_sde(VPSDE)
    handler.set_optimizer(torch.optim.Adam, lr=3e-3)
    handler.set_scheduler(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)
    handler.set_loss_fn(denoising_score_matching)
    handler.set_train_loader(TensorDataset(gaussian_ring(8192, seed=seed)), batch_size=512, shuffle=True)
    handler.train(epochs, validate_every=0, ema_decay=0.995, progress_bar=False)
    data = gaussian_ring(2000, seed=seed + 1).to(device)
    samples = handler.sample((2000, 2), 300, bar=False).cpu()
    grid = torch.linspace(-3.0, 3.0, 40)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    grid_ll = handler.log_likelihood(points.to(device), ode_steps=50, method="Heun", n_cotangent_vectors=4).cpu()
    data_ll = handler.log_likelihood(data[:500], ode_steps=50, method="Heun", n_cotangent_vectors=4).cpu()

    data = data.cpu()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(data[:, 0], data[:, 1], s=3, alpha=0.5, label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, label="samples\n(reverse SDE,\n300 steps)")
    ax.set_aspect("equal")
    ax.legend(loc="center", fontsize=8, markerscale=3)
    ax.set_title("Score-based model: data and samples")
    fig.savefig(os.path.join(out, "score_samples.png"), dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    levels = torch.linspace(-12.0, 2.0, 15).tolist()
    for ax, values, title in ((axes[0], grid_ll, "model log p(x), probability-flow ODE"),
                              (axes[1], gaussian_ring_log_density(points), "exact log p(x)")):
        filled = ax.contourf(gx, gy, values.reshape(gx.shape).clamp(min=-12.0), levels=levels)
        ax.set_aspect("equal")
        ax.set_title(title)
    fig.colorbar(filled, ax=axes)
    fig.savefig(os.path.join(out, "score_log_likelihood.png"), dpi=100)
    plt.close(fig)
    radius = samples.norm(dim=1)
    return {
        "score_sample_radius_mean": float(radius.mean()),
        "score_sample_radius_std": float(radius.std()),
        "score_data_log_likelihood": float(data_ll.mean()),
        "score_exact_log_likelihood": float(gaussian_ring_log_density(data[:500]).mean()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnh", description="nnh command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a classifier, sample with MALA, train a score-based model (CPU, under a minute)")
    demo.add_argument("--out", default="nnh-demo", help="output folder (default: ./nnh-demo)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    demo.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs={args.epochs} must be at least 1")
    # The demo's batches are small: on a busy 2-core machine a second intra-op thread makes the
    # classifier's training take 39 s instead of 2.8 s (OpenMP waits; benchmarks/RESULTS.md).
    torch.set_num_threads(1)
    results = run_demo(args.out, args.epochs, args.device)
    results.update(run_mcmc_demo(args.out, args.device))
    results.update(run_score_demo(args.out, args.device))
    for key, value in results.items():
        print(f"{key}: {value:.4f}")
    written = ["loss.png", "metric_accuracy.png", "checkpoint.pth", "mcmc_trajectory.png", "mcmc_samples.png",
               "score_samples.png", "score_log_likelihood.png"]
    print("wrote " + ", ".join(os.path.join(args.out, name) for name in written))
    return 0
