"""Energy-and-gradient functions for the MCMC steps: ``x -> (U(x), grad U(x))``."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = [
    "EnergyAndGrad",
    "autograd_energy_and_grad",
    "conditioned_energy_and_grad",
    "energy_and_grad_fn",
    "func_energy_and_grad",
]

# (energy (B,), gradient shaped like x) of a batch of states x.
EnergyAndGrad = Callable[[Tensor], "tuple[Tensor, Tensor]"]


def autograd_energy_and_grad(energy_fn: Callable[[Tensor], Tensor]) -> EnergyAndGrad:
    r"""Wrap ``energy_fn: (B, *event) -> (B,)`` as ``x -> (U(x), \nabla_x \sum_b U(x_b))``.

    Uses `torch.autograd.grad` on a detached copy of ``x``: the graph is freed at once and both
    outputs are detached, so nothing accumulates across steps even when the model's parameters
    require grad (as in contrastive-divergence training). Works in eager mode only.
    """

    def energy_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            energy = energy_fn(x_)
            (grad,) = torch.autograd.grad(energy.sum(), x_)
        return energy.detach(), grad

    return energy_and_grad


def func_energy_and_grad(energy_fn: Callable[[Tensor], Tensor]) -> EnergyAndGrad:
    r"""Like `autograd_energy_and_grad` but through `torch.func.grad`, which
    ``torch.compile(fullgraph=True)`` can trace. The model must be functorch-compatible (no
    in-place updates of buffers, e.g. BatchNorm in training mode)."""

    def summed(x: Tensor) -> tuple[Tensor, Tensor]:
        energy = energy_fn(x)
        return energy.sum(), energy

    grad_and_energy = torch.func.grad(summed, has_aux=True)

    def energy_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        grad, energy = grad_and_energy(x.detach())
        return energy.detach(), grad.detach()

    return energy_and_grad


def energy_and_grad_fn(model: Callable[[Tensor], Tensor]) -> EnergyAndGrad:
    """The fastest ``(energy, grad)`` function for ``model``: its own ``energy_and_gradient``
    method when it has one (`nnh.BaseModel` subclasses, analytic for the built-in energies),
    else `autograd_energy_and_grad(model)`."""
    method = getattr(model, "energy_and_gradient", None)
    if callable(method):
        return method
    return autograd_energy_and_grad(model)


def conditioned_energy_and_grad(model: Callable[..., Tensor], model_kwargs: dict[str, Any] | None) -> EnergyAndGrad:
    r"""``x -> (U(x; c), \nabla_x U(x; c))`` for a conditional energy called as
    ``model(x, **model_kwargs)`` (class labels, a context). Empty or None ``model_kwargs`` is
    `energy_and_grad_fn(model)`. A model whose ``energy_and_gradient`` takes ``model_kwargs``
    (`nnh.BaseModel`) supplies the pair; any other is differentiated with autograd."""
    if not model_kwargs:
        return energy_and_grad_fn(model)
    method = getattr(model, "energy_and_gradient", None)
    if callable(method) and "model_kwargs" in inspect.signature(method).parameters:
        return lambda x: method(x, model_kwargs=model_kwargs)
    return autograd_energy_and_grad(lambda x: model(x, **model_kwargs))
