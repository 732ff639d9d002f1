"""The random draws of the chain steps: ready noise, or a generator to draw it from."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["standard_normal_like", "uniform_per_chain"]


def standard_normal_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` (its dtype and device), drawn from ``generator``;
    None draws from the global RNG, as the classes in `nnh.stateful.mcmc` do by default."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def uniform_per_chain(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One U(0, 1) draw per chain of ``x`` (B, *event_shape): shape (B,), x's dtype and device;
    from ``generator``, or the global RNG when it is None."""
    return torch.rand((x.shape[0],), generator=generator, dtype=x.dtype, device=x.device)


def _given_noise(x: Tensor, noise: Tensor | None, generator: torch.Generator | None, who: str) -> Tensor:
    # The steps take ready noise or a generator, never the global RNG implicitly.
    if noise is not None:
        if noise.shape != x.shape:
            raise ValueError(
                f"{who}: noise has shape {tuple(noise.shape)} but the state x has {tuple(x.shape)}; "
                "pass standard-normal noise shaped like x."
            )
        return noise
    if generator is None:
        raise ValueError(f"{who}: pass noise=... (standard normal, shaped like x) or generator=torch.Generator(...).")
    return standard_normal_like(x, generator)


def _given_uniform(x: Tensor, uniform: Tensor | None, generator: torch.Generator | None, who: str) -> Tensor:
    if uniform is not None:
        if uniform.shape != (x.shape[0],):
            raise ValueError(
                f"{who}: uniform has shape {tuple(uniform.shape)}; pass one U(0, 1) draw per chain, "
                f"shape ({x.shape[0]},)."
            )
        return uniform
    if generator is None:
        raise ValueError(f"{who}: pass uniform=... (U(0, 1), shape (B,)) or generator=torch.Generator(...).")
    return uniform_per_chain(x, generator)
