"""Importable models, samplers and callbacks for the checkpoint tests.

Checkpoints store classes and functions by import path, so whatever a test saves must be
importable again by `NNHandler.load` (and by the subprocesses the preemption and atomic-write
tests start). This module is imported as `tests._models`: the repository root is on
`sys.path` under `python -m pytest` (and the subprocess scripts put it there explicitly).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset


class MLP(nn.Module):
    """in_features -> hidden -> out_features with dropout (so resuming needs the RNG state)."""

    def __init__(self, in_features: int = 6, hidden: int = 16, out_features: int = 3, p: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Wide(nn.Module):
    """Same interface as `MLP` with other parameter names and shapes (for mismatch tests)."""

    def __init__(self, in_features: int = 6, out_features: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def classification_data(n: int = 96, in_features: int = 6, classes: int = 3, seed: int = 0) -> TensorDataset:
    """A fixed random classification set (its own generator: independent of the global RNG)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y)


class SlowDataset(torch.utils.data.Dataset):
    """`classification_data` that sleeps per item, so a signal lands in the middle of an epoch."""

    def __init__(self, n: int = 64, delay: float = 0.002) -> None:
        self.data = classification_data(n)
        self.delay = delay

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        import time

        time.sleep(self.delay)
        return self.data[i]


def scaled_cross_entropy(output: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return scale * nn.functional.cross_entropy(output, target)


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.argmax(-1) == target).float().mean()


class CountingCallback:
    """A callback with constructor arguments and state, restorable from a checkpoint.

    Like nnh's own callbacks it records its constructor arguments (`init_kwargs`) so a
    checkpoint can rebuild it, and its `state_dict` carries the epochs it has seen.
    """

    def __init__(self, tag: str = "a") -> None:
        self.init_kwargs = {"tag": tag}
        self.tag = tag
        self.epochs_seen = 0
        self.handler = None

    def on_train_begin(self, logs: dict) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.epochs_seen += 1

    def state_dict(self) -> dict:
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_seen = state["epochs_seen"]


class Activated(nn.Module):
    """A linear layer followed by `activation`, any callable (a lambda cannot be saved)."""

    def __init__(self, in_features: int = 6, out_features: int = 3, activation: Any = torch.tanh) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, out_features)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.lin(x))


class ToySDE:
    """A duck-typed SDE that is no nnh class: Brownian motion dx = scale dw, recording its
    constructor arguments by hand (`init_kwargs`), as an SDE of another package might."""

    def __init__(self, scale: float = 1.0, T: float = 1.0, epsilon: float = 1e-3) -> None:
        self.init_kwargs = {"scale": scale, "T": T, "epsilon": epsilon}
        self.scale, self.T, self.epsilon = scale, T, epsilon

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.as_tensor(t).sqrt()

    def marginal_prob(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.sigma(t).reshape(-1, *[1] * (x.dim() - 1))

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], *[1] * (x.dim() - 1)), self.scale, dtype=x.dtype, device=x.device)

    def prior(self, shape: tuple[int, ...]) -> torch.distributions.Distribution:
        loc = torch.zeros(shape)
        return torch.distributions.Independent(torch.distributions.Normal(loc, self.scale * self.T ** 0.5 + loc),
                                               len(shape))


# Samplers: one per `load` spelling that nnh accepts.
from nnh import NNHandler, Sampler  # noqa: E402


class ShiftSampler(Sampler):
    """`load(self, state_dict)` style. `model` is the handler's module; `transform` is any
    callable (often a lambda, which a checkpoint cannot store)."""

    def __init__(self, model: nn.Module, transform: Any, n_features: int = 6) -> None:
        self.model, self.transform, self.n_features = model, transform, n_features
        self.shift = torch.zeros(n_features)
        self.calls = 0

    def sample(self, N: int, device: Any = None, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        x = torch.zeros(N, self.n_features, device=device) + self.shift
        return self.model(self.transform(x))

    def save(self) -> dict:
        return {"shift": self.shift.clone(), "calls": self.calls}

    def load(self, state_dict: dict) -> None:
        self.shift = state_dict["shift"].clone()
        self.calls = state_dict["calls"]


class KwargsShiftSampler(ShiftSampler):
    """`load(self, **state_dict)` style, returning self."""

    def load(self, **state_dict: Any) -> "KwargsShiftSampler":  # type: ignore[override]
        self.shift = state_dict["shift"].clone()
        self.calls = state_dict["calls"]
        return self


def set_loaders(handler: NNHandler, n_train: int = 96, batch_size: int = 16) -> None:
    """A shuffling train loader and a validation loader (loaders are not in a checkpoint)."""
    handler.set_train_loader(classification_data(n_train), batch_size=batch_size, shuffle=True)
    handler.set_val_loader(classification_data(32, seed=1), batch_size=batch_size)


def build_handler(scheduler: str | None = "step", lr: float = 1e-2, seed: int = 0, **model_kwargs: Any) -> NNHandler:
    """An MLP handler with AdamW, a scheduler, cross-entropy, an accuracy metric and loaders.

    Seeded before the model is built, so two calls give the same initial weights.
    """
    torch.manual_seed(seed)
    handler = NNHandler(MLP, **model_kwargs)
    handler.set_optimizer(torch.optim.AdamW, lr=lr, weight_decay=0.01)
    if scheduler == "step":
        handler.set_scheduler(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.7)
    elif scheduler == "linear":  # warm-up: building it rescales the lr, which resuming must undo
        handler.set_scheduler(torch.optim.lr_scheduler.LinearLR, start_factor=0.1, total_iters=4)
    handler.set_loss_fn(nn.functional.cross_entropy)
    handler.add_metric("acc", accuracy)
    set_loaders(handler)
    return handler


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Environment of the test subprocesses: the repository importable, one thread as above.
CHILD_ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
