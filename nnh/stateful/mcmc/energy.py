r"""Energy models: ``forward(x) -> U(x)`` with x (B, *event_shape) and U (B,).

`BaseModel` adds ``gradient(x)`` and ``energy_and_gradient(x)`` (both in one pass). Its default
uses autograd; the analytic energies below override it with closed forms, which is what makes
sampling them cheap. Any ``nn.Module`` returning (B,) energies works with the samplers too.
For compatibility a 1-D input (D,) is read as one point, (1, D).

Every model takes ``dtype`` and ``device`` after its own parameters (``BaseModel(dtype=None,
device=None)``; dtype None is ``torch.get_default_dtype()`` at construction, as for the
parameters of an ``nn.Module``) and reports them as ``model.dtype`` / ``model.device``: those of
its first parameter or buffer, else the ones given. The analytic energies compute in the dtype
of ``x``.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn

from nnh.func.mcmc import autograd_energy_and_grad, event_sum

__all__ = [
    "AckleyModel",
    "BaseModel",
    "BoothModel",
    "DoubleWellModel",
    "GaussianModel",
    "HarmonicModel",
    "HimmelblauModel",
    "RastriginModel",
    "RosenbrockModel",
    "StyblinskiTangModel",
]


def _batch(x: Tensor) -> Tensor:
    return x.unsqueeze(0) if x.ndim == 1 else x


class BaseModel(nn.Module, abc.ABC):
    """An energy U: (B, *event_shape) -> (B,), with its gradient.

    Args:
        dtype, device: reported by ``model.dtype`` and ``model.device`` while the model has no
            parameter or buffer to report (a subclass may create its buffers with them). dtype
            None (the default) is ``torch.get_default_dtype()`` when the model is built.
    """

    def __init__(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        if dtype is None:
            dtype = torch.get_default_dtype()  # read now, as nn.Linear reads it for its weights
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{type(self).__name__}: dtype must be a torch.dtype (or None), got {dtype!r}.")
        self._default_dtype = dtype
        self._default_device = torch.device(device) if device is not None else torch.device("cpu")

    def _first_tensor(self) -> Tensor | None:
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor
        return None

    @property
    def device(self) -> torch.device:
        """The device of the first parameter or buffer, else the constructor's (cpu by default)."""
        first = self._first_tensor()
        return first.device if first is not None else self._default_device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the first parameter or buffer, else the constructor's (by default the
        default dtype when the model was built)."""
        first = self._first_tensor()
        return first.dtype if first is not None else self._default_dtype

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """U(x), shape (B,)."""

    def energy_and_gradient(self, x: Tensor, model_kwargs: dict | None = None) -> tuple[Tensor, Tensor]:
        r"""``(U(x), dU/dx)``, shapes (B,) and like x, detached. Default: one autograd pass through
        ``forward(x, **model_kwargs)`` (a conditional energy)."""
        if model_kwargs:
            return autograd_energy_and_grad(lambda y: self(y, **model_kwargs))(_batch(x))
        return autograd_energy_and_grad(self)(_batch(x))

    def gradient(self, x: Tensor, model_kwargs: dict | None = None) -> Tensor:
        r""":math:`\nabla_x U(x)`, shaped like x (after reading a 1-D x as (1, D))."""
        if model_kwargs:
            return self.energy_and_gradient(x, model_kwargs)[1]
        return self.energy_and_gradient(x)[1]


class DoubleWellModel(BaseModel):
    r"""U(x) = h sum_i (x_i^2 - b^2)^2, gradient 4 h x_i (x_i^2 - b^2): wells at x_i = +-b,
    barrier height h b^4 per coordinate. h = ``barrier_height``."""

    def __init__(self, barrier_height: float = 2.0, b: float = 1.0, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__(dtype, device)
        self.barrier_height = float(barrier_height)
        self.b = float(b)

    def forward(self, x: Tensor) -> Tensor:
        x = _batch(x)
        t = x.square() - self.b**2
        return self.barrier_height * event_sum(t * t)

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _batch(x)
        t = x.square().sub_(self.b**2)
        return event_sum(t * t).mul_(self.barrier_height), x.mul(t).mul_(4.0 * self.barrier_height)

    def gradient(self, x: Tensor) -> Tensor:
        x = _batch(x)
        # 4h (x^3 - b^2 x): three kernels, the Langevin hot path (benchmarks/mcmc.py).
        return torch.sub(x.pow(3), x, alpha=self.b**2).mul_(4.0 * self.barrier_height)


class GaussianModel(BaseModel):
    r"""U(x) = (x - mu)^T Sigma^{-1} (x - mu) / 2 on event shape (D,); gradient Sigma^{-1}(x - mu).

    Args:
        mean: (D,). cov: (D, D), symmetric positive definite.
        dtype: of the buffers (default: mean's floating dtype). device: of the buffers.

    A state whose event shape is not (D,) raises ValueError.
    """

    def __init__(self, mean: Tensor, cov: Tensor, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__(dtype, device)
        mean, cov = torch.as_tensor(mean), torch.as_tensor(cov)
        if mean.ndim != 1:
            raise ValueError(f"GaussianModel: mean must be 1-D (D,), got shape {tuple(mean.shape)}.")
        if cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                f"GaussianModel: cov must be ({mean.shape[0]}, {mean.shape[0]}) to match mean, got {tuple(cov.shape)}."
            )
        chol, info = torch.linalg.cholesky_ex(cov.double())
        if info.item() != 0 or not torch.allclose(cov.double(), cov.double().T):
            raise ValueError("GaussianModel: cov must be symmetric positive definite; check its eigenvalues.")
        if dtype is None:
            dtype = mean.dtype if mean.is_floating_point() else torch.get_default_dtype()
        self.register_buffer("mean", mean.to(dtype=dtype, device=device))
        self.register_buffer("cov", cov.to(dtype=dtype, device=device))
        self.register_buffer("precision", torch.cholesky_inverse(chol).to(dtype=dtype, device=device))

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.energy_and_gradient(x)[0]

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _batch(x)
        if x.shape[1:] != self.mean.shape:
            raise ValueError(
                f"GaussianModel: x must have shape (B, {self.mean.shape[0]}) to match the mean, got {tuple(x.shape)}; "
                f"sample with dim={self.mean.shape[0]} or x of that width."
            )
        diff = x - self.mean
        grad = diff @ self.precision
        return 0.5 * event_sum(diff * grad), grad


class HarmonicModel(BaseModel):
    r"""U(x) = k sum_i x_i^2 / 2, gradient k x."""

    def __init__(self, k: float = 1.0, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__(dtype, device)
        self.k = float(k)

    def forward(self, x: Tensor) -> Tensor:
        x = _batch(x)
        return (0.5 * self.k) * event_sum(x * x)

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _batch(x)
        return (0.5 * self.k) * event_sum(x * x), self.k * x


class RosenbrockModel(BaseModel):
    r"""U(x) = sum_{i<D} [(a - x_i)^2 + b (x_{i+1} - x_i^2)^2] on event shape (D,), D >= 2."""

    def __init__(self, a: float = 1.0, b: float = 100.0, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__(dtype, device)
        self.a = float(a)
        self.b = float(b)

    def forward(self, x: Tensor) -> Tensor:
        return self.energy_and_gradient(x)[0]

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _batch(x)
        if x.ndim != 2 or x.shape[1] < 2:
            raise ValueError(f"RosenbrockModel: x must be (B, D) with D >= 2, got shape {tuple(x.shape)}.")
        head, tail = x[:, :-1], x[:, 1:]
        r = self.a - head
        s = tail - head.square()
        energy = (r.square() + self.b * s.square()).sum(dim=1)
        grad = torch.zeros_like(x)
        grad[:, :-1] = -2.0 * r - 4.0 * self.b * head * s
        grad[:, 1:] += 2.0 * self.b * s
        return energy, grad


class AckleyModel(BaseModel):
    r"""U(x) = -a exp(-b r) - exp(sum_i cos(c x_i) / n) + a + e, r = sqrt(sum_i x_i^2 / n).

    The minimum U(0) = 0 is a cone point; the gradient there is taken as 0 (finite), and r is
    computed from a floor of the smallest normal number so autograd agrees.
    """

    def __init__(self, a: float = 20.0, b: float = 0.2, c: float = 2 * math.pi, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__(dtype, device)
        self.a = float(a)
        self.b = float(b)
        self.c = float(c)

    def _radius(self, x: Tensor) -> Tensor:
        n = x[0].numel()
        return (event_sum(x * x) / n).clamp(min=torch.finfo(x.dtype).tiny).sqrt()

    def forward(self, x: Tensor) -> Tensor:
        x = _batch(x)
        n = x[0].numel()
        r = self._radius(x)
        return -self.a * torch.exp(-self.b * r) - torch.exp(event_sum(torch.cos(self.c * x)) / n) + self.a + math.e

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _batch(x)
        n = x[0].numel()
        view = (-1,) + (1,) * (x.ndim - 1)
        r = self._radius(x)
        radial = self.a * torch.exp(-self.b * r)
        wave = torch.exp(event_sum(torch.cos(self.c * x)) / n)
        energy = -radial - wave + self.a + math.e
        grad = (radial * self.b / (n * r)).view(view) * x + (wave * self.c / n).view(view) * torch.sin(self.c * x)
        return energy, grad


class RastriginModel(BaseModel):
    r"""U(x) = a n + sum_i [x_i^2 - a cos(2 pi x_i)], gradient 2 x_i + 2 pi a sin(2 pi x_i)."""

    def __init__(self, a: float = 10.0, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__(dtype, device)
        self.a = float(a)

    def forward(self, x: Tensor) -> Tensor:
        return self.energy_and_gradient(x)[0]

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _batch(x)
        n = x[0].numel()
        angle = 2.0 * math.pi * x
        energy = self.a * n + event_sum(x.square() - self.a * torch.cos(angle))
        return energy, 2.0 * x + (2.0 * math.pi * self.a) * torch.sin(angle)


def _two_coordinates(who: str, x: Tensor) -> tuple[Tensor, Tensor]:
    x = _batch(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{who}: x must be (B, 2), got shape {tuple(x.shape)}; the function is defined in 2-D.")
    return x[:, 0], x[:, 1]


class BoothModel(BaseModel):
    r"""U(x) = (x_1 + 2 x_2 - 7)^2 + (2 x_1 + x_2 - 5)^2 on (B, 2), minimum 0 at (1, 3); with
    a = x_1 + 2x_2 - 7 and b = 2x_1 + x_2 - 5 the gradient is (2a + 4b, 4a + 2b)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.energy_and_gradient(x)[0]

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = _two_coordinates("BoothModel", x)
        a = x1 + 2.0 * x2 - 7.0
        b = 2.0 * x1 + x2 - 5.0
        return a * a + b * b, torch.stack((2.0 * a + 4.0 * b, 4.0 * a + 2.0 * b), dim=1)


class HimmelblauModel(BaseModel):
    r"""U(x) = (x_1^2 + x_2 - 11)^2 + (x_1 + x_2^2 - 7)^2 on (B, 2), four minima of value 0 (one
    at (3, 2)); with a, b the two brackets the gradient is (4 x_1 a + 2 b, 2 a + 4 x_2 b)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.energy_and_gradient(x)[0]

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = _two_coordinates("HimmelblauModel", x)
        a = x1 * x1 + x2 - 11.0
        b = x1 + x2 * x2 - 7.0
        return a * a + b * b, torch.stack((4.0 * x1 * a + 2.0 * b, 2.0 * a + 4.0 * x2 * b), dim=1)


class StyblinskiTangModel(BaseModel):
    r"""U(x) = \tfrac12 \sum_i (x_i^4 - 16 x_i^2 + 5 x_i), gradient 2 x_i^3 - 16 x_i + 5/2; any
    event shape. The global minimum is at x_i = -2.903534 in every coordinate, -39.16617 each."""

    def forward(self, x: Tensor) -> Tensor:
        return self.energy_and_gradient(x)[0]

    def energy_and_gradient(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _batch(x)
        sq = x * x
        return 0.5 * event_sum(sq * sq - 16.0 * sq + 5.0 * x), 2.0 * sq * x - 16.0 * x + 2.5
