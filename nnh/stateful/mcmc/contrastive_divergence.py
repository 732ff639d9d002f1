r"""`ContrastiveDivergence`: the maximum-likelihood gradient of an energy model with MCMC negatives."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from nnh.stateful.mcmc.base import BaseSampler

__all__ = ["ContrastiveDivergence"]


class ContrastiveDivergence(nn.Module):
    r"""Contrastive divergence loss for an energy model U_theta:

    .. math:: \mathcal L = \frac1B \sum_b U_\theta(x^+_b) - \frac1B \sum_b U_\theta(x^-_b)

    whose gradient estimates that of the negative log-likelihood, with x^+ the data and x^-
    negative samples from ``k_steps`` of ``sampler`` (no gradient flows through the chains).

    Chains start from the data batch (CD-k), or with ``persistent=True`` from a replay buffer of
    ``buffer_size`` slots (PCD): each call picks B distinct slots at random, restarts each of
    those chains from ``init_dist`` with probability ``new_sample_ratio``, runs the sampler and
    writes every chain back to its own slot. The buffer starts full of ``init_dist`` draws.

    Call forms:
        ``loss, negatives = cd(x)`` with data x (B, *event_shape); and ``cd(energies, x)``,
        the form `NNHandler` uses for a GENERATIVE model (``loss_fn(output, inputs)``): the
        handler's forward pass ``energies = model(x)`` is reused as U(x^+).

    Non-finite loss: ``on_nonfinite="raise"`` (default) raises FloatingPointError;
    ``"skip"`` warns and returns a zero loss whose gradient is exactly zero for every
    parameter, so ``backward()`` and ``optimizer.step()`` leave the update at zero gradient.
    The check reads one scalar per call (a host sync on an accelerator, once per training step).

    Args:
        model: the energy model (the sampler's model).
        sampler: an nnh MCMC sampler (e.g. `LangevinDynamics`).
        k_steps: sampler steps per call.
        persistent: keep chains across calls in the replay buffer.
        buffer_size: slots of the buffer (>= the batch size).
        new_sample_ratio: probability that a chain restarts from ``init_dist``.
        init_dist: None (standard normal), a ``torch.distributions.Distribution`` whose
            ``sample((n,))`` gives (n, *event_shape), or a callable ``n -> (n, *event_shape)``.
    """

    def __init__(
        self,
        model: nn.Module,
        sampler: BaseSampler,
        k_steps: int = 10,
        persistent: bool = False,
        buffer_size: int = 10000,
        new_sample_ratio: float = 0.05,
        init_dist: Any = None,
        *,
        on_nonfinite: Literal["raise", "skip"] = "raise",
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"ContrastiveDivergence: model must be an energy nn.Module, got {model!r}.")
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(f"ContrastiveDivergence: sampler must have a sample(...) method, got {sampler!r}.")
        for name, value, low in (("k_steps", k_steps, 1), ("buffer_size", buffer_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ContrastiveDivergence: {name} must be an int >= {low}, got {value!r}.")
        if not 0.0 <= new_sample_ratio <= 1.0:
            raise ValueError(f"ContrastiveDivergence: new_sample_ratio must be in [0, 1], got {new_sample_ratio!r}.")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"ContrastiveDivergence: on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}.")
        self.model = model
        self.sampler = sampler
        self.k_steps = k_steps
        self.persistent = persistent
        self.buffer_size = buffer_size
        self.new_sample_ratio = float(new_sample_ratio)
        self.init_dist = init_dist
        self.on_nonfinite = on_nonfinite
        self.replay_buffer: Tensor | None = None

    def _init_samples(self, n: int, like: Tensor) -> Tensor:
        if self.init_dist is None:
            return torch.randn((n, *like.shape[1:]), dtype=like.dtype, device=like.device)
        sample = getattr(self.init_dist, "sample", None)
        draws = sample((n,)) if callable(sample) else self.init_dist(n)
        if draws.shape != (n, *like.shape[1:]):
            raise ValueError(
                f"ContrastiveDivergence: init_dist gave shape {tuple(draws.shape)} for {n} samples; "
                f"it must give (n, *event_shape) = {(n, *like.shape[1:])}."
            )
        return draws.to(device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def _chain_starts(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Starting points (B, *event_shape) and, when persistent, the buffer slots they use."""
        if not self.persistent:
            return x, None
        n = x.shape[0]
        if n > self.buffer_size:
            raise ValueError(
                f"ContrastiveDivergence: batch of {n} chains but buffer_size={self.buffer_size}; "
                "use buffer_size >= the batch size."
            )
        if self.replay_buffer is None or self.replay_buffer.shape[1:] != x.shape[1:]:
            self.replay_buffer = self._init_samples(self.buffer_size, x)
        self.replay_buffer = self.replay_buffer.to(device=x.device, dtype=x.dtype)
        slots = torch.randperm(self.buffer_size, device=x.device)[:n]
        starts = self.replay_buffer[slots]
        restart = torch.rand(n, device=x.device) < self.new_sample_ratio
        fresh = self._init_samples(n, x)
        starts = torch.where(restart.view((-1,) + (1,) * (x.ndim - 1)), fresh, starts)
        return starts, slots

    def forward(self, *args: Tensor, **_: Any) -> tuple[Tensor, Tensor]:
        """``cd(x)`` or ``cd(energies_of_x, x)``; returns ``(loss, negative_samples)``.

        Extra keyword arguments (such as the handler's ``epoch=``) are ignored.
        """
        if len(args) == 1:
            x, positive_energy = args[0], None
        elif len(args) == 2:
            positive_energy, x = args
        else:
            raise TypeError(
                f"ContrastiveDivergence: call as cd(x) or cd(energies, x), got {len(args)} positional arguments."
            )
        x = x.detach()
        starts, slots = self._chain_starts(x)
        negatives = self.sampler.sample(x=starts, n_steps=self.k_steps).detach()
        if slots is not None:
            self.replay_buffer[slots] = negatives
        if positive_energy is None:
            positive_energy = self.model(x)
        if positive_energy.shape != (x.shape[0],):
            raise ValueError(
                f"ContrastiveDivergence: energies must have shape ({x.shape[0]},), got {tuple(positive_energy.shape)}."
            )
        loss = positive_energy.mean() - self.model(negatives).mean()
        if not torch.isfinite(loss):
            loss = self._nonfinite(loss)
        return loss, negatives

    def _nonfinite(self, loss: Tensor) -> Tensor:
        message = f"ContrastiveDivergence: the loss is {loss.item()} (a non-finite energy)"
        if self.on_nonfinite == "raise":
            raise FloatingPointError(message + "; lower the sampler's step size or regularise the energy.")
        warnings.warn(message + "; skipping: returning a zero loss with zero gradients.", RuntimeWarning, stacklevel=3)
        params = [p for p in self.model.parameters() if p.requires_grad] if isinstance(self.model, nn.Module) else []
        zero = loss.new_zeros(())
        # 0 * p has gradient exactly 0 (p is finite), so every parameter gets a zero gradient.
        return zero + sum((0.0 * p).sum() for p in params) if params else zero.requires_grad_()
