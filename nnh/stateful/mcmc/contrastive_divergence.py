r"""`ContrastiveDivergence` and `PersistentContrastiveDivergence`: the maximum-likelihood gradient
of an energy model with MCMC negatives."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from nnh.stateful.checks import check_flag
from nnh.stateful.mcmc._sample_args import merge_condition
from nnh.stateful.mcmc.losses import BaseContrastiveDivergence

__all__ = ["ContrastiveDivergence", "PersistentContrastiveDivergence"]

_CALL_OPTIONS = ("energy_reg_weight", "add_noise_to_real", "noise_scale")


class ContrastiveDivergence(BaseContrastiveDivergence):
    r"""Contrastive divergence loss for an energy model U_theta:

    .. math:: \mathcal L = \overline{U_\theta(x^+)} - \overline{U_\theta(x^-)}
        + w\,\big(\overline{U_\theta(x^+)^2} + \overline{U_\theta(x^-)^2}\big)

    (bars: means over the batch), whose first two terms estimate the gradient of the negative
    log-likelihood; x^+ is the data (plus N(0, noise_scale^2) noise with ``add_noise_to_real``)
    and x^- negative samples from ``k_steps`` of ``sampler`` (no gradient flows through the
    chains). w = ``energy_reg_weight`` keeps the energies from drifting to large magnitudes.

    Chains start from the data batch (CD-k), or with ``persistent=True`` from the replay buffer
    (PCD; see `nnh.stateful.mcmc.losses`).

    Call forms:
        ``loss, negatives = cd(x, y=None, model_kwargs=None, generator=None)`` with data x
        (B, *event_shape) (``y`` / ``model_kwargs`` condition the model in both phases and the
        chains); and ``cd(energies, x)``, the form `NNHandler` uses for a GENERATIVE model
        (``loss_fn(output, inputs)``): the handler's forward pass ``energies = model(x)`` is reused
        as U(x^+). Keywords ``energy_reg_weight``, ``add_noise_to_real`` and ``noise_scale``
        override the constructor's for one call; other keywords (the handler's ``epoch=``) are
        ignored.

    Non-finite loss: ``on_nonfinite="raise"`` (default) raises FloatingPointError;
    ``"skip"`` warns and returns a zero loss whose gradient is exactly zero for every
    parameter. The check reads one scalar per call (a host sync on an accelerator, once per
    training step).

    Args:
        model, sampler, k_steps, persistent, buffer_size, init_steps, new_sample_ratio: see
            `BaseContrastiveDivergence`.
        energy_reg_weight: w >= 0. add_noise_to_real: perturb the data. noise_scale: its std.
        dtype, device: see `BaseLoss`.
        init_dist, on_nonfinite: keyword-only; see above and `BaseContrastiveDivergence`.
    """

    def __init__(
        self,
        model: Any,
        sampler: Any,
        k_steps: int = 10,
        persistent: bool = False,
        buffer_size: int = 10000,
        init_steps: int = 100,
        new_sample_ratio: float = 0.05,
        energy_reg_weight: float = 0.001,
        add_noise_to_real: bool = False,
        noise_scale: float = 1e-4,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        init_dist: Any = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
    ) -> None:
        super().__init__(model, sampler, k_steps, persistent, buffer_size, new_sample_ratio, init_steps, dtype, device,
                         init_dist=init_dist)
        owner = type(self).__name__
        if not energy_reg_weight >= 0:
            raise ValueError(f"{owner}: energy_reg_weight must be >= 0, got {energy_reg_weight!r}.")
        if not noise_scale >= 0:
            raise ValueError(f"{owner}: noise_scale must be >= 0, got {noise_scale!r}.")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"{owner}: on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}.")
        self.energy_reg_weight = float(energy_reg_weight)
        check_flag(owner, "add_noise_to_real", add_noise_to_real)
        self.add_noise_to_real = add_noise_to_real
        self.noise_scale = float(noise_scale)
        self.on_nonfinite = on_nonfinite

    def forward(self, *args: Tensor, y: Any = None, model_kwargs: dict[str, Any] | None = None,
                generator: torch.Generator | None = None, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """``cd(x)`` or ``cd(energies_of_x, x)``; returns ``(loss, negative_samples)``."""
        if len(args) == 1:
            x, positive_energy = args[0], None
        elif len(args) == 2:
            positive_energy, x = args
        else:
            raise TypeError(f"{type(self).__name__}: call as cd(x) or cd(energies, x), got {len(args)} positional arguments.")
        x = self._placed(x).detach()
        mk = merge_condition(type(self).__name__, model_kwargs, y, x.device)
        starts, slots = self._chain_starts(x, generator)
        negatives = self._sample(starts, self.k_steps, mk, generator)
        if slots is not None:
            self.update_buffer(negatives, slots)
        options = {k: kwargs[k] for k in _CALL_OPTIONS if k in kwargs}
        loss = self.compute_loss(x, negatives, model_kwargs=mk, generator=generator, positive_energy=positive_energy,
                                 **options)
        return loss, negatives

    def compute_loss(self, x: Tensor, pred_x: Tensor, *args: Any, model_kwargs: dict[str, Any] | None = None,
                     generator: torch.Generator | None = None, positive_energy: Tensor | None = None,
                     **options: Any) -> Tensor:
        """The loss from data ``x`` and negatives ``pred_x``; ``positive_energy`` = U(x) when
        already computed (it is then used as it is, without the data noise)."""
        weight = options.get("energy_reg_weight", self.energy_reg_weight)
        mk = model_kwargs or {}
        if positive_energy is None:
            if options.get("add_noise_to_real", self.add_noise_to_real):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = x + options.get("noise_scale", self.noise_scale) * noise
            positive_energy = self.model(x, **mk)
        if positive_energy.shape != (x.shape[0],):
            raise ValueError(
                f"{type(self).__name__}: energies must have shape ({x.shape[0]},), got {tuple(positive_energy.shape)}."
            )
        negative_energy = self.model(pred_x, **mk)
        loss = positive_energy.mean() - negative_energy.mean()
        if weight > 0:
            loss = loss + weight * (positive_energy.square().mean() + negative_energy.square().mean())
        if not torch.isfinite(loss):
            loss = self._nonfinite(loss)
        return loss

    def _nonfinite(self, loss: Tensor) -> Tensor:
        message = f"{type(self).__name__}: the loss is {loss.item()} (a non-finite energy)"
        if self.on_nonfinite == "raise":
            raise FloatingPointError(message + "; lower the sampler's step size or regularise the energy.")
        warnings.warn(message + "; skipping: returning a zero loss with zero gradients.", RuntimeWarning, stacklevel=4)
        params = [p for p in self.model.parameters() if p.requires_grad] if isinstance(self.model, nn.Module) else []
        zero = loss.new_zeros(())
        # 0 * p has gradient exactly 0 (p is finite), so every parameter gets a zero gradient.
        return zero + sum((0.0 * p).sum() for p in params) if params else zero.requires_grad_()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, sampler={type(self.sampler).__name__}, "
                f"k_steps={self.k_steps}, persistent={self.persistent})")


class PersistentContrastiveDivergence(ContrastiveDivergence):
    """`ContrastiveDivergence` with ``persistent=True`` (the replay buffer); same arguments."""

    def __init__(self, model: Any, sampler: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["persistent"] = True
        if len(args) >= 2:  # (k_steps, persistent, ...): the positional persistent is overridden
            args = (args[0], True, *args[2:])
            kwargs.pop("persistent")
        super().__init__(model, sampler, *args, **kwargs)
