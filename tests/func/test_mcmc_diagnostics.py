"""nnh.func._mcmc_diagnostics: the ESS against a plain reference written from its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnh.func import effective_sample_size


def reference_ess(samples: np.ndarray) -> float:
    """ESS of one coordinate, samples (C, N): direct autocovariance sums, Geyer's initial
    monotone sequence, the tau floor 1 / log10(C N); loops, no FFT."""
    c, n = samples.shape
    means = samples.mean(axis=1)
    centred = samples - means[:, None]
    acov = np.array([[np.dot(centred[k, : n - t], centred[k, t:]) / n for t in range(n)] for k in range(c)])
    mean_acov = acov.mean(axis=0)
    within = mean_acov[0] * n / (n - 1)
    between_over_n = np.var(means, ddof=1) if c > 1 else 0.0
    var_plus = within * (n - 1) / n + between_over_n
    rho = 1.0 - (within - mean_acov) / var_plus
    tau, smallest = -1.0, math.inf
    for k in range(n // 2):
        pair = rho[2 * k] + rho[2 * k + 1]
        if pair <= 0:
            break
        smallest = min(smallest, pair)
        tau += 2.0 * smallest
    return c * n / max(tau, 1.0 / math.log10(c * n))


def _ar1(r: float, chains: int, draws: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(chains, draws, generator=gen, dtype=torch.float64)
    x = torch.empty_like(eps)
    x[:, 0] = eps[:, 0] / math.sqrt(1 - r * r)
    for t in range(1, draws):
        x[:, t] = r * x[:, t - 1] + eps[:, t]
    return x + shift * torch.arange(chains, dtype=torch.float64)[:, None]  # chains apart by `shift`


@pytest.mark.parametrize("r,chains,draws,shift", [
    (0.6, 4, 301, 0.0),   # an odd number of draws
    (0.6, 4, 300, 0.8),   # chains that disagree: the between-chain variance counts
    (0.9, 1, 200, 0.0),   # one chain
    (-0.9, 3, 250, 0.0),  # antithetic: tau is floored at 1 / log10(C N)
    (0.3, 2, 4, 0.0),     # the fewest draws accepted
])
def test_ess_equals_the_reference_for_each_coordinate(r, chains, draws, shift):
    # Three coordinates with different correlations, in an event shape (3,); float32 input
    # is computed in float64 as the reference is.
    coords = [_ar1(r, chains, draws, seed) for seed in (1, 2)] + [_ar1(r / 2, chains, draws, 3, shift)]
    x = torch.stack(coords, dim=-1)
    ess = effective_sample_size(x.to(torch.float32))
    assert ess.shape == (3,)
    x32 = x.to(torch.float32).to(torch.float64).numpy()
    for i in range(3):
        assert ess[i].item() == pytest.approx(reference_ess(x32[..., i]), rel=1e-9), i


def test_ess_keeps_the_event_shape_and_takes_a_plain_chain_array():
    x = torch.stack([_ar1(0.5, 2, 100, s) for s in range(6)], dim=-1).reshape(2, 100, 2, 3)
    assert effective_sample_size(x).shape == (2, 3)
    one = _ar1(0.5, 2, 100, 0)
    assert effective_sample_size(one).shape == ()
    assert effective_sample_size(one).item() == pytest.approx(reference_ess(one.numpy()), rel=1e-9)
    with pytest.raises(ValueError, match="at least 4 draws"):
        effective_sample_size(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(chains, draws"):
        effective_sample_size(torch.zeros(5))
