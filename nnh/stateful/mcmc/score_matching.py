r"""`DenoisingScoreMatching` and `SlicedScoreMatching`: training energy models by score matching,
thin shells over `nnh.func.score_matching`."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from nnh.func._event import event_sum
from nnh.func.score_matching import denoising_score_matching_loss, energy_score, projection_probes
from nnh.func.score_matching import sliced_score_matching_loss
from nnh.stateful.checks import check_flag
from nnh.stateful.mcmc.losses import BaseLoss
from nnh.stateful.mcmc._sample_args import merge_condition
from nnh.stateful.mcmc.schedulable import ScheduledValue, scheduled_property

__all__ = ["BaseScoreMatching", "DenoisingScoreMatching", "SlicedScoreMatching"]


class BaseScoreMatching(BaseLoss):
    r"""Shared shell of the score-matching losses of an energy model U.

    ``noise_scale`` and ``regularization_strength`` are scheduled values (numbers or schedulers,
    read through the properties of those names). With a strength lambda > 0 the loss gains
    :math:`\lambda\,\overline{\lVert\nabla_x U(x)\rVert^2}` at the data, or
    :math:`\lambda\,` ``custom_regularization(x, model)`` when that is given.

    Args:
        model: the energy, (B, *event_shape) -> (B,), called as ``model(x, **model_kwargs)``.
        noise_scale: sigma of the denoising variant. regularization_strength: lambda.
        use_autograd: True differentiates ``model`` in place; False goes through
            ``torch.func.functional_call`` on ``functional_model`` (default: ``model``) with the
            model's parameters and buffers, for modules whose hooks must not run. Same values.
        hutchinson_samples: probes per sample of Hutchinson estimators (kept for subclasses).
        custom_regularization: ``(x, model) -> scalar``. functional_model: see use_autograd.
        dtype, device: see `BaseLoss`.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Tensor],
        noise_scale: ScheduledValue = 0.01,
        regularization_strength: ScheduledValue = 0.0,
        use_autograd: bool = True,
        hutchinson_samples: int = 1,
        custom_regularization: Callable[[Tensor, Any], Tensor] | None = None,
        functional_model: nn.Module | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(dtype, device, model=model)
        owner = type(self).__name__
        if not callable(model):
            raise TypeError(f"{owner}: model must be an energy nn.Module or callable, got {model!r}.")
        if isinstance(hutchinson_samples, bool) or not isinstance(hutchinson_samples, int) or hutchinson_samples < 1:
            raise ValueError(f"{owner}: hutchinson_samples must be an int >= 1, got {hutchinson_samples!r}.")
        if custom_regularization is not None and not callable(custom_regularization):
            raise TypeError(f"{owner}: custom_regularization must be callable (x, model) -> scalar, got {custom_regularization!r}.")
        self.model = model
        self.register_scheduler("noise_scale", noise_scale, positive=True)
        self.register_scheduler("regularization_strength", regularization_strength, positive=False)
        check_flag(owner, "use_autograd", use_autograd)
        self.use_autograd = use_autograd
        self.hutchinson_samples = hutchinson_samples
        self.custom_regularization = custom_regularization
        object.__setattr__(self, "functional_model", functional_model)  # a template, not a submodule

    noise_scale = scheduled_property("noise_scale", positive=True)
    regularization_strength = scheduled_property("regularization_strength", positive=False)

    def energy_fn(self, model_kwargs: dict[str, Any] | None = None) -> Callable[[Tensor], Tensor]:
        """``x -> U(x)``, conditioned on ``model_kwargs``, by the path ``use_autograd`` selects."""
        mk = model_kwargs or {}
        if self.use_autograd or not isinstance(self.model, nn.Module):
            return lambda x: self.model(x, **mk)
        module = self.functional_model if self.functional_model is not None else self.model
        state = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        return lambda x: torch.func.functional_call(module, state, (x,), mk)

    def compute_score(self, x: Tensor, noise: Tensor | None = None, model_kwargs: dict[str, Any] | None = None) -> Tensor:
        r""":math:`\nabla_x U` at ``x + noise`` (the energy gradient, with its graph: TorchEBM's
        ``compute_score`` convention; the model score is its negative)."""
        x = self._placed(x)
        point = x if noise is None else x + noise.to(x)
        return -energy_score(self.energy_fn(model_kwargs), point)[0]

    def perturb_data(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x + noise, noise)`` with noise ~ N(0, noise_scale^2 I)."""
        x = self._placed(x)
        noise = self.noise_scale * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x + noise, noise

    def add_regularization(self, loss: Tensor, x: Tensor, custom_reg_fn: Callable | None = None,
                           reg_strength: float | None = None, model_kwargs: dict[str, Any] | None = None) -> Tensor:
        """``loss`` plus the regularisation term (class docstring); unchanged when the strength is 0."""
        strength = self.regularization_strength if reg_strength is None else reg_strength
        if strength <= 0:
            return loss
        reg_fn = custom_reg_fn or self.custom_regularization
        if reg_fn is not None:
            return loss + strength * reg_fn(x, self.model)
        grad = self.compute_score(x, model_kwargs=model_kwargs)
        return loss + strength * event_sum(grad * grad).mean()

    def forward(self, x: Tensor, *args: Any, y: Any = None, model_kwargs: dict[str, Any] | None = None,
                generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """The loss of the batch x (B, *event_shape), a scalar; ``y`` / ``model_kwargs`` condition
        the model, ``generator`` draws the noise or the probes. Other keywords are ignored."""
        x = self._placed(x)
        mk = merge_condition(type(self).__name__, model_kwargs, y, x.device)
        return self.add_regularization(self.compute_loss(x, model_kwargs=mk, generator=generator), x, model_kwargs=mk)

    def compute_loss(self, x: Tensor, *args: Any, model_kwargs: dict[str, Any] | None = None,
                     generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define compute_loss(x, model_kwargs=..., generator=...).")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__})"


class DenoisingScoreMatching(BaseScoreMatching):
    r"""Denoising score matching (Vincent 2011), `nnh.func.denoising_score_matching_loss`:

    .. math:: L = \tfrac12\,\overline{\lVert \nabla_x U(x + \sigma\xi) - \xi/\sigma \rVert^2}

    minimised when :math:`-\nabla U` is the score of the data convolved with N(0, sigma^2 I).
    An energy without time at one noise level: not `nnh.denoising_score_matching`, the loss of
    the score-based models' time-conditioned networks over all noise levels of an SDE
    (`nnh.func.dsm_loss`, docs/score_based.md; docs/samplers.md compares the two).
    Same arguments as `BaseScoreMatching`, in TorchEBM's order: ``(model, noise_scale=0.01,
    regularization_strength=0.0, custom_regularization=None, use_autograd=True,
    functional_model=None, dtype=None, device=None)``.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Tensor],
        noise_scale: ScheduledValue = 0.01,
        regularization_strength: ScheduledValue = 0.0,
        custom_regularization: Callable[[Tensor, Any], Tensor] | None = None,
        use_autograd: bool = True,
        functional_model: nn.Module | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(model, noise_scale, regularization_strength, use_autograd, 1, custom_regularization,
                         functional_model, dtype, device)

    def compute_loss(self, x: Tensor, *args: Any, model_kwargs: dict[str, Any] | None = None,
                     generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        x = self._placed(x)
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return denoising_score_matching_loss(self.energy_fn(model_kwargs), x, xi, self.noise_scale)


class SlicedScoreMatching(BaseScoreMatching):
    r"""Sliced score matching (Song et al. 2019), `nnh.func.sliced_score_matching_loss`, with
    ``n_projections`` probes per sample of ``projection_type`` ``"rademacher"``, ``"gaussian"``
    or ``"sphere"`` (any other raises ValueError). The divergence term is
    `nnh.func.hutchinson_divergence` of the model score: one vmapped vector-Jacobian product over
    all probes; conditioning works (the probes do not tile the batch).

    Args, in TorchEBM's order: ``(model, n_projections=5, projection_type="rademacher",
    regularization_strength=0.0, custom_regularization=None, use_autograd=True,
    functional_model=None, dtype=None, device=None)``; see `BaseScoreMatching`.
    """

    def __init__(
        self,
        model: nn.Module | Callable[..., Tensor],
        n_projections: int = 5,
        projection_type: str = "rademacher",
        regularization_strength: ScheduledValue = 0.0,
        custom_regularization: Callable[[Tensor, Any], Tensor] | None = None,
        use_autograd: bool = True,
        functional_model: nn.Module | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        owner = type(self).__name__
        if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
            raise ValueError(f"{owner}: n_projections must be an int >= 1, got {n_projections!r}.")
        super().__init__(model, 0.01, regularization_strength, use_autograd, 1, custom_regularization,
                         functional_model, dtype, device)
        if projection_type not in ("rademacher", "gaussian", "sphere"):
            raise ValueError(f"{owner}: projection_type must be 'rademacher', 'gaussian' or 'sphere', got {projection_type!r}.")
        self.n_projections = n_projections
        self.projection_type = projection_type

    def compute_loss(self, x: Tensor, *args: Any, model_kwargs: dict[str, Any] | None = None,
                     generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        x = self._placed(x)
        probes = projection_probes(self.n_projections, x, self.projection_type, generator)
        return sliced_score_matching_loss(self.energy_fn(model_kwargs), x, probes)
