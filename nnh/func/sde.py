r"""The forward SDEs of score-based generative models (Song et al. 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations"):

.. math:: dx = f(t, x)\,dt + g(t)\,dw, \qquad t \in [\epsilon, T]

with a Gaussian transition kernel :math:`p_t(x_t \mid x_0) = N(m(t)\,x_0,\ \sigma(t)^2 I)`.

Every SDE here has the same members, and any object that has them can stand in for one
(`nnh.NNHandler` duck-types; nothing isinstance-checks):

- ``T``, ``epsilon``: the time interval (floats); sampling runs from T down to epsilon.
- ``sigma(t)``: the marginal standard deviation sigma(t), shaped like ``t``.
- ``marginal_prob(t, x) -> (mean, std)``: m(t) x and sigma(t), both broadcast against x.
- ``drift(t, x)`` (shaped like x) and ``diffusion(t, x)`` (g(t), broadcast against x).
- ``prior(shape, device=None)``: the distribution at T over one sample of ``shape`` (a
  `torch.distributions.Independent` Normal: ``log_prob`` sums over the sample's dimensions,
  ``sample((B,))`` gives (B, *shape)).

Time ``t`` may be a Python float, a 0-d tensor or a (B,) tensor for x of shape
(B, *event_shape); a (B,) t is viewed as (B, 1, ..., 1) against x. Coefficients are computed
in t's dtype (float32 for a Python float), so pass a float64 t for float64 work.

The SDEs record their constructor arguments (`nnh._init_record.RecordsInit`), so a checkpoint
stores one as its import path and keyword arguments, and they hold no other state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from nnh._init_record import RecordsInit

__all__ = ["VPSDE", "VESDE", "SubVPSDE", "as_time", "per_sample"]


def as_time(t: float | Tensor, like: Tensor | None = None) -> Tensor:
    """`t` as a tensor: a Python float becomes a 0-d tensor with `like`'s dtype and device
    (float32 on the CPU without `like`); a tensor is returned as it is."""
    if isinstance(t, Tensor):
        return t
    if like is None:
        return torch.tensor(float(t))
    # An integer x (class labels, pixel counts) would truncate t to 0: time is then a float.
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return torch.tensor(float(t), dtype=dtype, device=like.device)


def per_sample(c: Tensor, x: Tensor) -> Tensor:
    """A 0-d or (B,) coefficient shaped to broadcast against x (B, *event_shape): (B, 1, ..., 1)."""
    if c.dim() == 0:
        return c
    if c.dim() != 1 or (x.dim() >= 1 and c.shape[0] != x.shape[0]):
        raise ValueError(f"t of shape {tuple(c.shape)} does not fit x of shape {tuple(x.shape)}; pass a float, "
                         f"a 0-d tensor or a ({x.shape[0] if x.dim() else 'B'},) tensor.")
    return c.reshape(-1, *([1] * (x.dim() - 1)))


def _check_interval(owner: str, T: Any, epsilon: Any) -> None:
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not 0 < T < math.inf:
        raise ValueError(f"{owner}: T={T!r} must be a finite number > 0 (the end of the diffusion), e.g. T=1.0.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < T:
        raise ValueError(f"{owner}: epsilon={epsilon!r} must be a number in [0, T={T}) (where sampling stops), "
                         "e.g. epsilon=1e-5.")


class _SDE(RecordsInit):
    """What the SDEs share: the time interval, `marginal_prob` from `mean_coeff` and `sigma`,
    and the Gaussian prior with standard deviation `prior_std`."""

    T: float
    epsilon: float
    prior_std: float

    def mean_coeff(self, t: float | Tensor) -> Tensor:
        """m(t), the factor of x_0 in the mean of p_t(x_t | x_0), shaped like t."""
        raise NotImplementedError

    def sigma(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def marginal_prob(self, t: float | Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(m(t) x, sigma(t)): the mean (shaped like x) and the standard deviation (broadcast
        against x) of p_t(x_t | x_0 = x)."""
        t = as_time(t, x)
        return per_sample(self.mean_coeff(t), x) * x, per_sample(self.sigma(t), x)

    def prior(self, shape: tuple[int, ...] | torch.Size, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> Independent:
        """N(0, prior_std^2 I) over one sample of `shape`; `log_prob` sums over its dimensions."""
        if not (isinstance(shape, (tuple, list, torch.Size))
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
            raise ValueError(f"{type(self).__name__}.prior: shape={shape!r} must be a tuple of positive ints, the "
                             "shape of one sample (its event shape), e.g. (2,) or (3, 32, 32).")
        shape = tuple(shape)
        loc = torch.zeros(shape, device=device, dtype=dtype)
        return Independent(Normal(loc, torch.full_like(loc, self.prior_std), validate_args=False), len(shape))

    def __repr__(self) -> str:
        args = [repr(a) for a in self.init_args] + [f"{k}={v!r}" for k, v in self.init_kwargs.items()]
        return f"{type(self).__name__}({', '.join(args)})"


class VPSDE(_SDE):
    r"""The variance-preserving SDE (DDPM in continuous time):

    .. math::
        dx = -\tfrac12 \beta(t)\,x\,dt + \sqrt{\beta(t)}\,dw, \qquad
        \beta(t) = \beta_{min} + (\beta_{max} - \beta_{min})\,t / T

    With :math:`B(t) = \int_0^t \beta = \beta_{min} t + (\beta_{max} - \beta_{min})\,t^2 / (2T)`:
    m(t) = exp(-B(t)/2), sigma(t) = sqrt(1 - exp(-B(t))); the prior is N(0, I).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, epsilon: float = 1e-5) -> None:
        _check_interval(type(self).__name__, T, epsilon)
        if isinstance(beta_min, bool) or not isinstance(beta_min, (int, float)) or not beta_min >= 0:
            raise ValueError(f"{type(self).__name__}: beta_min={beta_min!r} must be a number >= 0, e.g. 0.1.")
        if (isinstance(beta_max, bool) or not isinstance(beta_max, (int, float)) or not beta_max >= beta_min
                or not 0 < beta_max < math.inf):
            # beta_max = 0 leaves beta = 0 everywhere: sigma(t) = 0 and every score is a division by 0.
            raise ValueError(f"{type(self).__name__}: beta_max={beta_max!r} must be a finite number > 0 and "
                             f">= beta_min={beta_min}, e.g. 20.0.")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.T, self.epsilon = float(T), float(epsilon)
        self.prior_std = 1.0

    def beta(self, t: float | Tensor) -> Tensor:
        """beta(t), shaped like t."""
        t = as_time(t)
        return self.beta_min + (self.beta_max - self.beta_min) * t / self.T

    def integral_beta(self, t: float | Tensor) -> Tensor:
        """B(t), the integral of beta from 0 to t, shaped like t."""
        t = as_time(t)
        return self.beta_min * t + (self.beta_max - self.beta_min) * t * t / (2 * self.T)

    def mean_coeff(self, t: float | Tensor) -> Tensor:
        return torch.exp(-0.5 * self.integral_beta(t))

    def sigma(self, t: float | Tensor) -> Tensor:
        # -expm1(-B) = 1 - exp(-B) without the cancellation at small t.
        return torch.sqrt(-torch.expm1(-self.integral_beta(t)))

    def drift(self, t: float | Tensor, x: Tensor) -> Tensor:
        return -0.5 * per_sample(self.beta(as_time(t, x)), x) * x

    def diffusion(self, t: float | Tensor, x: Tensor) -> Tensor:
        return per_sample(torch.sqrt(self.beta(as_time(t, x))), x)


class SubVPSDE(VPSDE):
    r"""The sub-VP SDE: the drift of `VPSDE`, a smaller diffusion, and a variance that stays
    below the VP one at every t:

    .. math::
        dx = -\tfrac12 \beta(t)\,x\,dt + \sqrt{\beta(t)\,(1 - e^{-2B(t)})}\,dw

    m(t) = exp(-B(t)/2), sigma(t) = 1 - exp(-B(t)); the prior is N(0, I).
    """

    def sigma(self, t: float | Tensor) -> Tensor:
        return -torch.expm1(-self.integral_beta(t))

    def diffusion(self, t: float | Tensor, x: Tensor) -> Tensor:
        t = as_time(t, x)
        return per_sample(torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integral_beta(t))), x)


class VESDE(_SDE):
    r"""The variance-exploding SDE (NCSN in continuous time):

    .. math::
        dx = \sqrt{\frac{d\,\sigma(t)^2}{dt}}\,dw = \sigma(t) \sqrt{2 \ln(\sigma_{max}/\sigma_{min}) / T}\,dw,
        \qquad \sigma(t) = \sigma_{min} (\sigma_{max} / \sigma_{min})^{t/T}

    m(t) = 1 and the marginal standard deviation is sigma(t) (as in Song et al.: the data are
    taken to carry sigma_min of noise already); the prior is N(0, sigma_max^2 I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0, epsilon: float = 1e-5) -> None:
        _check_interval(type(self).__name__, T, epsilon)
        if isinstance(sigma_min, bool) or not isinstance(sigma_min, (int, float)) or not sigma_min > 0:
            raise ValueError(f"VESDE: sigma_min={sigma_min!r} must be a number > 0, e.g. 0.01.")
        if (isinstance(sigma_max, bool) or not isinstance(sigma_max, (int, float)) or not sigma_max > sigma_min
                or not sigma_max < math.inf):
            raise ValueError(f"VESDE: sigma_max={sigma_max!r} must be a finite number > sigma_min={sigma_min}, e.g. "
                             "50.0 (about the largest distance between two data points).")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.T, self.epsilon = float(T), float(epsilon)
        self.prior_std = self.sigma_max
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def mean_coeff(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(as_time(t))

    def sigma(self, t: float | Tensor) -> Tensor:
        return self.sigma_min * torch.exp(as_time(t) * (self._log_ratio / self.T))

    def drift(self, t: float | Tensor, x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: float | Tensor, x: Tensor) -> Tensor:
        return per_sample(self.sigma(as_time(t, x)) * math.sqrt(2 * self._log_ratio / self.T), x)
