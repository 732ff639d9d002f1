r"""Bases for the losses of energy models: `BaseLoss` and `BaseContrastiveDivergence`.

A loss is an ``nn.Module`` with a scheduler registry (`Schedulable`): ``register_scheduler(name,
value)`` on a loss, and ``step_schedulers()`` / ``reset_schedulers()`` advance its schedulers and
its sampler's together. `BaseContrastiveDivergence` holds what every contrastive-divergence
loss shares: the model, the sampler, and the persistent replay buffer.

The replay buffer. With ``persistent=True`` the chains live in ``replay_buffer`` (buffer_size,
*event_shape), a registered buffer (so ``loss.state_dict()`` carries it once it exists, and
``load_state_dict`` restores it into a fresh loss). It is filled on first use from ``init_dist``
(default N(0, I)) and then run for ``init_steps`` sampler steps. Each call takes B distinct slots
at random, restarts each of those chains from ``init_dist`` with probability
``new_sample_ratio``, and writes every chain back to its own slot after sampling.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from nnh.stateful._dtype import resolve_dtype
from nnh.stateful.checks import check_device, check_flag
from nnh.stateful.mcmc.schedulable import Schedulable

__all__ = ["BaseContrastiveDivergence", "BaseLoss"]


class BaseLoss(Schedulable, nn.Module, abc.ABC):
    """Base of nnh's losses: an ``nn.Module`` whose ``forward`` returns the loss, with a scheduler
    registry. ``dtype`` is the computation dtype (inputs are cast to it); None (the default) is
    the dtype of ``model`` (keyword-only, the loss's energy model; see `BaseSampler`), else
    ``torch.get_default_dtype()``. ``device`` None follows the inputs."""

    default_bound = None  # loss weights may be 0 or negative; samplers bound their step sizes

    def __init__(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None, *,
                 model: Any = None) -> None:
        nn.Module.__init__(self)
        self._init_schedulers()
        self.dtype = resolve_dtype(type(self).__name__, dtype, model)
        self.device = check_device(device, type(self).__name__) if device is not None else None

    def _scheduled_children(self) -> Iterable[Any]:
        return [v for v in vars(self).values() if isinstance(v, Schedulable)]

    def _placed(self, x: Tensor) -> Tensor:
        """``x`` on the loss's device (x's own when None) in its dtype."""
        if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] < 1:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: x must be a tensor of shape (B, *event_shape) with B >= 1, "
                             f"got {got}.")
        return x.to(device=self.device if self.device is not None else x.device, dtype=self.dtype)

    @abc.abstractmethod
    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        """The loss of a batch x."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BaseContrastiveDivergence(BaseLoss):
    """Shared state of contrastive-divergence losses: ``model``, ``sampler``, ``k_steps`` and the
    replay buffer (module docstring). Subclasses implement `forward` and `compute_loss`.

    Args:
        model: the energy model. sampler: an nnh sampler (``sample(x=..., n_steps=...)``).
        k_steps: sampler steps per call (>= 1). persistent: keep chains in the replay buffer.
        buffer_size: slots of the buffer (>= the batch size). new_sample_ratio: probability, in
            [0, 1], that a chain restarts from ``init_dist``. init_steps: sampler steps run on the
            buffer when it is filled (>= 0).
        dtype, device: see `BaseLoss`.
        init_dist: keyword-only. None (N(0, I)), a ``torch.distributions.Distribution`` whose
            ``sample((n,))`` is (n, *event_shape), or a callable ``n -> (n, *event_shape)``.
    """

    def __init__(
        self,
        model: Any,
        sampler: Any,
        k_steps: int = 1,
        persistent: bool = False,
        buffer_size: int = 100,
        new_sample_ratio: float = 0.0,
        init_steps: int = 0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        init_dist: Any = None,
    ) -> None:
        super().__init__(dtype, device, model=model)
        owner = type(self).__name__
        if not callable(model):
            raise TypeError(f"{owner}: model must be an energy nn.Module or callable, got {model!r}.")
        if not callable(getattr(sampler, "sample", None)):
            raise TypeError(f"{owner}: sampler must have a sample(...) method, got {sampler!r}.")
        for name, value, low in (("k_steps", k_steps, 1), ("buffer_size", buffer_size, 1), ("init_steps", init_steps, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}.")
        if not 0.0 <= new_sample_ratio <= 1.0:
            raise ValueError(f"{owner}: new_sample_ratio must be in [0, 1], got {new_sample_ratio!r}.")
        self.model = model
        self.sampler = sampler
        self.k_steps = k_steps
        check_flag(owner, "persistent", persistent)
        self.persistent = persistent
        self.buffer_size = buffer_size
        self.new_sample_ratio = float(new_sample_ratio)
        self.init_steps = init_steps
        if init_dist is not None and not (callable(getattr(init_dist, "sample", None)) or callable(init_dist)):
            raise TypeError(f"{owner}: init_dist={init_dist!r} must be None, a torch.distributions.Distribution or a "
                            "callable n -> (n, *event_shape), e.g. torch.distributions.Normal(0, 1).expand((2,)).")
        self.init_dist = init_dist
        self.register_buffer("replay_buffer", None)

    @property
    def buffer_initialized(self) -> bool:
        return self.replay_buffer is not None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A fresh loss has no buffer yet: take the saved one rather than reporting it unexpected.
        saved = state_dict.get(prefix + "replay_buffer")
        if saved is not None and self.replay_buffer is None:
            self.replay_buffer = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _draw_init(self, n: int, event_shape: tuple[int, ...], like: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
        device = like.device if like is not None else (self.device or torch.device("cpu"))
        if self.init_dist is None:
            return torch.randn((n, *event_shape), generator=generator, dtype=self.dtype, device=device)
        sample = getattr(self.init_dist, "sample", None)
        draws = sample((n,)) if callable(sample) else self.init_dist(n)
        if tuple(draws.shape) != (n, *event_shape):
            raise ValueError(
                f"{type(self).__name__}: init_dist gave shape {tuple(draws.shape)} for {n} samples; "
                f"it must give (n, *event_shape) = {(n, *event_shape)}."
            )
        return draws.to(device=device, dtype=self.dtype)

    def _sample(self, x: Tensor, n_steps: int, model_kwargs: dict[str, Any] | None,
                generator: torch.Generator | None) -> Tensor:
        # Only the keywords in use, so a plain sample(x=..., n_steps=...) sampler also works.
        extra: dict[str, Any] = {}
        if model_kwargs:
            extra["model_kwargs"] = model_kwargs
        if generator is not None:
            extra["generator"] = generator
        return self.sampler.sample(x=x, n_steps=n_steps, **extra).detach()

    @torch.no_grad()
    def initialize_buffer(self, data_shape_no_batch: tuple[int, ...], buffer_chunk_size: int = 1024,
                          init_noise_scale: float | None = None, generator: torch.Generator | None = None,
                          like: Tensor | None = None) -> Tensor | None:
        """Fill the buffer (persistent losses only; no-op once filled): ``init_dist`` draws, or
        N(0, init_noise_scale^2 I) when ``init_noise_scale`` is given, then ``init_steps``
        sampler steps, ``buffer_chunk_size`` chains at a time. Returns the buffer."""
        if not self.persistent or self.buffer_initialized:
            return self.replay_buffer
        shape = tuple(data_shape_no_batch)
        if init_noise_scale is not None:
            device = like.device if like is not None else (self.device or torch.device("cpu"))
            buffer = init_noise_scale * torch.randn((self.buffer_size, *shape), generator=generator, dtype=self.dtype,
                                                    device=device)
        else:
            buffer = self._draw_init(self.buffer_size, shape, like, generator)
        if self.init_steps > 0:
            for start in range(0, self.buffer_size, buffer_chunk_size):
                chunk = buffer[start:start + buffer_chunk_size]
                buffer[start:start + buffer_chunk_size] = self._sample(chunk, self.init_steps, None, generator)
        self.replay_buffer = buffer
        return buffer

    @torch.no_grad()
    def get_start_points(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Starting points (B, *event_shape): the data batch (CD-k), or buffer chains (PCD),
        whose slots `update_buffer` then writes back to."""
        starts, self._slots = self._chain_starts(x, generator)
        return starts

    def _chain_starts(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        if not self.persistent:
            return x.detach().clone(), None
        n = x.shape[0]
        if n > self.buffer_size:
            raise ValueError(
                f"{type(self).__name__}: batch of {n} chains but buffer_size={self.buffer_size}; "
                "use buffer_size >= the batch size."
            )
        if not self.buffer_initialized or self.replay_buffer.shape[1:] != x.shape[1:]:
            self.replay_buffer = None
            self.initialize_buffer(tuple(x.shape[1:]), generator=generator, like=x)
        self.replay_buffer = self.replay_buffer.to(device=x.device, dtype=x.dtype)
        gen_device = generator.device if generator is not None else x.device
        slots = torch.randperm(self.buffer_size, generator=generator, device=gen_device)[:n].to(x.device)
        starts = self.replay_buffer[slots]
        if self.new_sample_ratio > 0.0:
            restart = torch.rand(n, generator=generator, device=gen_device).to(x.device) < self.new_sample_ratio
            fresh = self._draw_init(n, tuple(x.shape[1:]), x, generator)
            starts = torch.where(restart.view((-1,) + (1,) * (x.ndim - 1)), fresh, starts)
        return starts, slots

    @torch.no_grad()
    def update_buffer(self, samples: Tensor, slots: Tensor | None = None) -> None:
        """Write ``samples`` back to the buffer: to ``slots`` (by default those of the last
        `get_start_points`). No-op for a non-persistent loss."""
        if not self.persistent or not self.buffer_initialized:
            return
        slots = slots if slots is not None else getattr(self, "_slots", None)
        if slots is None or slots.shape[0] != samples.shape[0]:
            raise ValueError(
                f"{type(self).__name__}.update_buffer: no slots for {samples.shape[0]} samples; pass slots=... "
                "or call get_start_points with the batch first."
            )
        self.replay_buffer[slots] = samples.detach().to(self.replay_buffer.dtype)

    @abc.abstractmethod
    def compute_loss(self, x: Tensor, pred_x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """The loss from positive samples ``x`` and negative samples ``pred_x``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, sampler={type(self.sampler).__name__})"
