r"""The score convention of nnh's score-based models, and the denoising score-matching loss.

The network outputs sigma(t) times the score (Song et al. 2021; Song & Ermon 2019):

.. math:: \mathrm{net}(t, x, \dots) = \sigma(t)\, \nabla_x \log p_t(x), \qquad
          s_\theta(t, x) = \mathrm{net}(t, x, \dots) / \sigma(t)

so its target has unit scale at every t: for :math:`x_t = m(t) x_0 + \sigma(t) z`, the score of
:math:`p_t(x_t \mid x_0)` times sigma(t) is -z. The network is called as ``net(t, x, *args)``
with t of shape (B,) and x of shape (B, *event_shape); ``args`` are conditioning inputs.

`dsm_loss` trains such a network over all noise levels t of an SDE. Energy models have their own
denoising objective, `nnh.func.denoising_score_matching_loss` (`nnh.DenoisingScoreMatching`): an
energy U(x) without time, at one noise level sigma. At one level with m(t) = 1 and
net(t, x) / sigma = -grad U(x), `dsm_loss` is 2 sigma^2 times that loss. docs/score_based.md and
docs/samplers.md ("Score matching") compare them.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from nnh.func.sde import as_time, per_sample

__all__ = ["batch_time", "model_score", "dsm_loss", "denoising_score_matching"]


def batch_time(t: float | Tensor, x: Tensor) -> Tensor:
    """`t` as a (B,) tensor for x (B, *event_shape): a float or 0-d tensor is repeated B times
    (a float in x's dtype and on x's device); a (B,) tensor is returned as it is."""
    t = as_time(t, x)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t of shape {tuple(t.shape)} does not fit x of shape {tuple(x.shape)}; pass a float, "
                         f"a 0-d tensor or a ({x.shape[0]},) tensor.")
    return t


def _shaped_like_x(who: str, out: Tensor, x: Tensor) -> Tensor:
    # A (B, 1) or (D,) output would broadcast against x into a wrong score or loss, silently.
    # A shape comparison: no host sync, and nothing for torch.compile to break on.
    if out.shape != x.shape:
        raise ValueError(f"{who}: the network returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}; "
                         "net(t, x, ...) must return sigma(t) times the score, shaped like x.")
    return out


def model_score(net: Callable[..., Tensor], sde: Any, t: float | Tensor, x: Tensor, *args: Any) -> Tensor:
    r"""The score :math:`s_\theta(t, x) = \mathrm{net}(t, x, *args) / \sigma(t)`, shaped like x.

    ``t`` may be a float, a 0-d tensor or a (B,) tensor; the network always receives (B,). A
    network output not shaped like x raises ValueError.
    """
    t = batch_time(t, x)
    return _shaped_like_x("model_score", net(t, x, *args), x) / per_sample(sde.sigma(t), x)


def dsm_loss(net: Callable[..., Tensor], sde: Any, x0: Tensor, t: Tensor, z: Tensor, *args: Any) -> Tensor:
    r"""The denoising score-matching loss for given times and noise:

    .. math:: L = \frac1B \sum_{b} \big\| \mathrm{net}(t_b, m(t_b) x_{0,b} + \sigma(t_b) z_b) + z_b \big\|^2

    the squared error summed over the dimensions of each sample and averaged over the batch.
    Its minimiser is sigma(t) times the score of p_t (Vincent 2011). For an energy model at one
    noise level use `nnh.func.denoising_score_matching_loss` instead (module docstring).

    Args:
        net: ``net(t, x, *args)`` with t (B,) and x (B, *event_shape).
        sde: has ``marginal_prob(t, x) -> (mean, std)``.
        x0: data, (B, *event_shape).
        t: times, (B,), usually uniform on [sde.epsilon, sde.T].
        z: standard normal noise shaped like x0.
    Returns: a 0-d tensor.
    """
    if z.shape != x0.shape:
        raise ValueError(f"dsm_loss: z of shape {tuple(z.shape)} does not fit x0 of shape {tuple(x0.shape)}; "
                         "pass standard normal noise shaped like x0, e.g. torch.randn_like(x0).")
    mean, std = sde.marginal_prob(t, x0)
    residual = _shaped_like_x("dsm_loss", net(t, mean + std * z, *args), x0) + z
    return residual.square().sum() / x0.shape[0]


def denoising_score_matching(x0: Tensor, sde: Any, model: Callable[..., Tensor], device: Any = None,
                             generator: torch.Generator | None = None) -> Tensor:
    r"""`dsm_loss` with t ~ U(epsilon, T) and z ~ N(0, I) drawn here: the ready loss of a
    score-based `NNHandler` (``handler.set_loss_fn(nnh.denoising_score_matching)``), which calls
    ``loss_fn(inputs, sde, model, device)``; conditioning is bound into `model` by the handler.

    Draws from `generator`, or from the global RNG when it is None. `device` is accepted for the
    handler's loss convention; the draws follow x0's device. Not `nnh.DenoisingScoreMatching`,
    the loss of energy models (module docstring).
    """
    if not isinstance(x0, Tensor) or x0.dim() < 1 or not x0.is_floating_point():
        got = f"a {x0.dtype} tensor of shape {tuple(x0.shape)}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"denoising_score_matching: x0 must be a floating-point tensor of shape (B, *event_shape), "
                         f"got {got}; e.g. x0.float().")
    if not all(hasattr(sde, m) for m in ("epsilon", "T", "marginal_prob")):
        raise TypeError(f"denoising_score_matching: sde={sde!r} must be an SDE (epsilon, T, marginal_prob), e.g. "
                        "nnh.VPSDE(); on a handler, call handler.set_sde(nnh.VPSDE).")
    t = torch.rand(x0.shape[0], device=x0.device, dtype=x0.dtype, generator=generator)
    t = sde.epsilon + (sde.T - sde.epsilon) * t
    z = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    return dsm_loss(model, sde, x0, t, z)
