r"""The Hutchinson estimator of the divergence (the trace of the Jacobian) of a batched function.

For ``fn`` mapping x (B, *event_shape) to an output of the same shape, sample by sample, and
probes :math:`v_1 \dots v_K` with :math:`E[v v^T] = I`:

.. math:: \nabla \cdot fn(x_b) = \mathrm{tr}\, J_b \approx \frac1K \sum_{k=1}^K v_{k,b}^T J_b\, v_{k,b}

Rademacher probes (entries +-1) give the smallest variance among such probes:
:math:`\mathrm{Var}[v^T J v] = \tfrac12 \sum_{i \ne j} (J_{ij} + J_{ji})^2` for one probe, and
the mean of K independent probes has K times less; Gaussian probes add
:math:`2 \sum_i J_{ii}^2`. For a J that is a multiple of the identity, Rademacher probes are
exact.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["hutchinson_divergence", "hutchinson_probes"]


def hutchinson_divergence(fn: Callable[[Tensor], Tensor], x: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """``(fn(x), div)`` with div (B,) the mean over probes of v . (J v) per sample.

    ``fn`` is evaluated once, by `torch.func.vjp` at x, and the K vector-Jacobian products come
    from one `torch.func.vmap` of its pullback over the probes: one forward pass and one
    batched backward pass, not K of either. The Jacobian is taken per sample, which is exact
    when fn treats the samples independently (no batch statistics).

    Works inside `torch.no_grad()` (the transform tracks x itself) and under
    ``torch.compile(fullgraph=True)``.

    Args:
        fn: x (B, *event_shape) -> output of the same shape.
        x: (B, *event_shape).
        noise: (K, *x.shape), K >= 1 probe vectors (`hutchinson_probes`).
    Returns:
        ``(fn(x), div)`` with div of shape (B,).
    """
    if noise.dim() != x.dim() + 1 or noise.shape[1:] != x.shape or noise.shape[0] < 1:
        raise ValueError(f"hutchinson_divergence: noise of shape {tuple(noise.shape)} does not fit x of shape "
                         f"{tuple(x.shape)}; pass (K, *x.shape), e.g. hutchinson_probes(x, K).")
    out, pullback = torch.func.vjp(fn, x)
    if out.shape != x.shape:
        raise ValueError(f"hutchinson_divergence: fn maps x of shape {tuple(x.shape)} to {tuple(out.shape)}; the "
                         "divergence needs an output shaped like its input.")
    (vjps,) = torch.func.vmap(pullback)(noise.to(out.dtype))
    per_probe = (vjps * noise).reshape(noise.shape[0], x.shape[0], -1).sum(-1)
    return out, per_probe.mean(0)


def hutchinson_probes(x: Tensor, n: int, noise_type: str = "rademacher",
                      generator: torch.Generator | None = None) -> Tensor:
    """`n` probe vectors for x: (n, *x.shape), Rademacher (+-1 with equal probability) or
    standard Gaussian, in x's dtype and on its device; drawn from `generator`, or from the
    global RNG when it is None."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"hutchinson_probes: n={n!r} must be an int >= 1 (the number of probe vectors).")
    shape = (n, *x.shape)
    kind = noise_type.lower() if isinstance(noise_type, str) else noise_type
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, device=x.device, generator=generator)
        return (2 * bits - 1).to(x.dtype)
    if kind == "gaussian":
        return torch.randn(shape, device=x.device, dtype=x.dtype, generator=generator)
    raise ValueError(f"noise_type={noise_type!r} must be 'rademacher' or 'gaussian'.")
