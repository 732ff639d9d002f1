"""The `Sampler` abstract base class for custom sampling algorithms."""

from __future__ import annotations

import abc
import inspect
from typing import Any

import torch

from nnh._init_record import RecordsInit

__all__ = ["Sampler", "call_sampler_load", "check_sampler", "make_sampler"]


class Sampler(RecordsInit, abc.ABC):
    """Base class of every sampler a handler can hold (`NNHandler.set_sampler`).

    Subclasses implement `sample(N, device, **kwargs)`, `save() -> dict` and `load(...)`.
    Two spellings of `load` are accepted, as both appear in user code:
    `load(self, state_dict)` and `load(self, **state_dict)` (which conventionally returns self).
    The handler calls whichever the subclass defines (see `call_sampler_load`).

    The constructor arguments of every instance are recorded (`init_args`, `init_kwargs`, see
    `nnh._init_record.RecordsInit`) so that a checkpoint can rebuild the sampler with the
    arguments it was made with, even when a subclass does not call ``super().__init__``.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Accepts and ignores keyword arguments so that `super().__init__(**kwargs)` works.
        pass

    @abc.abstractmethod
    def sample(self, N: int, device: torch.device | str | None, **kwargs: Any) -> Any:
        """Generate `N` samples on `device`."""

    @abc.abstractmethod
    def save(self) -> dict[str, Any]:
        """Return the sampler's state as a dict (tensors and plain Python values)."""

    @abc.abstractmethod
    def load(self, state_dict: dict[str, Any]) -> Any:
        """Restore the state returned by `save`."""


def call_sampler_load(sampler: Any, state: dict[str, Any]) -> Any:
    """Call `sampler.load` with `state`, in whichever form the sampler defines.

    `load(self, state_dict)` receives the dict positionally; `load(self, **state_dict)`, a
    signature with only a ``**kwargs`` parameter, receives it unpacked.
    """
    params = list(inspect.signature(sampler.load).parameters.values())
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not positional and any(p.kind is p.VAR_KEYWORD for p in params):
        return sampler.load(**state)
    return sampler.load(state)


def check_sampler(value: Any) -> "Sampler | None":
    """`value` if it is a `Sampler` instance or None; a TypeError otherwise."""
    if value is not None and not isinstance(value, Sampler):
        raise TypeError(f"sampler must be an nnh.Sampler instance or None, got {type(value).__name__}.")
    return value


def make_sampler(sampler_class: Any, sampler_kwargs: dict[str, Any]) -> Sampler:
    """`sampler_class(**sampler_kwargs)` for a `Sampler` subclass, or a ready instance as it is."""
    if isinstance(sampler_class, Sampler):
        if sampler_kwargs:
            raise ValueError("set_sampler got an instance and kwargs; pass kwargs only with a class.")
        return sampler_class
    if not (inspect.isclass(sampler_class) and issubclass(sampler_class, Sampler)):
        raise TypeError(f"set_sampler expects an nnh.Sampler subclass or instance, got {sampler_class!r}.")
    return sampler_class(**sampler_kwargs)
