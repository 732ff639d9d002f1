r"""Effective sample size of MCMC output (pure; exported through `nnh.func.mcmc`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["effective_sample_size"]


def effective_sample_size(samples: Tensor) -> Tensor:
    r"""Effective sample size of each coordinate of ``samples`` (C chains, N draws, *event_shape).

    The multi-chain estimate with Geyer's initial monotone sequence:

    .. math::
        \hat\rho_t = 1 - \frac{W - \bar\gamma_t}{\widehat{\mathrm{var}}^+}, \quad
        \widehat{\mathrm{var}}^+ = \frac{N-1}{N} W + \frac{B}{N}, \quad
        \hat\tau = -1 + 2 \sum_{k < K} (\hat\rho_{2k} + \hat\rho_{2k+1}), \quad
        \mathrm{ESS} = \frac{CN}{\hat\tau}

    where :math:`\bar\gamma_t` is the lag-t autocovariance averaged over chains (by FFT), W the
    mean within-chain variance, B/N the variance of the chain means, and the pair sums are made
    monotone and cut at the first one that is not positive; :math:`\hat\tau` is floored at
    :math:`1 / \log_{10}(CN)` (antithetic chains). Computed in float64.

    Returns:
        ESS of shape ``event_shape`` (total over chains).
    """
    if samples.ndim < 2:
        raise ValueError(
            f"effective_sample_size: samples must be (chains, draws, *event_shape), got shape {tuple(samples.shape)}; "
            "for one chain pass samples.unsqueeze(0)."
        )
    n_chains, n_draws = samples.shape[:2]
    if n_draws < 4:
        raise ValueError(f"effective_sample_size: need at least 4 draws per chain, got {n_draws}.")
    event_shape = samples.shape[2:]
    x = samples.reshape(n_chains, n_draws, -1).to(torch.float64)
    chain_mean = x.mean(dim=1, keepdim=True)
    centred = x - chain_mean
    spectrum = torch.fft.rfft(centred, n=2 * n_draws, dim=1)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), n=2 * n_draws, dim=1)[:, :n_draws] / n_draws
    mean_acov = acov.mean(dim=0)  # (N, P)
    within = mean_acov[0] * n_draws / (n_draws - 1)
    between_over_n = chain_mean.squeeze(1).var(dim=0, correction=1) if n_chains > 1 else torch.zeros_like(within)
    var_plus = within * (n_draws - 1) / n_draws + between_over_n
    rho = 1.0 - (within - mean_acov) / var_plus  # (N, P); rho[0] = 1 for one chain
    n_pairs = n_draws // 2
    pairs = rho[: 2 * n_pairs].reshape(n_pairs, 2, -1).sum(dim=1)  # (K, P)
    positive = torch.cumprod((pairs > 0).to(torch.float64), dim=0)
    monotone = torch.cummin(pairs, dim=0).values
    tau = -1.0 + 2.0 * (monotone * positive).sum(dim=0)
    tau = tau.clamp(min=1.0 / math.log10(n_chains * n_draws))
    return (n_chains * n_draws / tau).reshape(event_shape)
