r"""`Schedulable`: a registry of named parameter schedulers, shared by samplers and losses.

A value registered under a name is a number (held as a `ConstantScheduler`) or a scheduler.
``step_schedulers()`` and ``reset_schedulers()`` act on the owner's schedulers and on those of
the schedulable objects it holds (`_scheduled_children`: a loss holds its sampler), so one call
on a loss advances the whole pipeline. Every operation is O(number of schedulers): the registry
is a dict, not a walk over a module tree.

Bounds. A value registered with ``positive=True`` must be finite and > 0, with
``positive=False`` finite and >= 0; ``positive=None`` declares no bound. The default is the
owner's ``default_bound`` (True for samplers, whose values are step sizes; None for losses).
`BaseSampler.sample` checks the bound of every value at every step (Python floats: no host sync).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Union

from nnh.stateful.mcmc.schedulers import BaseScheduler, ConstantScheduler

__all__ = ["Schedulable", "ScheduledValue", "scheduled_property"]

ScheduledValue = Union[float, int, BaseScheduler]


class Schedulable:
    """Mixin: ``schedulers`` (name -> scheduler) and the methods that use it."""

    schedulers: dict[str, BaseScheduler]
    _positive: dict[str, bool | None]
    #: the bound `register_scheduler` applies when none is given.
    default_bound: bool | None = True

    def _init_schedulers(self) -> None:
        # Not __init__: the owners are an nn.Module (losses) and a RecordsInit (samplers), whose
        # constructors take different arguments.
        self.schedulers = {}
        self._positive = {}

    def register_scheduler(self, name: str, scheduler: ScheduledValue, *, positive: bool | None | str = "default") -> None:
        """Register ``scheduler`` (or a number, wrapped in `ConstantScheduler`) under ``name``,
        replacing any earlier entry. Its value must be finite and > 0 (``positive=False``: >= 0;
        ``positive=None``: any number; by default ``default_bound``) now and at every step of a
        sampler's run."""
        owner = type(self).__name__
        if positive == "default":
            positive = self.default_bound
        if isinstance(scheduler, BaseScheduler):
            start = scheduler.get_value()
        elif isinstance(scheduler, (int, float)) and not isinstance(scheduler, bool):
            start = float(scheduler)
        else:
            raise TypeError(f"{owner}: {name} must be a number or an nnh scheduler, got {type(scheduler).__name__}.")
        if positive is not None and (not math.isfinite(start) or (start <= 0 if positive else start < 0)):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{owner}: {name} must be finite and {bound}, got {start!r}.")
        self.schedulers[name] = scheduler if isinstance(scheduler, BaseScheduler) else ConstantScheduler(start)
        self._positive[name] = positive

    def _register_param(self, name: str, value: ScheduledValue, *, positive: bool = False) -> None:
        """`register_scheduler` under the spelling of custom samplers written for TorchEBM:
        ``positive=True`` requires > 0, the default only a number."""
        self.register_scheduler(name, value, positive=True if positive else None)

    def get_schedulers(self) -> dict[str, BaseScheduler]:
        """The registry itself (name -> scheduler)."""
        return self.schedulers

    def get_scheduled_value(self, name: str) -> float:
        """The current value of the scheduler registered as ``name``."""
        try:
            return self.schedulers[name].get_value()
        except KeyError:
            raise KeyError(f"{type(self).__name__}: no scheduler named {name!r}; registered: {sorted(self.schedulers)}.") from None

    def _scheduled_children(self) -> Iterable[Any]:
        """Schedulable objects this one holds, stepped and reset with it."""
        return ()

    def _all_schedulers(self) -> list[BaseScheduler]:
        found: list[BaseScheduler] = []
        seen: set[int] = set()
        stack: list[Any] = [self]
        while stack:  # each object once, even when a sampler is shared by two losses
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            found.extend(obj.schedulers.values())
            stack.extend(c for c in obj._scheduled_children() if isinstance(c, Schedulable))
        return found

    def step_schedulers(self) -> None:
        """Advance every registered scheduler (and those of `_scheduled_children`) by one step."""
        for scheduler in self._all_schedulers():
            scheduler.step()

    def reset_schedulers(self) -> None:
        """Put every registered scheduler (and those of `_scheduled_children`) back at step 0."""
        for scheduler in self._all_schedulers():
            scheduler.reset()


def scheduled_property(name: str, positive: bool | None, doc: str = "") -> property:
    """A property reading the current value of the scheduler ``name``; setting it registers a
    number or a scheduler under that name with the bound ``positive``."""
    return property(
        lambda self: self.get_scheduled_value(name),
        lambda self, value: self.register_scheduler(name, value, positive=positive),
        doc=doc or f"The current value of {name} (set a number or a scheduler).",
    )
