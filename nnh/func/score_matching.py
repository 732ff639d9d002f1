r"""Score matching for energy models: the denoising and the sliced objectives, pure.

An energy U_theta(x) defines the model score :math:`s_\theta(x) = -\nabla_x U_\theta(x)`. Both
losses are differentiable in the parameters theta (the score is built with ``create_graph``),
and both take their randomness as arguments.

- Denoising (Vincent 2011): perturb :math:`\tilde x = x + \sigma\xi` and regress the score on
  the perturbation kernel's, :math:`-\xi/\sigma`:

  .. math:: L = \tfrac12\,\mathbb E\,\big\lVert \nabla_x U_\theta(\tilde x) - \xi/\sigma \big\rVert^2

  minimised by the score of the noised data law :math:`p_\sigma = p * \mathcal N(0, \sigma^2 I)`.
- Sliced (Song et al. 2019): with probes v (Rademacher, Gaussian or on the sphere),

  .. math:: L = \mathbb E_x\, \mathbb E_v \big[ v^\top \nabla_x (v^\top s_\theta(x)) + \tfrac12 (v^\top s_\theta(x))^2 \big]

  which equals, up to a constant, the Fisher divergence to the data. The first term is a
  Hutchinson estimate of :math:`\mathrm{tr}\,\nabla_x s_\theta` by `nnh.func.hutchinson_divergence`
  (the estimator the likelihoods of score-based models use): all K probes come from one
  vmapped vector-Jacobian product of the score, not a loop over probes and not K copies of
  the batch.

These train an energy at one noise level. The denoising loss of score-based models,
`nnh.func.dsm_loss` (`nnh.denoising_score_matching`), is another objective: a time-conditioned
network net(t, x) = sigma(t) times the score, trained over all noise levels t of an SDE. At one
level with m(t) = 1 and net(t, x) / sigma = -grad U(x) it is 2 sigma^2 times
`denoising_score_matching_loss`; see `nnh.func.score`, docs/score_based.md and docs/samplers.md.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from nnh.func._event import event_sum
from nnh.func.divergence import hutchinson_divergence, hutchinson_probes

__all__ = [
    "denoising_score_matching_loss",
    "energy_score",
    "projection_probes",
    "sliced_score_matching_loss",
]

EnergyFn = Callable[[Tensor], Tensor]


def energy_score(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(s, x_leaf)``: the model score :math:`s = -\nabla_x U(x)` (B, *event_shape), built with
    ``create_graph`` so it is differentiable in U's parameters, and the leaf it was taken at."""
    grad, leaf = _energy_gradient(energy_fn, x)
    return -grad, leaf


def _energy_gradient(energy_fn: EnergyFn, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_checked_energy(energy_fn, leaf).sum(), leaf, create_graph=True)
    return grad, leaf


def _checked_energy(energy_fn: EnergyFn, x: Tensor) -> Tensor:
    energy = energy_fn(x)
    if energy.shape != (x.shape[0],):
        raise ValueError(
            f"score matching: the energy must have shape ({x.shape[0]},), got {tuple(energy.shape)}; "
            "end forward with .squeeze(-1) or a sum over event dimensions."
        )
    return energy


def _score_fn(energy_fn: EnergyFn) -> Callable[[Tensor], Tensor]:
    # x -> -grad U(x) by torch.func, so that hutchinson_divergence can differentiate it again; the
    # result stays differentiable in U's parameters (torch.func composes with autograd outside it).
    grad = torch.func.grad(lambda x: _checked_energy(energy_fn, x).sum())
    return lambda x: -grad(x)


def projection_probes(
    n_projections: int, x: Tensor, kind: str = "rademacher", generator: torch.Generator | None = None
) -> Tensor:
    r"""K = ``n_projections`` probes shaped (K, *x.shape), with :math:`\mathbb E[vv^\top] = I`:
    ``"gaussian"`` (standard normal, `nnh.func.hutchinson_probes`), ``"rademacher"`` (entries +-1,
    the signs of that Gaussian draw) or ``"sphere"`` (that draw normalised to the sphere of
    radius :math:`\sqrt D` over the last dimension, as in sliced score matching)."""
    if kind not in ("rademacher", "gaussian", "sphere"):
        raise ValueError(f"projection_probes: kind must be 'rademacher', 'gaussian' or 'sphere', got {kind!r}.")
    v = hutchinson_probes(x, n_projections, "gaussian", generator)
    if kind == "rademacher":
        # Signs of the Gaussian draw, as TorchEBM draws them, so a seed gives the loss TorchEBM's
        # SlicedScoreMatching gives (benchmarks/mcmc_parity.py checks it); hutchinson_probes'
        # Rademacher draw has the same law from another stream of numbers.
        return v.sign_()
    if kind == "sphere":
        return torch.nn.functional.normalize(v, dim=-1) * x.shape[-1] ** 0.5
    return v


def denoising_score_matching_loss(energy_fn: EnergyFn, x: Tensor, noise: Tensor, noise_scale: float) -> Tensor:
    r"""The denoising score-matching loss, a scalar:
    :math:`\tfrac12 \frac1B \sum_b \lVert \nabla_x U(x_b + \sigma\xi_b) - \xi_b/\sigma\rVert^2`.

    One noise level, an energy without time; for the time-conditioned score networks of
    score-based models see `nnh.func.dsm_loss` (module docstring).

    Args:
        energy_fn: U, (B, *event_shape) -> (B,), differentiable in x and its parameters.
        x: data (B, *event_shape). noise: standard normal xi shaped like x. noise_scale: sigma > 0.
    """
    if not 0 < noise_scale < math.inf:
        raise ValueError(f"denoising_score_matching_loss: noise_scale must be finite and > 0, got {noise_scale!r}.")
    if noise.shape != x.shape:  # would broadcast into the loss of another perturbation, silently
        raise ValueError(f"denoising_score_matching_loss: noise of shape {tuple(noise.shape)} does not fit x of shape "
                         f"{tuple(x.shape)}; pass standard normal noise shaped like x.")
    grad, _ = _energy_gradient(energy_fn, torch.add(x, noise, alpha=noise_scale))
    residual = torch.add(grad, noise, alpha=-1.0 / noise_scale)
    return 0.5 * event_sum(residual * residual).mean()


def sliced_score_matching_loss(energy_fn: EnergyFn, x: Tensor, probes: Tensor) -> Tensor:
    r"""The sliced score-matching loss, a scalar:
    :math:`\frac1B \sum_b \frac1K \sum_k \big[v_{kb}^\top \nabla_x(v_{kb}^\top s(x_b)) + \tfrac12 (v_{kb}^\top s(x_b))^2\big]`
    with :math:`s = -\nabla_x U`, differentiable in U's parameters. The first term is
    `nnh.func.hutchinson_divergence` of s: one forward and one backward pass for s, then one
    vmapped vector-Jacobian product of s over the K probes.

    Args:
        energy_fn: U, differentiable. x: data (B, *event_shape).
        probes: (K, B, *event_shape), e.g. `projection_probes`.
    """
    if probes.shape[1:] != x.shape:
        raise ValueError(
            f"sliced_score_matching_loss: probes must be (K, *x.shape) = (K, {', '.join(map(str, x.shape))}), "
            f"got {tuple(probes.shape)}."
        )
    # nnh's one Hutchinson estimator. Through torch.func this loss costs 3 to 10 % more CPU time than
    # a batched autograd.grad on the same graph (benchmarks/RESULTS.md, "One set of ODE steps ...").
    score, divergence = hutchinson_divergence(_score_fn(energy_fn), x.detach(), probes)
    k = probes.shape[0]
    projected = event_sum((probes * score).reshape(k * x.shape[0], *x.shape[1:])).view(k, -1)
    return (divergence + 0.5 * projected.square().mean(0)).mean()
