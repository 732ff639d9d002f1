"""`python -m nnh demo`: train a small classifier on a synthetic dataset, then sample a 2-D
energy model with MALA, on CPU, in seconds."""

from __future__ import annotations

import argparse
import math
import os
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnh", description="nnh command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small classifier on synthetic spirals (CPU, under a minute)")
    demo.add_argument("--out", default="nnh-demo", help="output folder (default: ./nnh-demo)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    demo.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs={args.epochs} must be at least 1")
    results = run_demo(args.out, args.epochs, args.device)
    results.update(run_mcmc_demo(args.out, args.device))
    for key, value in results.items():
        print(f"{key}: {value:.4f}")
    written = ["loss.png", "metric_accuracy.png", "checkpoint.pth", "mcmc_trajectory.png", "mcmc_samples.png"]
    print("wrote " + ", ".join(os.path.join(args.out, name) for name in written))
    return 0
