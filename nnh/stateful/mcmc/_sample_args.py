"""Argument handling of `BaseSampler.sample`: the two call forms, the initial state, conditioning."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["count", "event_shape", "initial_state", "merge_condition", "resolve_call_form"]


def event_shape(owner: str, dim: Any) -> tuple[int, ...] | None:
    """``dim`` (an int, a tuple of ints or None) as an event shape."""
    if dim is None:
        return None
    if isinstance(dim, torch.Size):
        dim = tuple(dim)
    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
        return (dim,)
    if isinstance(dim, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dim):
        return tuple(dim)
    raise ValueError(f"{owner}: dim must be a positive int or a tuple of them (the event shape), got {dim!r}.")


def count(owner: str, name: str, value: Any, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum``, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}.")
    return value


def resolve_call_form(owner: str, x: Any, dim: Any, n: Any, device: Any) -> tuple[Tensor | None, Any, int | None, Any]:
    """Read ``sample``'s first two positional arguments in either call form.

    - TorchEBM's form: ``sample(x=None, dim=None, ...)``: x a tensor or None.
    - The `nnh.Sampler` form: ``sample(N, device)``: an int first is the number of chains, and
      a str or torch.device second is the device (an int or tuple second stays the event shape,
      so ``sample(64, 2)`` is 64 chains in 2-D).

    Returns ``(x, dim, N, device)``.
    """
    if isinstance(n, Tensor):  # sample(N=x0): the state given under the ABC's name
        if x is not None:
            raise ValueError(f"{owner}: got a tensor as N and x=...; pass the initial state once.")
        x, n = n, None
    if isinstance(x, int) and not isinstance(x, bool):
        if n is not None and n != x:
            raise ValueError(f"{owner}: got {x} chains positionally and N={n}; pass one of them.")
        x, n = None, x
        if isinstance(dim, (str, torch.device)):
            if device is not None:
                raise ValueError(f"{owner}: got the device twice ({dim!r} and device={device!r}); pass one.")
            dim, device = None, dim
    elif x is not None and not isinstance(x, Tensor):
        raise ValueError(
            f"{owner}: x must be a tensor of shape (B, *event_shape) or None (or, in the sample(N, device) "
            f"form, the number of chains), got {type(x).__name__}."
        )
    return x, dim, n, device


def initial_state(sampler: Any, n: int | None, device: Any, x: Tensor | None, dim: Any, n_samples: int,
                  generator: torch.Generator | None) -> Tensor:
    """The chains' starting state (B, *event_shape) in the sampler's dtype: ``x`` moved to the
    device, or N(0, I) draws of the event shape ``dim`` (the call's, the sampler's, the model's)."""
    owner = f"{type(sampler).__name__}.sample"
    if x is not None:
        if x.ndim < 1 or x.shape[0] < 1:
            raise ValueError(f"{owner}: x must be a tensor of shape (B, *event_shape) with B >= 1 chains, got shape "
                             f"{tuple(x.shape)}.")
        if n is not None and n != x.shape[0]:
            raise ValueError(f"{owner}: N={n} but x has {x.shape[0]} chains; pass one of them.")
        target = device if device is not None else (sampler.device if sampler.device is not None else x.device)
        return x.detach().to(device=target, dtype=sampler.dtype)
    if n is not None and n_samples != 1 and n != n_samples:
        raise ValueError(f"{owner}: N={n} and n_samples={n_samples} disagree; pass one of them.")
    n = count(owner, "N (n_samples)", n if n is not None else n_samples)
    event = event_shape(owner, dim) or sampler.dim or event_shape(owner, getattr(sampler.model, "event_shape", None))
    if event is None:
        raise ValueError(
            f"{owner}: unknown event shape; pass x=..., or dim=... here or to the constructor "
            f"({type(sampler).__name__}(model, ..., dim=2))."
        )
    if device is None:
        device = sampler.device
    if device is None:
        params = getattr(sampler.model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else torch.device("cpu")
    gen_device = generator.device if generator is not None else device
    return torch.randn((n, *event), generator=generator, dtype=sampler.dtype, device=gen_device).to(device)


def merge_condition(owner: str, model_kwargs: dict[str, Any] | None, y: Any, device: torch.device) -> dict[str, Any]:
    """``model_kwargs`` with ``y`` added under ``"y"``, tensors moved once to ``device`` (their
    dtype kept: class labels stay integers). ``{}`` is the unconditional call."""
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"{owner}: model_kwargs must be a dict or None, got {type(model_kwargs).__name__}.")
    merged = dict(model_kwargs or {})
    if y is not None:
        if "y" in merged:
            raise ValueError(f"{owner}: y was passed as y=... and in model_kwargs['y']; pass it once.")
        merged["y"] = y
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in merged.items()}

