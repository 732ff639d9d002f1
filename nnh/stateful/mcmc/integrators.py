r"""Integrators as objects, selectable by ``integrator=`` (a name or an instance) on the samplers.

Each is a thin shell over a pure update of `nnh.func.integrators`, with two uses:

- called directly, on a state dict, as ``step(state, step_size, ...)`` and
  ``integrate(state, step_size, n_steps, ...)``: ``{"x": ...}`` for ODE/SDE integrators,
  ``{"x": ..., "p": ...}`` for the symplectic ones;
- inside a sampler, through `chain_step` (Langevin-type samplers) or `trajectory` (HMC-type),
  which the built-in integrators map to the pure chain steps of `nnh.func`, so selecting one
  costs nothing per step.

| name | class | family |
|---|---|---|
| ``"euler_maruyama"`` (``"euler"``) | `EulerMaruyamaIntegrator` | SDE (Langevin, FlowSampler) |
| ``"heun"`` | `HeunIntegrator` | SDE |
| ``"rk4"`` | `RK4Integrator` | ODE (FlowSampler) |
| ``"leapfrog"`` | `LeapfrogIntegrator` | separable Hamiltonian (HMC) |
| ``"generalised_leapfrog"`` (``"generalized_leapfrog"``) | `GeneralisedLeapfrogIntegrator` | non-separable (RMHMC) |

Integrators hold no tensors: ``device`` and ``dtype`` are accepted and recorded for code written
against other libraries, and the state's own device and dtype are used.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from nnh._init_record import RecordsInit
from nnh.func.energy_grad import EnergyAndGrad
from nnh.func.integrators import euler_maruyama_update, generalised_leapfrog, heun_update, leapfrog, rk4_update
from nnh.func.mcmc import ChainState, StepInfo, heun_langevin_step, langevin_step, reject_nonfinite

__all__ = [
    "BaseIntegrator",
    "BaseRungeKuttaIntegrator",
    "BaseSDERungeKuttaIntegrator",
    "BaseSymplecticIntegrator",
    "EulerMaruyamaIntegrator",
    "GeneralisedLeapfrogIntegrator",
    "HeunIntegrator",
    "LeapfrogIntegrator",
    "RK4Integrator",
    "get_integrator",
    "resolve_integrator",
]

_SAFE_LIMIT = 1e6  # the magnitude bound of safe=True (forces, momenta and positions)


def _time(x: Tensor, t: Tensor | float | None) -> Tensor:
    if t is None:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    return torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])


def _grid(x: Tensor, step_size: float | Tensor, n_steps: int, t: Tensor | None) -> Tensor:
    if t is None:
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"integrate: n_steps must be an int >= 1, got {n_steps!r}.")
        return torch.arange(n_steps + 1, dtype=x.dtype, device=x.device) * step_size
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"integrate: t must be a 1-D time grid of length >= 2, got shape {tuple(t.shape)}.")
    return t.to(dtype=x.dtype, device=x.device)


def _need(owner: str, name: str, fn: Any) -> Any:
    if not callable(fn):
        raise ValueError(f"{owner}: pass {name}=... as a callable; got {fn!r}.")
    return fn


class BaseIntegrator(RecordsInit):
    """Base of every integrator; ``name`` is its registry name."""

    name: str = ""

    def __init__(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BaseRungeKuttaIntegrator(BaseIntegrator):
    """An explicit one-step ODE scheme for :math:`\\dot x = f(x, t)`; subclasses define `update`."""

    def update(self, x: Tensor, drift: Callable[[Tensor, Tensor], Tensor], step_size: float | Tensor,
               t: Tensor) -> Tensor:
        """The deterministic step from x at time t (B,)."""
        raise NotImplementedError(f"{type(self).__name__} must define update(x, drift, step_size, t).")

    def step(self, state: dict[str, Tensor], step_size: float | Tensor, *, drift: Callable | None = None,
             t: Tensor | float | None = None) -> dict[str, Tensor]:
        """One step of size ``step_size`` from ``state["x"]`` at time t (default 0): ``{"x": x'}``."""
        x = state["x"]
        return {"x": self.update(x, _need(type(self).__name__, "drift", drift), step_size, _time(x, t))}

    def integrate(self, state: dict[str, Tensor], step_size: float | Tensor, n_steps: int, *,
                  drift: Callable | None = None, t: Tensor | None = None) -> dict[str, Tensor]:
        """Integrate over the 1-D time grid ``t`` (default: ``n_steps`` steps of ``step_size`` from 0)."""
        x = state["x"]
        drift = _need(type(self).__name__, "drift", drift)
        grid = _grid(x, step_size, n_steps, t)
        for i in range(grid.numel() - 1):
            x = self.update(x, drift, grid[i + 1] - grid[i], grid[i].expand(x.shape[0]))
        return {"x": x}


class BaseSDERungeKuttaIntegrator(BaseRungeKuttaIntegrator):
    r"""`update` for the drift, then additive noise :math:`\sqrt{2 D h}\,\xi` with the diffusion
    D given directly or as :math:`D = s^2` by ``noise_scale`` (Euler-Maruyama order)."""

    #: the pure Langevin chain step of `nnh.func` that this integrator amounts to, if any.
    _langevin_step: Callable | None = None

    def step(self, state: dict[str, Tensor], step_size: float | Tensor, *, drift: Callable | None = None,
             diffusion: Tensor | float | None = None, noise: Tensor | None = None,
             noise_scale: float | Tensor | None = None, t: Tensor | float | None = None,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One step; without ``diffusion`` and ``noise_scale`` it is the ODE step."""
        x = state["x"]
        x_new = self.update(x, _need(type(self).__name__, "drift", drift), step_size, _time(x, t))
        d = diffusion if diffusion is not None else (None if noise_scale is None else noise_scale**2)
        if d is None:
            return {"x": x_new}
        # sqrt(2 D h) of a negative Python number is complex: the state became a complex tensor, silently.
        for name, value in (("step_size", step_size), ("diffusion", d)):
            if isinstance(value, (int, float)) and not value >= 0:
                raise ValueError(f"{type(self).__name__}.step: {name}={value!r} with noise must be a number >= 0 "
                                 "(the noise is sqrt(2 D h)); integrate an SDE forward in time.")
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return {"x": x_new + (2.0 * d * step_size) ** 0.5 * noise}

    def integrate(self, state: dict[str, Tensor], step_size: float | Tensor, n_steps: int, *,
                  drift: Callable | None = None, diffusion: Callable | None = None,
                  noise_scale: float | Tensor | None = None, t: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Integrate over a time grid; ``diffusion(x, t)`` or a constant ``noise_scale`` adds noise."""
        x = state["x"]
        drift = _need(type(self).__name__, "drift", drift)
        grid = _grid(x, step_size, n_steps, t)
        for i in range(grid.numel() - 1):
            t_i = grid[i].expand(x.shape[0])
            d = diffusion(x, t_i) if diffusion is not None else None
            x = self.step({"x": x}, grid[i + 1] - grid[i], drift=drift, diffusion=d, noise_scale=noise_scale,
                          t=t_i, generator=generator)["x"]
        return {"x": x}

    def chain_step(self, state: ChainState, energy_and_grad: EnergyAndGrad, step_size: float, noise_scale: float,
                   *, noise: Tensor, decay: float = 0.0, clamp: tuple[float, float] | None = None,
                   ) -> tuple[ChainState, StepInfo]:
        """One Langevin transition with this integrator: drift :math:`-\\nabla U - \\lambda x`,
        noise scale s. The built-in integrators call their pure step of `nnh.func`; a subclass
        without one goes through `step` (one more gradient evaluation per step)."""
        if self._langevin_step is not None:
            return self._langevin_step(state, energy_and_grad, step_size, noise_scale, noise=noise,
                                       decay=decay, clamp=clamp)
        x_new = self.step({"x": state.x}, step_size, noise=noise, noise_scale=noise_scale,
                          drift=lambda y, t: -energy_and_grad(y)[1] - decay * y)["x"]
        if clamp is not None:
            x_new = x_new.clamp(clamp[0], clamp[1])
        return reject_nonfinite(state, ChainState(x_new, *energy_and_grad(x_new)), check_energy=False)


class EulerMaruyamaIntegrator(BaseSDERungeKuttaIntegrator):
    r""":math:`x' = x + h f(x, t) + \sqrt{2 D h}\,\xi` (`nnh.func.euler_maruyama_update`); Langevin
    chains use `nnh.func.langevin_step`."""

    name = "euler_maruyama"
    _langevin_step = staticmethod(langevin_step)

    def update(self, x, drift, step_size, t):
        return euler_maruyama_update(x, drift(x, t), step_size)


class HeunIntegrator(BaseSDERungeKuttaIntegrator):
    """Heun's predictor-corrector for the drift (`nnh.func.heun_update`); Langevin chains use
    `nnh.func.heun_langevin_step` (two gradients per step)."""

    name = "heun"
    _langevin_step = staticmethod(heun_langevin_step)

    def update(self, x, drift, step_size, t):
        return heun_update(x, drift, step_size, t)


class RK4Integrator(BaseRungeKuttaIntegrator):
    """The classical fourth-order Runge-Kutta step (`nnh.func.rk4_update`), for ODEs."""

    name = "rk4"

    def update(self, x, drift, step_size, t):
        return rk4_update(x, drift, step_size, t)


class BaseSymplecticIntegrator(BaseIntegrator):
    """Hamiltonian dynamics on ``{"x": position, "p": momentum}``. ``separable`` tells which
    Hamiltonians it integrates: U(x) + K(p) (HMC) or a general H(x, p) (RMHMC)."""

    separable: bool = True

    @staticmethod
    def _safe(t: Tensor) -> Tensor:
        return torch.nan_to_num(t, nan=0.0).clamp_(-_SAFE_LIMIT, _SAFE_LIMIT)


class LeapfrogIntegrator(BaseSymplecticIntegrator):
    r"""Stormer-Verlet for :math:`H = U(x) + \tfrac12 p^\top M^{-1} p` (`nnh.func.leapfrog`), with
    ``drift(x, t)`` = :math:`-\nabla U(x)` and ``mass`` None, a float or a per-coordinate tensor."""

    name = "leapfrog"
    separable = True

    def step(self, state: dict[str, Tensor], step_size: float | Tensor = None, mass: float | Tensor | None = None,
             *, drift: Callable | None = None, safe: bool = False) -> dict[str, Tensor]:
        """One leapfrog step (two drift evaluations): ``{"x": x', "p": p'}``."""
        return self.integrate(state, step_size, 1, mass, drift=drift, safe=safe)

    def integrate(self, state: dict[str, Tensor], step_size: float | Tensor = None, n_steps: int = None,
                  mass: float | Tensor | None = None, *, drift: Callable | None = None,
                  safe: bool = False) -> dict[str, Tensor]:
        """``n_steps`` leapfrog steps; ``safe=True`` bounds forces and states to 1e6 and turns NaN
        into 0 (the samplers reject non-finite proposals instead)."""
        drift = _need(type(self).__name__, "drift", drift)
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"{type(self).__name__}.integrate: n_steps must be an int >= 1, got {n_steps!r}.")
        x, p = state["x"], state["p"]
        t = _time(x, None)

        def energy_and_grad(y: Tensor) -> tuple[Tensor, Tensor]:
            force = drift(y, t)
            return y.new_empty(0), -(self._safe(force) if safe else force)

        x, p, _, _ = leapfrog(x, p, energy_and_grad(x)[1], energy_and_grad, step_size, n_steps,
                              1.0 if mass is None else mass)
        return {"x": self._safe(x), "p": self._safe(p)} if safe else {"x": x, "p": p}

    def trajectory(self, x: Tensor, p: Tensor, grad: Tensor, energy_and_grad: EnergyAndGrad, step_size: float,
                   n_steps: int, mass: float | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`nnh.func.leapfrog` for the HMC step; a subclass overriding `integrate` is used through it."""
        if type(self).integrate is LeapfrogIntegrator.integrate:
            return leapfrog(x, p, grad, energy_and_grad, step_size, n_steps, mass)
        out = self.integrate({"x": x, "p": p}, step_size, n_steps, mass, drift=lambda y, t: -energy_and_grad(y)[1])
        return (out["x"], out["p"], *energy_and_grad(out["x"]))


class GeneralisedLeapfrogIntegrator(BaseSymplecticIntegrator):
    r"""The implicit generalised leapfrog for a non-separable H (`nnh.func.generalised_leapfrog`),
    with ``force(x, p, t)`` = :math:`-\partial H/\partial x` and ``velocity(x, p, t)`` =
    :math:`\partial H/\partial p`.

    Args:
        solver_max_iter: fixed-point iterations per implicit equation (>= 1).
        solver_tol, solver_check_every: with ``solver_check_every`` > 0, every that many
            iterations the RMS change is compared with ``solver_tol`` and the iteration stops
            below it (one host sync per check); 0 (the default) runs all iterations, no sync.
    """

    name = "generalised_leapfrog"
    separable = False

    def __init__(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 solver_max_iter: int = 8, solver_tol: float = 1e-6, solver_check_every: int = 0) -> None:
        super().__init__(device, dtype)
        owner = type(self).__name__
        if isinstance(solver_max_iter, bool) or not isinstance(solver_max_iter, int) or solver_max_iter < 1:
            raise ValueError(f"{owner}: solver_max_iter must be an int >= 1, got {solver_max_iter!r}.")
        if isinstance(solver_check_every, bool) or not isinstance(solver_check_every, int) or solver_check_every < 0:
            raise ValueError(f"{owner}: solver_check_every must be an int >= 0, got {solver_check_every!r}.")
        if isinstance(solver_tol, bool) or not isinstance(solver_tol, (int, float)) or not 0 < solver_tol < math.inf:
            raise ValueError(f"{owner}: solver_tol must be a finite number > 0, got {solver_tol!r}.")
        self.solver_max_iter = solver_max_iter
        self.solver_tol = float(solver_tol)
        self.solver_check_every = solver_check_every

    def step(self, state: dict[str, Tensor], step_size: float | Tensor = None, *, force: Callable | None = None,
             velocity: Callable | None = None, safe: bool = False) -> dict[str, Tensor]:
        """One generalised leapfrog step: ``{"x": x', "p": p'}``."""
        return self.integrate(state, step_size, 1, force=force, velocity=velocity, safe=safe)

    def integrate(self, state: dict[str, Tensor], step_size: float | Tensor = None, n_steps: int = None, *,
                  force: Callable | None = None, velocity: Callable | None = None,
                  safe: bool = False) -> dict[str, Tensor]:
        """``n_steps`` steps; ``safe=True`` bounds the forces and the state to 1e6, NaN to 0."""
        owner = type(self).__name__
        force, velocity = _need(owner, "force", force), _need(owner, "velocity", velocity)
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"{owner}.integrate: n_steps must be an int >= 1, got {n_steps!r}.")
        x, p = state["x"], state["p"]
        t = _time(x, None)
        bound = self._safe if safe else (lambda v: v)
        x, p = self.trajectory(x, p, lambda y, q: bound(force(y, q, t)), lambda y, q: velocity(y, q, t),
                               step_size, n_steps)
        return {"x": bound(x), "p": bound(p)}

    def trajectory(self, x: Tensor, p: Tensor, force: Callable, velocity: Callable, step_size: float,
                   n_steps: int) -> tuple[Tensor, Tensor]:
        """`nnh.func.generalised_leapfrog` with this integrator's solver settings."""
        tol = self.solver_tol if self.solver_check_every else None
        return generalised_leapfrog(x, p, force, velocity, step_size, n_steps, self.solver_max_iter,
                                    tol=tol, check_every=self.solver_check_every)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(solver_max_iter={self.solver_max_iter})"


_REGISTRY: dict[str, type[BaseIntegrator]] = {
    "euler": EulerMaruyamaIntegrator,
    "euler_maruyama": EulerMaruyamaIntegrator,
    "heun": HeunIntegrator,
    "rk4": RK4Integrator,
    "leapfrog": LeapfrogIntegrator,
    "generalised_leapfrog": GeneralisedLeapfrogIntegrator,
    "generalized_leapfrog": GeneralisedLeapfrogIntegrator,
}


def get_integrator(name: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> BaseIntegrator:
    """A new integrator of the registry name ``name``, with default settings."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown integrator {name!r}; known names: {', '.join(sorted(_REGISTRY))}.")
    return cls(device=device, dtype=dtype)


def resolve_integrator(integrator: str | BaseIntegrator | None, *, default: str, family: type[BaseIntegrator],
                       owner: str) -> BaseIntegrator:
    """A sampler's ``integrator=`` argument as an instance of ``family``: None is ``default``, a
    name is looked up, an instance is used as it is. A wrong kind raises TypeError."""
    if integrator is None or isinstance(integrator, str):
        name = default if integrator is None else integrator
        try:
            resolved = get_integrator(name)
        except ValueError as err:
            raise ValueError(f"{owner}: {err}") from None
    elif isinstance(integrator, BaseIntegrator):
        resolved = integrator
    else:
        raise TypeError(f"{owner}: integrator must be None, a name or an nnh integrator, got {type(integrator).__name__}.")
    if not isinstance(resolved, family):
        raise TypeError(f"{owner}: needs a {family.__name__} integrator, got {type(resolved).__name__}.")
    return resolved
