r"""Exact likelihoods of score-based models through the probability-flow ODE.

Along a solution of :math:`\dot x = \tilde f(t, x)` (the probability-flow drift,
`nnh.func.probability_flow_drift`), the instantaneous change of variables (Chen et al. 2018)
gives :math:`\frac{d}{dt} \log p_t(x_t) = -\nabla \cdot \tilde f(t, x_t)`, so

.. math:: \log p_{t_0}(x) = \log p_{t_1}(x_{t_1}) + \int_{t_0}^{t_1} \nabla \cdot \tilde f(t, x_t)\,dt,
          \qquad x_{t_0} = x,

with :math:`p_{t_1}` the SDE's prior at t1 = T. The ODE is solved forward from t0 for the
augmented state (x, delta), :math:`\dot\delta = \nabla \cdot \tilde f`, the divergence coming
from the Hutchinson estimator with probes fixed over the whole path
(`nnh.func.hutchinson_divergence`).
"""

from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

from nnh.func.divergence import hutchinson_divergence
from nnh.func.ode import ODE_STEPS

__all__ = ["likelihood_ode_step", "bits_per_dim"]


def likelihood_ode_step(drift_fn: Callable[[Tensor, Tensor], Tensor], t: Tensor, state: tuple[Tensor, Tensor],
                        dt: float | Tensor, noise: Tensor, method: str = "heun") -> tuple[Tensor, Tensor]:
    r"""One step from t to t + dt of the likelihood ODE for the state (x, delta):

    .. math:: \dot x = \tilde f(t, x), \qquad \dot \delta = \nabla \cdot \tilde f(t, x)

    by Euler (1 evaluation of drift_fn and its divergence), Heun (2) or RK4 (4), see
    `nnh.func.ode`.

    Args:
        drift_fn: ``(t, x) -> velocity`` shaped like x, e.g. the probability-flow drift.
        t: (B,). state: ``(x (B, *event_shape), delta (B,))``.
        noise: Hutchinson probes, (K, *x.shape), the same at every step of one solve.
        method: "euler", "heun" or "rk4" (any case).
    Returns: the new ``(x, delta)``.
    """
    step = ODE_STEPS.get(method.lower() if isinstance(method, str) else method)
    if step is None:
        raise ValueError(f"method={method!r} must be 'Euler', 'Heun' or 'RK4'.")

    def field(s: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        return hutchinson_divergence(lambda z: drift_fn(s, z), y[0], noise)

    x, delta = step(field, t, state, dt)
    return x, delta


def bits_per_dim(log_likelihood: Tensor, n_dims: int, bin_width: float = 1.0) -> Tensor:
    r"""Negative log-likelihood in bits per dimension:

    .. math:: \mathrm{bpd} = -\frac{\log p(x) + D \ln w}{D \ln 2}

    For the number to mean anything on 8-bit data (images), the data must be dequantised
    before the likelihood is computed: integers k in {0, ..., 255} become
    x = (k + u) / 256 with u ~ U[0, 1)^D drawn afresh, and then go through the same affine map
    as in training (e.g. 2x - 1). A density evaluated on the 256 grid points themselves can
    be made arbitrarily large and says nothing. `bin_width` w is then the width of one
    quantisation bin in the model's data units, 1/256 for data in [0, 1) (which adds 8 bits)
    or 2/256 for [-1, 1) (7 bits), and the result is an upper bound (by Jensen) on the
    discrete model's bits per dimension. With w = 1 it is the continuous density's -log2 p / D.

    Args:
        log_likelihood: log p(x) in nats, any shape (e.g. (B,)).
        n_dims: D, the number of dimensions of one sample (e.g. 3 * 32 * 32).
        bin_width: w, a finite number > 0.
    """
    if isinstance(n_dims, bool) or not isinstance(n_dims, int) or n_dims < 1:
        raise ValueError(f"bits_per_dim: n_dims={n_dims!r} must be an int >= 1, the dimensions of one sample "
                         "(e.g. x[0].numel()).")
    try:
        width = float(bin_width)  # a number, or a one-element tensor (read once)
    except (TypeError, ValueError, RuntimeError):
        width = math.nan
    if isinstance(bin_width, bool) or not 0 < width < math.inf:
        raise ValueError(f"bits_per_dim: bin_width={bin_width!r} must be a finite number > 0, e.g. 1/256 for 8-bit "
                         "data dequantised to [0, 1).")
    return -(log_likelihood + n_dims * math.log(width)) / (n_dims * math.log(2.0))
