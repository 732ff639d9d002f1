r"""Flow matching and diffusion along an interpolant: the maths `nnh.FlowSampler` integrates.

An interpolant joins noise :math:`x_0 \sim \mathcal N(0, I)` at t = 0 to data :math:`x_1` at t = 1:

.. math:: x_t = \alpha(t)\, x_1 + \sigma(t)\, x_0, \qquad u_t = \dot\alpha(t)\, x_1 + \dot\sigma(t)\, x_0

- ``linear``: :math:`\alpha = t,\ \sigma = 1 - t` (rectified flow / optimal transport path);
- ``cosine``: :math:`\alpha = \sin(\pi t/2),\ \sigma = \cos(\pi t/2)`;
- ``vp``: :math:`\alpha = \exp(-\tfrac14 (1-t)^2 (\beta_1 - \beta_0) - \tfrac12 (1-t)\beta_0)`,
  :math:`\sigma = \sqrt{1 - \alpha^2}` (the variance-preserving diffusion, in flow time).

A network trained on the interpolant predicts one of three equivalent quantities at (x, t):
the velocity :math:`v = E[u_t \mid x_t = x]`, the score :math:`s = \nabla \log p_t(x)`, or the
noise :math:`\epsilon = E[x_0 \mid x_t = x]` (so :math:`s = -\epsilon/\sigma`). They are related by

.. math:: v = \kappa(t)\, x + \eta(t)\, s, \qquad \kappa = \dot\alpha/\alpha, \quad
    \eta = \kappa\,\sigma^2 - \sigma\dot\sigma .

The probability-flow ODE :math:`\dot x = v(x, t)` carries :math:`p_0 = \mathcal N(0, I)` to the
data law at t = 1. For any diffusion :math:`w(t) \ge 0` the SDE
:math:`dx = [v + w\,s]\,dt + \sqrt{2w}\,dW` has the same marginals (Fokker-Planck: the added
terms cancel), which is what sampling with ``mode="sde"`` uses.

Shapes: x (B, *event_shape), t (B,); coefficients broadcast over the event dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nnh.func.mcmc import _check_scale
from nnh.func.sde import VPSDE, per_sample

__all__ = [
    "CosineInterpolant",
    "Interpolant",
    "LinearInterpolant",
    "VariancePreservingInterpolant",
    "diffusion_coefficient",
    "expand_t_like_x",
    "get_interpolant",
    "score_from_prediction",
    "velocity_from_prediction",
]

_TINY = 1e-8  # the floor of alpha and the denominators: the coefficients blow up at t = 0 or 1


def expand_t_like_x(t: Tensor, x: Tensor) -> Tensor:
    """t (B,) viewed as (B, 1, ..., 1) to broadcast against x (B, *event_shape): TorchEBM's name
    for `nnh.func.sde.per_sample`, which leaves a 0-d t as it is."""
    return per_sample(t, x)


class Interpolant:
    r"""Base of the interpolants: subclasses give :math:`(\alpha, \dot\alpha)` and
    :math:`(\sigma, \dot\sigma)` at t (any shape). Stateless beyond constructor numbers."""

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def compute_d_alpha_alpha_ratio_t(self, t: Tensor) -> Tensor:
        r""":math:`\kappa = \dot\alpha / \alpha` (alpha floored at 1e-8)."""
        alpha, d_alpha = self.compute_alpha_t(t)
        return d_alpha / alpha.clamp(min=_TINY)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(x_t, u_t)`` for noise x0, data x1 and times t (B,): the training pairs of flow matching."""
        te = expand_t_like_x(t, x0)
        alpha, d_alpha = self.compute_alpha_t(te)
        sigma, d_sigma = self.compute_sigma_t(te)
        return alpha * x1 + sigma * x0, d_alpha * x1 + d_sigma * x0

    def compute_drift(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""``(kappa x, eta)``: the velocity in score form is :math:`\kappa x + \eta s`."""
        te = expand_t_like_x(t, x)
        kappa = self.compute_d_alpha_alpha_ratio_t(te)
        sigma, d_sigma = self.compute_sigma_t(te)
        return kappa * x, kappa * sigma * sigma - sigma * d_sigma

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearInterpolant(Interpolant):
    r""":math:`\alpha = t`, :math:`\sigma = 1 - t`."""

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return t, torch.ones_like(t)

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t, -torch.ones_like(t)


class CosineInterpolant(Interpolant):
    r""":math:`\alpha = \sin(\pi t/2)`, :math:`\sigma = \cos(\pi t/2)`."""

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        angle = 0.5 * math.pi * t
        return torch.sin(angle), 0.5 * math.pi * torch.cos(angle)

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        angle = 0.5 * math.pi * t
        return torch.cos(angle), -0.5 * math.pi * torch.sin(angle)


class VariancePreservingInterpolant(Interpolant):
    r"""The variance-preserving diffusion, `nnh.VPSDE` with T = 1, in flow time: diffusion time
    s = 1 - t, :math:`\beta(s) = \beta_0 + s(\beta_1 - \beta_0)`, :math:`B(s) = \int_0^s \beta`,
    and :math:`\alpha(t) = m(1 - t) = e^{-B(1-t)/2}`, i.e.
    :math:`\log\alpha = -\tfrac14 (1-t)^2 (\beta_1 - \beta_0) - \tfrac12 (1-t)\beta_0`;
    :math:`\sigma = \sqrt{1 - \alpha^2}`, the SDE's sigma(1 - t). ``sigma_min`` = beta_0 and
    ``sigma_max`` = beta_1 (TorchEBM's names for the SDE's beta_min and beta_max)."""

    def __init__(self, sigma_min: float = 0.1, sigma_max: float = 20.0) -> None:
        if not 0 <= sigma_min < sigma_max:
            raise ValueError(f"VariancePreservingInterpolant: need 0 <= sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}.")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._sde = VPSDE(self.sigma_min, self.sigma_max)  # the beta schedule, one home for it

    def _log_alpha(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # (log alpha, d log alpha / dt) = (-B(s) / 2, beta(s) / 2) at s = 1 - t.
        s = 1 - t
        return -0.5 * self._sde.integral_beta(s), 0.5 * self._sde.beta(s)

    def compute_alpha_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha, d_log_alpha = self._log_alpha(t)
        alpha = torch.exp(log_alpha)
        return alpha, alpha * d_log_alpha

    def compute_sigma_t(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, d_alpha = self.compute_alpha_t(t)
        sigma = (1 - alpha * alpha).clamp(min=1e-12).sqrt()
        return sigma, -alpha * d_alpha / sigma

    def compute_d_alpha_alpha_ratio_t(self, t: Tensor) -> Tensor:
        return self._log_alpha(t)[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


_INTERPOLANTS = {"linear": LinearInterpolant, "cosine": CosineInterpolant, "vp": VariancePreservingInterpolant}


def get_interpolant(interpolant: str | Interpolant) -> Interpolant:
    """An interpolant by name (``"linear"``, ``"cosine"``, ``"vp"``), or an instance as it is."""
    if isinstance(interpolant, Interpolant):
        return interpolant
    cls = _INTERPOLANTS.get(interpolant) if isinstance(interpolant, str) else None
    if cls is None:
        raise ValueError(f"unknown interpolant {interpolant!r}; pass 'linear', 'cosine', 'vp' or an nnh interpolant.")
    return cls()


def score_from_prediction(prediction: str, output: Tensor, x: Tensor, t: Tensor, interpolant: Interpolant) -> Tensor:
    r"""The score s at (x, t) from a network ``output`` that predicts ``"score"``, ``"noise"``
    (:math:`s = -\epsilon/\sigma`) or ``"velocity"`` (:math:`s = (v - \kappa x)/\eta`)."""
    if prediction == "score":
        return output
    if prediction == "noise":
        sigma, _ = interpolant.compute_sigma_t(expand_t_like_x(t, x))
        return -output / (sigma + _TINY)
    if prediction == "velocity":
        kappa_x, eta = interpolant.compute_drift(x, t)
        return (output - kappa_x) / eta.clamp(min=1e-12)
    raise ValueError(f"prediction must be 'velocity', 'score' or 'noise', got {prediction!r}.")


def velocity_from_prediction(prediction: str, output: Tensor, x: Tensor, t: Tensor, interpolant: Interpolant) -> Tensor:
    r"""The probability-flow velocity v at (x, t) from a network ``output`` predicting
    ``"velocity"`` (returned as it is), ``"score"`` or ``"noise"`` (:math:`v = \kappa x + \eta s`)."""
    if prediction == "velocity":
        return output
    kappa_x, eta = interpolant.compute_drift(x, t)
    return kappa_x + eta * score_from_prediction(prediction, output, x, t, interpolant)


def diffusion_coefficient(form: str, x: Tensor, t: Tensor, interpolant: Interpolant, norm: float = 1.0) -> Tensor:
    r"""w(t) of the sampling SDE :math:`dx = [v + w s]dt + \sqrt{2w}\,dW`, broadcastable to x:
    ``"constant"`` 1, ``"SBDM"`` :math:`\eta/\sigma`, ``"sigma"`` :math:`\sigma`, ``"linear"`` 1 - t,
    ``"decreasing"`` (1 - t)^2, ``"increasing-decreasing"`` 4t(1 - t); all times ``norm`` (a
    finite number >= 0: the noise is sqrt(2w))."""
    _check_scale("diffusion_coefficient", "norm", norm, positive=False)  # Python numbers only: no sync
    te = expand_t_like_x(t, x)
    if form == "constant":
        return norm * torch.ones_like(te)
    if form == "SBDM":
        sigma, _ = interpolant.compute_sigma_t(te)
        return norm * interpolant.compute_drift(x, t)[1] / (sigma + _TINY)
    if form == "sigma":
        return norm * interpolant.compute_sigma_t(te)[0]
    if form == "linear":
        return norm * (1 - te)
    if form == "decreasing":
        return norm * (1 - te) ** 2
    if form == "increasing-decreasing":
        return norm * 4 * te * (1 - te)
    raise ValueError(
        f"unknown diffusion form {form!r}; choose 'constant', 'SBDM', 'sigma', 'linear', 'decreasing' "
        "or 'increasing-decreasing'."
    )
