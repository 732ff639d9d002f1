r"""`BaseSampler`: the shared shell of the MCMC samplers (scheduler registry, the sampling loop).

A subclass implements one of two things:

- one transition, ``_transition(state, generator) -> (state, StepInfo)``, usually a call to a
  pure step of `nnh.func`; `BaseSampler.sample` does the rest: initial state, conditioning,
  the scheduler clock, thinning, the trajectory and the diagnostics;
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
from typing import Any, Callable

import torch
from torch import Tensor

from nnh.func.energy_grad import conditioned_energy_and_grad
from nnh.func.mcmc import ChainState, StepInfo, event_sum, init_chain_state, reject_nonfinite
from nnh.func.mcmc import _check_energy_shape  # the one wording of the (B,) energy error
from nnh.stateful._dtype import resolve_dtype
from nnh.stateful.checks import check_device, check_flag
from nnh.stateful.mcmc._sample_args import count as _count
from nnh.stateful.mcmc._sample_args import event_shape as _event_shape
from nnh.stateful.mcmc._sample_args import initial_state, merge_condition, resolve_call_form
from nnh.stateful.mcmc.schedulable import Schedulable, ScheduledValue
from nnh.stateful.sampler import Sampler

__all__ = ["BaseSampler", "ScheduledValue"]


def _no_transition(owner: str) -> NotImplementedError:
    return NotImplementedError(
        f"{owner} implements neither _transition nor sample: define "
        "_transition(self, state, generator) -> (state, StepInfo | None) to use BaseSampler.sample, "
        "or override sample(...) with your own loop."
    )


class BaseSampler(Schedulable, Sampler):
    """Shell of an MCMC sampler over ``model``, an ``nn.Module`` (or callable) with (B,) energies.

    Args:
        model: the energy U; an `nnh.BaseModel` supplies its own (often analytic) gradient,
            anything else is differentiated with autograd.
        dtype, device: of the chains. dtype None (the default) is the model's, read once here:
            ``model.dtype``, else its first floating parameter or buffer, else
            ``torch.get_default_dtype()``; ``sampler.dtype`` reports the result. device None (the
            default, and what ``sampler.device`` reports until set) follows ``x``, then the
            model's parameters.
        dim: default event shape (int or tuple) when `sample` gets neither ``x`` nor ``dim``.
        n_steps: default number of steps of `sample`.

    Attributes:
        n_nonfinite: (n_kept,) int64, the non-finite proposals rejected in each kept window of
            the last ``sample(..., return_diagnostics=True)`` call (None before one).
    """

    #: whether the sampler has a Metropolis test (adds ``acceptance_rate`` to the diagnostics).
    has_acceptance: bool = False
    #: the per-step statistics `sample` records (optimisers keep only ``energy``).
    diagnostic_keys: tuple[str, ...] = ("mean", "var", "energy")

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        dim: int | tuple[int, ...] | None = None,
        n_steps: int = 100,
    ) -> None:
        owner = type(self).__name__
        if not callable(model):
            raise TypeError(f"{owner}: model must be an nn.Module or callable returning (B,) energies, got {model!r}.")
        self.model = model
        self.dtype = resolve_dtype(owner, dtype, model)
        self.device = check_device(device, owner) if device is not None else None
        self.dim = _event_shape(owner, dim)
        self.n_steps = _count(owner, "n_steps", n_steps)
        self._init_schedulers()
        self.n_nonfinite: Tensor | None = None
        self._use_model_fns({})

    def _use_model_fns(self, model_kwargs: dict[str, Any]) -> None:
        """Point ``_energy_and_grad`` and ``_gradient`` at the model, conditioned on
        ``model_kwargs`` ({} for the unconditional model, whose own methods are used)."""
        self._energy_and_grad = conditioned_energy_and_grad(self.model, model_kwargs)
        gradient = getattr(self.model, "gradient", None)
        if model_kwargs or not callable(gradient):
            eg = self._energy_and_grad
            gradient = lambda x: eg(x)[1]  # noqa: E731
        self._gradient = gradient

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
            self.device = check_device(device, f"{type(self).__name__}.to")
        if dtype is not None:
            self.dtype = resolve_dtype(f"{type(self).__name__}.to", dtype, self.model)
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

    def _keep_finite(self, state: ChainState, x_new: Tensor, grad_new: Tensor) -> tuple[ChainState, StepInfo | None]:
        """For gradient-only dynamics: move to ``x_new`` (with its gradient) every chain whose
        new position and gradient are finite, keep the others; the energy is left unevaluated
        (None), for `_energy_for_diagnostics` to compute where it is reported.

        On the CPU one finiteness test of the whole batch replaces the per-chain torch.where,
        which costs more than an analytic gradient on small states; reading a CPU flag is not a
        device sync. sum(x * grad) is finite iff no chain has a non-finite x or grad (inf * 0 and
        inf - inf are NaN), barring an overflow, which only sends us to the exact per-chain
        path: 4 us against 9 us for two sums and isfinite. Not torch.dot: BLAS opens a thread
        pool region, which waits milliseconds for a busy core (benchmarks/mcmc.py)."""
        if x_new.is_cpu and math.isfinite((x_new * grad_new).sum().item()):
            return ChainState(x_new, None, grad_new), None  # type: ignore[arg-type]
        energy = x_new.new_zeros(x_new.shape[0])  # a stand-in: only x and grad decide
        kept, info = reject_nonfinite(ChainState(state.x, energy, state.grad), ChainState(x_new, energy, grad_new),
                                      check_energy=False)
        return ChainState(kept.x, None, kept.grad), info  # type: ignore[arg-type]

    # -- sampling ----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        x: Tensor | int | None = None,
        dim: int | tuple[int, ...] | str | torch.device | None = None,
        n_steps: int | None = None,
        n_samples: int = 1,
        thin: int = 1,
        return_trajectory: bool = False,
        return_diagnostics: bool = False,
        reset_schedulers: bool = True,
        *,
        y: Any = None,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        N: int | Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Run the chains and return the final samples, or the trajectory.

        Serves two call forms: TorchEBM's ``sample(x=None, dim=None, n_steps=100, ...)`` and the
        `nnh.Sampler` ABC's ``sample(N, device)`` (what ``handler.get_samples(N)`` calls). An
        int first is the number of chains N, and then a str or torch.device second is the device.

        Args:
            x: initial state (B, *event_shape); default standard normal of shape (N, *dim).
            dim: event shape when x is None (default: the constructor's ``dim``, then the
                model's ``event_shape``).
            n_steps: transitions to run (default: the constructor's ``n_steps``, 100).
            n_samples: number of chains when x is None (same as ``N``).
            thin: keep every ``thin``-th state: n_kept = n_steps // thin.
            return_trajectory: return (B, n_kept, *event_shape) instead of the final (B, *event_shape).
            return_diagnostics: also return a dict of per-kept-step statistics: ``mean`` and
                ``var`` over chains (n_kept, *event_shape), mean ``energy`` (n_kept,), and
                ``acceptance_rate`` (n_kept,) for Metropolis samplers (averaged over the thinning
                window). The count of rejected non-finite proposals goes to ``self.n_nonfinite``.
            reset_schedulers: start the schedulers from step 0; False continues their clock
                from the previous call (annealing across the calls of a training loop).
            y, model_kwargs: conditioning for a conditional energy, called as
                ``model(x, **model_kwargs)`` (``y`` is short for ``model_kwargs={"y": y}``).
            generator: a torch.Generator for every random draw (default: the global RNG).
            N, device: the ABC form's number of chains and device (default: x's device, then
                the sampler's, then the model's).

        Raises ValueError on bad arguments (before any model evaluation) and at the first step
        whose scheduled value leaves its bound (module docstring). Warns (RuntimeWarning, once per
        call) when chains end at a non-finite start they could never leave; counted once on the
        host after the loop.
        """
        owner = f"{type(self).__name__}.sample"
        if type(self)._transition is BaseSampler._transition and type(self)._run is BaseSampler._run:
            raise _no_transition(type(self).__name__)  # before any model evaluation
        x, dim, n, device = resolve_call_form(owner, x, dim, N, device)
        if device is not None:
            device = check_device(device, owner)
        for name, flag in (("return_trajectory", return_trajectory), ("return_diagnostics", return_diagnostics),
                           ("reset_schedulers", reset_schedulers)):
            check_flag(owner, name, flag)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{owner}: generator={generator!r} must be a torch.Generator or None, e.g. "
                            "torch.Generator().manual_seed(0).")
        n_steps = self.n_steps if n_steps is None else _count(owner, "n_steps", n_steps)
        thin = _count(owner, "thin", thin)
        if thin > n_steps:
            raise ValueError(f"{owner}: thin={thin} > n_steps={n_steps} keeps no state; use thin <= n_steps.")
        x0 = initial_state(self, n, device, x, dim, n_samples, generator)
        condition = merge_condition(owner, model_kwargs, y, x0.device)
        if reset_schedulers:
            self.reset_schedulers()
        self._prepare(x0)
        if condition:
            self._use_model_fns(condition)
        try:
            return self._run(x0, n_steps, thin, return_trajectory, return_diagnostics, generator, condition)
        finally:
            if condition:
                self._use_model_fns({})

    def _run(self, x0: Tensor, n_steps: int, thin: int, return_trajectory: bool, return_diagnostics: bool,
             generator: torch.Generator | None, model_kwargs: dict[str, Any]) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """The loop of `sample` from the initial state x0 (the model functions are already
        conditioned on ``model_kwargs``); a sampler that is not a chain of `_transition` steps
        (`FlowSampler`) overrides this."""
        owner = f"{type(self).__name__}.sample"
        state = self._init_state(x0)
        n_kept = n_steps // thin
        schedulers = self._all_schedulers()
        trajectory = x0.new_empty((x0.shape[0], n_kept, *x0.shape[1:])) if return_trajectory else None
        diag = self._new_diagnostics(x0, n_kept) if return_diagnostics else None
        accepted_sum = x0.new_zeros(()) if diag is not None and self.has_acceptance else None
        counts = torch.zeros((n_kept,), dtype=torch.int64, device=x0.device) if diag is not None else None
        nonfinite_sum = torch.zeros((), dtype=torch.int64, device=x0.device) if diag is not None else None
        for k in range(n_steps):
            self._check_scheduled_values(k)
            state, info = self._transition(state, generator)
            for scheduler in schedulers:
                scheduler.step()
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
                counts[kept] = nonfinite_sum
                nonfinite_sum.zero_()
                self._record(diag, kept, state, x0.shape[0] * thin, accepted_sum)
        if counts is not None:
            self.n_nonfinite = counts
        n_stuck = int(self._stuck_chains(state).sum())  # the one host sync of sample, after the loop
        if n_stuck:
            warnings.warn(
                f"{owner}: {n_stuck} of {x0.shape[0]} chains never moved: their start has a non-finite "
                f"{'position, energy or gradient' if self.has_acceptance else 'position or gradient'} (NaN or inf), "
                "so every proposal from it is rejected; start them where the model and its gradient are finite.",
                RuntimeWarning,
                stacklevel=3,
            )
        out = trajectory if trajectory is not None else state.x
        return (out, diag) if diag is not None else out

    def _new_diagnostics(self, x0: Tensor, n_kept: int) -> dict[str, Tensor]:
        event = x0.shape[1:]
        shapes = {"mean": (n_kept, *event), "var": (n_kept, *event), "energy": (n_kept,)}
        diag = {key: x0.new_empty(shapes[key]) for key in self.diagnostic_keys}
        if self.has_acceptance:
            diag["acceptance_rate"] = x0.new_empty((n_kept,))
        return diag

    def _record(self, diag: dict[str, Tensor], kept: int, state: ChainState, window: int,
                accepted_sum: Tensor | None) -> None:
        # Written on the device, with no host sync: the loop never waits for these numbers.
        if "mean" in diag:
            diag["mean"][kept] = state.x.mean(dim=0)
            diag["var"][kept] = state.x.var(dim=0, correction=0)
        diag["energy"][kept] = self._energy_for_diagnostics(state).mean()
        if accepted_sum is not None:
            diag["acceptance_rate"][kept] = accepted_sum / window
            accepted_sum.zero_()
