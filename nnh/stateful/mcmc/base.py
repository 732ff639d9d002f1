r"""`BaseSampler`: the shared shell of the MCMC samplers (scheduler registry, the sampling loop).

A subclass implements one of two things:

- one transition, ``_transition(state, generator) -> (state, StepInfo)``, usually a call to a
  pure step of `nnh.func.mcmc`; `BaseSampler.sample` does the rest: initial state, the
  scheduler clock, thinning, the trajectory and the diagnostics;
- or its own ``sample(...)`` loop, using the scheduler registry (`register_scheduler`,
  `get_scheduled_value`, `step_schedulers`, `reset_schedulers`), ``self.model``,
  ``self.dtype`` and ``self.device``.

Scheduled values. A parameter registered with ``positive=True`` (every step size, MALA's noise
scale) must be finite and > 0 at every step, one with ``positive=False`` (Langevin's noise
scale) finite and >= 0. `sample` tests the value of each step before using it and refuses a
schedule that leaves the bound (a cosine to 0, an exponential decay that underflows, a line
that crosses 0) with a ValueError naming the parameter, the step and the value. A zero step
is refused rather than read as "no move": MALA's proposal density divides by h s^2 and HMC
would accept a trajectory of length 0 every time, so a zero would either fail or silently
freeze the chains. The values are Python floats, so the test costs no host sync.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Union

import torch
from torch import Tensor

from nnh.func.mcmc import ChainState, StepInfo, energy_and_grad_fn, event_sum, init_chain_state
from nnh.func.mcmc import _check_energy_shape  # the one wording of the (B,) energy error
from nnh.stateful.mcmc.schedulers import BaseScheduler, ConstantScheduler
from nnh.stateful.sampler import Sampler

__all__ = ["BaseSampler"]

ScheduledValue = Union[float, int, BaseScheduler]


def _event_shape(owner: str, dim: Any) -> tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, torch.Size):
        dim = tuple(dim)
    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
        return (dim,)
    if isinstance(dim, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dim):
        return tuple(dim)
    raise ValueError(f"{owner}: dim must be a positive int or a tuple of them (the event shape), got {dim!r}.")


def _count(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}.")
    return value


def _no_transition(owner: str) -> NotImplementedError:
    return NotImplementedError(
        f"{owner} implements neither _transition nor sample: define "
        "_transition(self, state, generator) -> (state, StepInfo | None) to use BaseSampler.sample, "
        "or override sample(...) with your own loop."
    )


class BaseSampler(Sampler):
    """Shell of an MCMC sampler over ``model``, an ``nn.Module`` (or callable) with (B,) energies.

    Args:
        model: the energy U; an `nnh.BaseModel` supplies its own (often analytic) gradient,
            anything else is differentiated with autograd.
        dtype, device: of the chains; device None follows ``x``, then the model's parameters.
        dim: default event shape (int or tuple) when `sample` gets neither ``x`` nor ``dim``.
        n_steps: default number of steps of `sample`.
    """

    #: whether the sampler has a Metropolis test (adds ``acceptance_rate`` to the diagnostics).
    has_acceptance: bool = False

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        owner = type(self).__name__
        if not callable(model):
            raise TypeError(f"{owner}: model must be an nn.Module or callable returning (B,) energies, got {model!r}.")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"{owner}: dtype must be a floating torch.dtype, got {dtype!r}.")
        self.model = model
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.dim = _event_shape(owner, dim)
        self.n_steps = _count(owner, "n_steps", n_steps)
        self.schedulers: dict[str, BaseScheduler] = {}
        self._positive: dict[str, bool] = {}  # the bound of each registered value: > 0 or >= 0
        self._energy_and_grad = energy_and_grad_fn(model)

    # -- scheduler registry: a dict, so stepping costs O(number of schedulers) per step --------

    def register_scheduler(self, name: str, scheduler: ScheduledValue, *, positive: bool = True) -> None:
        """Register ``scheduler`` (or a number, wrapped in `ConstantScheduler`) under ``name``.

        Its value must be finite and > 0 (``positive=False``: >= 0): now, and at every step of
        `sample`, which raises ValueError at the first step that breaks the bound."""
        if isinstance(scheduler, BaseScheduler):
            start = scheduler.get_value()
        elif isinstance(scheduler, (int, float)) and not isinstance(scheduler, bool):
            start = float(scheduler)
        else:
            raise TypeError(
                f"{type(self).__name__}: {name} must be a number or an nnh scheduler, got {type(scheduler).__name__}."
            )
        if not math.isfinite(start) or (start <= 0 if positive else start < 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{type(self).__name__}: {name} must be finite and {bound}, got {start!r}.")
        self.schedulers[name] = scheduler if isinstance(scheduler, BaseScheduler) else ConstantScheduler(start)
        self._positive[name] = positive

    def get_scheduled_value(self, name: str) -> float:
        """The current value of the scheduler registered as ``name``."""
        try:
            return self.schedulers[name].get_value()
        except KeyError:
            raise KeyError(f"{type(self).__name__}: no scheduler named {name!r}; registered: {sorted(self.schedulers)}.") from None

    def step_schedulers(self) -> None:
        """Advance every registered scheduler by one step."""
        for scheduler in self.schedulers.values():
            scheduler.step()

    def reset_schedulers(self) -> None:
        """Put every registered scheduler back at step 0."""
        for scheduler in self.schedulers.values():
            scheduler.reset()

    # -- the Sampler ABC -----------------------------------------------------------------------

    def save(self) -> dict[str, Any]:
        """Plain-value state: each scheduler's ``state_dict()`` (its step count and value)."""
        return {"schedulers": {name: s.state_dict() for name, s in self.schedulers.items()}}

    def load(self, state_dict: dict[str, Any]) -> "BaseSampler":
        """Restore what `save` returned; the schedulers must be registered under the same names."""
        saved = state_dict.get("schedulers", {})
        unknown = sorted(set(saved) - set(self.schedulers))
        if unknown:
            raise KeyError(
                f"{type(self).__name__}.load: the state has schedulers {unknown} that this sampler does not register "
                f"(it has {sorted(self.schedulers)}); build it with the same arguments as the saved one."
            )
        for name, state in saved.items():
            self.schedulers[name].load_state_dict(state)
        return self

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "BaseSampler":
        """Set the device and dtype of future chains (the model is not moved)."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        return self

    # -- hooks for subclasses ----------------------------------------------------------------

    def _prepare(self, x: Tensor) -> None:
        """Called once per `sample` with the initial x, before the first step (e.g. to place a mass)."""

    def _init_state(self, x: Tensor) -> ChainState:
        state = init_chain_state(x, self._energy_and_grad)
        _check_energy_shape(type(self).__name__, state.energy, x.shape[0])
        return state

    def _check_scheduled_values(self, k: int) -> None:
        """Raise if a registered value for step ``k`` of this run leaves its bound (see the module
        docstring). Python floats only: no host sync."""
        for name, scheduler in self.schedulers.items():
            positive = self._positive.get(name)
            if positive is None:  # put in self.schedulers directly: no declared bound
                continue
            value = scheduler.get_value()
            if not (0.0 < value < math.inf if positive else 0.0 <= value < math.inf):
                bound = "> 0" if positive else ">= 0"
                clock = "" if scheduler.step_count == k else f" (scheduler step {scheduler.step_count})"
                raise ValueError(
                    f"{type(self).__name__}.sample: {name} must be finite and {bound} at every step, but its "
                    f"scheduler gives {value!r} at step {k} of this run{clock}; "
                    f"keep the schedule {bound} (end_value {bound}, ExponentialDecayScheduler(..., min_value=...)) "
                    "or run fewer steps."
                )

    def _stuck_chains(self, state: ChainState) -> Tensor:
        """(B,) bool: chains at a non-finite state, which no transition moves: a finite state never
        leads to a non-finite one, so these chains have not moved since their start. Metropolis
        samplers need a finite energy; Langevin dynamics only a finite x and gradient."""
        total = event_sum(state.x + state.grad)
        if self.has_acceptance:
            total = total + state.energy
        return ~torch.isfinite(total)

    def _transition(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo | None]:
        """One transition with the current scheduled values. Returns the new state and its
        `StepInfo`, or None when the step guarantees every chain is finite and moved.

        Not abstract: a subclass that overrides `sample` itself needs none."""
        raise _no_transition(type(self).__name__)

    def _energy_for_diagnostics(self, state: ChainState) -> Tensor:
        return state.energy

    # -- sampling ----------------------------------------------------------------------------

    def _initial_x(self, n: int | None, device: Any, x: Tensor | None, dim: Any, n_samples: int,
                   generator: torch.Generator | None) -> Tensor:
        owner = f"{type(self).__name__}.sample"
        if x is not None:
            if not isinstance(x, Tensor) or x.ndim < 1:
                raise ValueError(f"{owner}: x must be a tensor of shape (B, *event_shape), got {x!r}.")
            if n is not None and n != x.shape[0]:
                raise ValueError(f"{owner}: N={n} but x has {x.shape[0]} chains; pass one of them.")
            target = device if device is not None else (self.device if self.device is not None else x.device)
            return x.detach().to(device=target, dtype=self.dtype)
        if n is not None and n_samples != 1 and n != n_samples:
            raise ValueError(f"{owner}: N={n} and n_samples={n_samples} disagree; pass one of them.")
        n = _count(owner, "N (n_samples)", n if n is not None else n_samples)
        event = _event_shape(owner, dim) or self.dim or _event_shape(owner, getattr(self.model, "event_shape", None))
        if event is None:
            raise ValueError(
                f"{owner}: unknown event shape; pass x=..., or dim=... here or to the constructor "
                f"({type(self).__name__}(model, ..., dim=2))."
            )
        if device is None:
            device = self.device
        if device is None:
            params = getattr(self.model, "parameters", None)
            first = next(iter(params()), None) if callable(params) else None
            device = first.device if first is not None else torch.device("cpu")
        gen_device = generator.device if generator is not None else device
        return torch.randn((n, *event), generator=generator, dtype=self.dtype, device=gen_device).to(device)

    @torch.no_grad()
    def sample(
        self,
        N: int | Tensor | None = None,
        device: torch.device | str | None = None,
        *,
        x: Tensor | None = None,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int | None = None,
        n_samples: int = 1,
        thin: int = 1,
        return_trajectory: bool = False,
        return_diagnostics: bool = False,
        reset_schedulers: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Run the chains and return the final samples, or the trajectory.

        Serves both call forms: ``sample(N, device)`` (the `nnh.Sampler` ABC, used by
        ``handler.get_samples(N)``) and keywords (``sample(x=x0, n_steps=1000, ...)``); a
        tensor passed as the first positional argument is taken as ``x``.

        Args:
            N: number of chains (same as ``n_samples``); ignored when ``x`` is given.
            device: where the chains live (default: x's device, then the sampler's, then the model's).
            x: initial state (B, *event_shape); default standard normal of shape (N, *dim).
            dim: event shape when x is None (default: the constructor's ``dim``).
            n_steps: transitions to run (default: the constructor's ``n_steps``).
            thin: keep every ``thin``-th state: n_kept = n_steps // thin.
            return_trajectory: return (B, n_kept, *event_shape) instead of the final (B, *event_shape).
            return_diagnostics: also return a dict, one entry per kept step: ``mean`` and ``var``
                over chains (n_kept, *event_shape), mean ``energy`` (n_kept,), ``acceptance_rate``
                (n_kept,) for Metropolis samplers (averaged over the thinning window), and
                ``n_nonfinite`` (n_kept,) int64: non-finite proposals rejected in the window.
            reset_schedulers: start the schedulers from step 0; False continues their clock
                from the previous call (annealing across the calls of a training loop).
            generator: a torch.Generator for every random draw (default: the global RNG).

        Raises ValueError at the first step whose scheduled value leaves its bound (module
        docstring). Warns (RuntimeWarning, once per call) when chains end at a non-finite start
        they could never leave; counted once on the host after the loop.
        """
        owner = f"{type(self).__name__}.sample"
        if type(self)._transition is BaseSampler._transition:
            raise _no_transition(type(self).__name__)  # before any model evaluation
        if isinstance(N, Tensor):
            if x is not None:
                raise ValueError(f"{owner}: got a tensor as N and x=...; pass the initial state once.")
            x, N = N, None
        n_steps = self.n_steps if n_steps is None else _count(owner, "n_steps", n_steps)
        thin = _count(owner, "thin", thin)
        if thin > n_steps:
            raise ValueError(f"{owner}: thin={thin} > n_steps={n_steps} keeps no state; use thin <= n_steps.")
        x0 = self._initial_x(N, device, x, dim, n_samples, generator)
        if reset_schedulers:
            self.reset_schedulers()
        self._prepare(x0)
        state = self._init_state(x0)
        n_kept = n_steps // thin
        trajectory = x0.new_empty((x0.shape[0], n_kept, *x0.shape[1:])) if return_trajectory else None
        diag = self._new_diagnostics(x0, n_kept) if return_diagnostics else None
        accepted_sum = x0.new_zeros(()) if diag is not None and self.has_acceptance else None
        nonfinite_sum = torch.zeros((), dtype=torch.int64, device=x0.device) if diag is not None else None
        for k in range(n_steps):
            self._check_scheduled_values(k)
            state, info = self._transition(state, generator)
            self.step_schedulers()
            if diag is not None and info is not None:
                nonfinite_sum += (~info.finite).sum()
                if accepted_sum is not None:
                    accepted_sum += info.accepted.sum()
            if (k + 1) % thin:
                continue
            kept = (k + 1) // thin - 1
            if trajectory is not None:
                trajectory[:, kept] = state.x
            if diag is not None:
                self._record(diag, kept, state, x0.shape[0] * thin, accepted_sum, nonfinite_sum)
        n_stuck = int(self._stuck_chains(state).sum())  # the one host sync of sample, after the loop
        if n_stuck:
            warnings.warn(
                f"{owner}: {n_stuck} of {x0.shape[0]} chains never moved: their start has a non-finite "
                f"{'position, energy or gradient' if self.has_acceptance else 'position or gradient'} (NaN or inf), "
                "so every proposal from it is rejected; start them where the model and its gradient are finite.",
                RuntimeWarning,
                stacklevel=2,
            )
        out = trajectory if trajectory is not None else state.x
        return (out, diag) if diag is not None else out

    def _new_diagnostics(self, x0: Tensor, n_kept: int) -> dict[str, Tensor]:
        event = x0.shape[1:]
        diag = {
            "mean": x0.new_empty((n_kept, *event)),
            "var": x0.new_empty((n_kept, *event)),
            "energy": x0.new_empty((n_kept,)),
            "n_nonfinite": torch.zeros((n_kept,), dtype=torch.int64, device=x0.device),
        }
        if self.has_acceptance:
            diag["acceptance_rate"] = x0.new_empty((n_kept,))
        return diag

    def _record(self, diag: dict[str, Tensor], kept: int, state: ChainState, window: int,
                accepted_sum: Tensor | None, nonfinite_sum: Tensor) -> None:
        # Written on the device, with no host sync: the loop never waits for these numbers.
        diag["mean"][kept] = state.x.mean(dim=0)
        diag["var"][kept] = state.x.var(dim=0, correction=0)
        diag["energy"][kept] = self._energy_for_diagnostics(state).mean()
        diag["n_nonfinite"][kept] = nonfinite_sum
        nonfinite_sum.zero_()
        if accepted_sum is not None:
            diag["acceptance_rate"][kept] = accepted_sum / window
            accepted_sum.zero_()

