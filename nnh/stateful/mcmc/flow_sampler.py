r"""`FlowSampler`: sampling flow-matching and diffusion models along an interpolant, by ODE or SDE."""

from __future__ import annotations

import enum
import math
from typing import Any, Callable

import torch
from torch import Tensor

from nnh.func.flow import (
    CosineInterpolant,
    Interpolant,
    LinearInterpolant,
    VariancePreservingInterpolant,
    diffusion_coefficient,
    expand_t_like_x,
    get_interpolant,
    score_from_prediction,
    velocity_from_prediction,
)
from nnh.stateful.checks import check_flag
from nnh.stateful.mcmc.base import BaseSampler, ScheduledValue
from nnh.stateful.mcmc.integrators import BaseRungeKuttaIntegrator, BaseSDERungeKuttaIntegrator, resolve_integrator
from nnh.stateful.mcmc.schedulable import scheduled_property

__all__ = ["FlowSampler", "PredictionType"]

_UNSET: Any = object()
_LAST_STEPS = ("Mean", "Euler", "Tweedie", None)


def _finite_number(value: Any, low: float, high: float) -> bool:
    """``value`` is an int or float (not a bool) in [low, high)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high


class PredictionType(enum.Enum):
    """What the network predicts."""

    NOISE = "noise"
    SCORE = "score"
    VELOCITY = "velocity"


class FlowSampler(BaseSampler):
    r"""Sampling a trained flow-matching or diffusion model (`nnh.func.flow`): from noise at t = 0
    to data at t = 1 along ``interpolant``, integrating the probability-flow ODE
    :math:`\dot x = v(x, t)` (``mode="ode"``) or the SDE :math:`dx = [v + w s]dt + \sqrt{2w}\,dW`
    with the same marginals (``mode="sde"``), where v and s come from the network's output.

    Args:
        model: the network, called as ``model(x, t, **model_kwargs)`` with t of shape (B,).
        mode: ``"ode"`` or ``"sde"``.
        interpolant: ``"linear"``, ``"cosine"``, ``"vp"`` or an `nnh.func.flow.Interpolant`.
        prediction: ``"velocity"``, ``"score"`` or ``"noise"`` (what the network predicts).
        train_eps, sample_eps: the time margins of training and sampling (numbers or schedulers):
            the integration runs over [t0, t1] with t0 = sample_eps where the drift is singular at
            t = 0 (score or noise prediction, or SDE with the ``"SBDM"`` diffusion, on the linear and
            cosine paths) and t1 = 1 - sample_eps (or 1 - last_step_size) except for the velocity ODE.
        negate_velocity: the network learned -v (equilibrium matching): v = -model(x, 0).
        reverse: ODE only: integrate from data (t1) back to noise (t0).
        diffusion_form, diffusion_norm: SDE only: w(t) by `nnh.func.diffusion_coefficient`
            (default ``"SBDM"``, norm 1).
        last_step, last_step_size: SDE only: a final noise-free step from t1 of that size (default
            0.04): ``"Mean"`` (the SDE drift), ``"Euler"`` (the ODE drift), ``"Tweedie"``
            (:math:`(x + \sigma^2 s)/\alpha`) or None (none).
        dtype, device: see `BaseSampler`.
        integrator: ODE: ``"euler"``, ``"heun"``, ``"rk4"`` (the default) or an instance; SDE:
            ``"euler_maruyama"`` (the default), ``"heun"`` or an SDE integrator instance. Fixed
            steps only.
        dim: keyword-only, the default event shape.

    ``sample(x=None, dim=None, n_steps=None, ...)`` is `BaseSampler.sample`; n_steps defaults to
    50 (ODE) or 250 (SDE); the diagnostics hold ``mean``, ``var`` and the time ``t`` of each kept
    step, and a ``generator`` draws the starting noise and the SDE's increments.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        mode: str = "ode",
        interpolant: str | Interpolant = "linear",
        prediction: str = "velocity",
        train_eps: ScheduledValue = 0.0,
        sample_eps: ScheduledValue = 0.0,
        negate_velocity: bool = False,
        reverse: bool = False,
        diffusion_form: str | None = None,
        diffusion_norm: float | None = None,
        last_step: Any = _UNSET,
        last_step_size: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        integrator: str | BaseRungeKuttaIntegrator | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
    ) -> None:
        owner = type(self).__name__
        if mode not in ("ode", "sde"):
            raise ValueError(f"{owner}: mode must be 'ode' or 'sde', got {mode!r}.")
        if prediction not in ("velocity", "score", "noise"):
            raise ValueError(f"{owner}: prediction must be 'velocity', 'score' or 'noise', got {prediction!r}.")
        super().__init__(model, dtype, device, dim=dim, n_steps=50 if mode == "ode" else 250)
        self.mode = mode
        self.prediction_type = PredictionType(prediction)
        self.interpolant = get_interpolant(interpolant)
        self.register_scheduler("train_eps", train_eps, positive=False)
        self.register_scheduler("sample_eps", sample_eps, positive=False)
        self.negate_velocity = negate_velocity
        if mode == "ode":
            given = [name for name, value in (("diffusion_form", diffusion_form), ("diffusion_norm", diffusion_norm),
                                              ("last_step_size", last_step_size)) if value is not None]
            given += ["last_step"] if last_step is not _UNSET else []
            if given:
                raise ValueError(f"{owner}: {', '.join(sorted(given))} only apply to mode='sde'.")
            self.diffusion_form, self.diffusion_norm, self.last_step, self.last_step_size = None, None, None, 0.0
        else:
            if reverse:
                raise ValueError(f"{owner}: reverse=True integrates the ODE only; use mode='ode'.")
            self.diffusion_form = "SBDM" if diffusion_form is None else diffusion_form
            diffusion_coefficient(self.diffusion_form, torch.zeros(1, 1), torch.full((1,), 0.5), self.interpolant)
            if diffusion_norm is not None and not _finite_number(diffusion_norm, 0.0, math.inf):
                raise ValueError(f"{owner}: diffusion_norm={diffusion_norm!r} must be a finite number >= 0 (it scales "
                                 "w(t), and the noise is sqrt(2 w)), e.g. 1.0.")
            self.diffusion_norm = 1.0 if diffusion_norm is None else float(diffusion_norm)
            self.last_step = "Mean" if last_step is _UNSET else last_step
            if self.last_step not in _LAST_STEPS:
                raise ValueError(f"{owner}: last_step must be one of {list(_LAST_STEPS)}, got {self.last_step!r}.")
            if last_step_size is not None and self.last_step is None:
                raise ValueError(f"{owner}: last_step_size={last_step_size!r} is the size of the last step, but "
                                 "last_step=None takes none; drop one of them.")
            if last_step_size is not None and not _finite_number(last_step_size, 0.0, 1.0):
                raise ValueError(f"{owner}: last_step_size={last_step_size!r} must be a number in [0, 1) (the "
                                 "integration stops at t1 = 1 - last_step_size), e.g. 0.04.")
            self.last_step_size = 0.0 if self.last_step is None else (0.04 if last_step_size is None else float(last_step_size))
        for name, flag in (("negate_velocity", negate_velocity), ("reverse", reverse)):
            check_flag(owner, name, flag)
        self.reverse = bool(reverse)
        family = BaseRungeKuttaIntegrator if mode == "ode" else BaseSDERungeKuttaIntegrator
        self.integrator = resolve_integrator(integrator, default="rk4" if mode == "ode" else "euler_maruyama",
                                             family=family, owner=owner)

    train_eps = scheduled_property("train_eps", positive=False)
    sample_eps = scheduled_property("sample_eps", positive=False)

    # -- the dynamics --------------------------------------------------------------------------

    def _output(self, x: Tensor, t: Tensor, model_kwargs: dict[str, Any]) -> Tensor:
        out = self.model(x, torch.zeros_like(t) if self.negate_velocity else t, **model_kwargs)
        if out.shape != x.shape:  # a (B, 1) or (D,) output would broadcast into a wrong drift
            raise ValueError(f"{type(self).__name__}.sample: the model returned shape {tuple(out.shape)} for x of shape "
                             f"{tuple(x.shape)}; model(x, t) must return its {self.prediction_type.value} shaped like x.")
        return -out if self.negate_velocity else out

    def _velocity_and_score(self, x: Tensor, t: Tensor, model_kwargs: dict[str, Any], need_score: bool):
        out = self._output(x, t, model_kwargs)
        kind = self.prediction_type.value
        velocity = velocity_from_prediction(kind, out, x, t, self.interpolant)
        return velocity, (score_from_prediction(kind, out, x, t, self.interpolant) if need_score else None)

    def _ode_drift(self, model_kwargs: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
        return lambda x, t: self._velocity_and_score(x, t, model_kwargs, False)[0]

    def _sde_drift(self, model_kwargs: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
        def drift(x: Tensor, t: Tensor) -> Tensor:
            velocity, score = self._velocity_and_score(x, t, model_kwargs, True)
            return velocity + self._diffusion(x, t) * score
        return drift

    def _diffusion(self, x: Tensor, t: Tensor) -> Tensor:
        return diffusion_coefficient(self.diffusion_form, x, t, self.interpolant, self.diffusion_norm)

    def _interval(self) -> tuple[float, float]:
        """[t0, t1] of the forward process (module docstring of the arguments)."""
        eps, sde = self.sample_eps, self.mode == "sde"
        end_margin = self.last_step_size if sde and self.last_step_size else eps
        if isinstance(self.interpolant, VariancePreservingInterpolant):
            return 0.0, 1.0 - end_margin
        singular_at_0 = self.prediction_type is not PredictionType.VELOCITY or (sde and self.diffusion_form == "SBDM")
        if isinstance(self.interpolant, (LinearInterpolant, CosineInterpolant)) and (singular_at_0 or sde):
            t0 = eps if singular_at_0 else 0.0
            if t0 == 0.0 and singular_at_0:
                raise ValueError(
                    f"{type(self).__name__}: with prediction={self.prediction_type.value!r}"
                    f"{' and the SBDM diffusion' if sde else ''} the drift is singular at t = 0; "
                    "set sample_eps > 0 (e.g. 1e-3)."
                )
            return t0, 1.0 - end_margin
        return 0.0, 1.0

    def _last_step(self, x: Tensor, t: Tensor, model_kwargs: dict[str, Any]) -> Tensor:
        h = self.last_step_size
        if self.last_step == "Mean":
            return x + h * self._sde_drift(model_kwargs)(x, t)
        if self.last_step == "Euler":
            return x + h * self._ode_drift(model_kwargs)(x, t)
        te = expand_t_like_x(t, x)
        alpha, _ = self.interpolant.compute_alpha_t(te)
        sigma, _ = self.interpolant.compute_sigma_t(te)
        score = self._velocity_and_score(x, t, model_kwargs, True)[1]
        return (x + sigma * sigma * score) / alpha

    # -- sampling ------------------------------------------------------------------------------

    def _run(self, x: Tensor, n_steps: int, thin: int, return_trajectory: bool, return_diagnostics: bool,
             generator: torch.Generator | None, model_kwargs: dict[str, Any]) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        t0, t1 = self._interval()
        if not t0 < t1:  # a margin of 1/2 or more ran the integration backwards, or not at all
            raise ValueError(f"{type(self).__name__}.sample: the time interval [t0, t1] = [{t0}, {t1}] is empty; "
                             f"sample_eps={self.sample_eps}{f' and last_step_size={self.last_step_size}' if self.mode == 'sde' else ''} "
                             "must leave t0 < t1 (e.g. sample_eps=1e-3).")
        grid = torch.linspace(t0, t1, n_steps + 1, dtype=x.dtype, device=x.device)
        dt = (t1 - t0) / n_steps  # a Python float: the updates fuse x + dt k into one kernel
        if self.reverse:
            grid, dt = grid.flip(0), -dt
        sde = self.mode == "sde"
        drift = self._sde_drift(model_kwargs) if sde else self._ode_drift(model_kwargs)
        n_kept = n_steps // thin
        trajectory = x.new_empty((x.shape[0], n_kept, *x.shape[1:])) if return_trajectory else None
        diag = ({"mean": x.new_empty((n_kept, *x.shape[1:])), "var": x.new_empty((n_kept, *x.shape[1:])),
                 "t": x.new_empty((n_kept,))} if return_diagnostics else None)
        schedulers = self._all_schedulers()
        for k in range(n_steps):
            t = grid[k].expand(x.shape[0])
            if sde:
                x = self.integrator.step({"x": x}, dt, drift=drift, diffusion=self._diffusion(x, t), t=t,
                                         generator=generator)["x"]
            else:
                x = self.integrator.update(x, drift, dt, t)
            for scheduler in schedulers:
                scheduler.step()
            if (k + 1) % thin == 0:
                self._keep(trajectory, diag, (k + 1) // thin - 1, x, grid[k + 1])
        if sde and self.last_step is not None:
            x = self._last_step(x, grid[-1].expand(x.shape[0]), model_kwargs)
            if n_steps % thin == 0:  # the recorded end is the returned sample
                self._keep(trajectory, diag, n_kept - 1, x, grid[-1] + self.last_step_size)
        out = trajectory if trajectory is not None else x
        return (out, diag) if diag is not None else out

    @staticmethod
    def _keep(trajectory: Tensor | None, diag: dict[str, Tensor] | None, kept: int, x: Tensor, t: Tensor) -> None:
        if trajectory is not None:
            trajectory[:, kept] = x
        if diag is not None:
            diag["mean"][kept] = x.mean(0)
            diag["var"][kept] = x.var(0, correction=0)
            diag["t"][kept] = t

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, mode={self.mode!r}, "
                f"interpolant={type(self.interpolant).__name__}, prediction={self.prediction_type.value!r}, "
                f"integrator={type(self.integrator).__name__})")
