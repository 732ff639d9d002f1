r"""Parameter schedulers for MCMC samplers: a value v(k) for each step k = 0, 1, 2, ...

A scheduler starts at k = 0 with ``get_value() == v(0)``; ``step()`` moves to k + 1 and returns
v(k + 1). A sampler uses v(k) for its step k and then steps its schedulers, so step k of a run
sees v(k). Linear and cosine schedules reach ``end_value`` at k = ``n_steps`` and stay there.

Two spellings are accepted for the same arguments, as both appear in user code:
``start_value / end_value / n_steps`` and ``initial_value / final_value / total_steps``.
Passing both spellings of one argument with different values is an error.

Every scheduler records its constructor arguments (``init_args``, ``init_kwargs``) and has
``state_dict()`` / ``load_state_dict()``. The state holds every constructor parameter besides the
step count and the current value, so loading it into a scheduler of the same class built with
other numbers gives the saved schedule (``WarmupScheduler`` nests its main scheduler's state).
"""

from __future__ import annotations

import abc
import math
from typing import Any, Sequence

from nnh._init_record import RecordsInit

__all__ = [
    "BaseScheduler",
    "ConstantScheduler",
    "CosineScheduler",
    "ExponentialDecayScheduler",
    "LinearScheduler",
    "MultiStepScheduler",
    "TemperatureScheduler",
    "WarmupScheduler",
]


def _pick(owner: str, name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """Resolve an argument given under either of its two names."""
    if value is not None and alias_value is not None and value != alias_value:
        raise ValueError(f"{owner}: got {name}={value!r} and {alias}={alias_value!r}; pass only one of them.")
    chosen = value if value is not None else alias_value
    if chosen is None:
        raise TypeError(f"{owner}: missing {name} (also accepted as {alias}).")
    return chosen


def _finite_number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}.")
    return float(value)


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}.")
    return value


class BaseScheduler(RecordsInit, abc.ABC):
    """A schedule v(k). Subclasses implement `value_at(k)`, a pure function of the step, and
    list in ``_parameters`` the attributes (besides ``start_value``) that define it."""

    _parameters: tuple[str, ...] = ()

    def __init__(self, start_value: float) -> None:
        self.start_value = _finite_number(type(self).__name__, "start_value", start_value)
        self.step_count = 0
        self.current_value = self.value_at(0)

    @abc.abstractmethod
    def value_at(self, k: int) -> float:
        """v(k), the value for step k."""

    def get_value(self) -> float:
        """The value for the current step."""
        return self.current_value

    def step(self) -> float:
        """Advance to the next step and return its value."""
        self.step_count += 1
        self.current_value = self.value_at(self.step_count)
        return self.current_value

    def reset(self) -> None:
        """Back to step 0."""
        self.step_count = 0
        self.current_value = self.value_at(0)

    def state_dict(self) -> dict[str, Any]:
        """``step_count``, ``current_value`` and every parameter of the schedule (plain values)."""
        state: dict[str, Any] = {name: getattr(self, name) for name in ("start_value", *self._parameters)}
        for name, value in state.items():
            if isinstance(value, list):
                state[name] = list(value)
        return {**state, "step_count": self.step_count, "current_value": self.current_value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned. Parameters missing from ``state_dict`` (a state
        saved by an older nnh, which kept only the count and the value) keep their values."""
        for name in ("start_value", *self._parameters):
            if name in state_dict:
                value = state_dict[name]
                setattr(self, name, list(value) if isinstance(value, (list, tuple)) else value)
        self.step_count = int(state_dict["step_count"])
        self.current_value = float(state_dict["current_value"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step={self.step_count}, value={self.current_value:.6g})"


class ConstantScheduler(BaseScheduler):
    """v(k) = start_value."""

    def __init__(self, start_value: float | None = None, *, initial_value: float | None = None) -> None:
        super().__init__(_pick("ConstantScheduler", "start_value", start_value, "initial_value", initial_value))

    def value_at(self, k: int) -> float:
        return self.start_value

    def step(self) -> float:
        # Called once per sampler step: skip recomputing a value that cannot change.
        self.step_count += 1
        return self.current_value


class LinearScheduler(BaseScheduler):
    r"""v(k) = start + (end - start) k / n for k < n, and end for k >= n."""

    _parameters = ("end_value", "n_steps")

    def __init__(
        self,
        start_value: float | None = None,
        end_value: float | None = None,
        n_steps: int | None = None,
        *,
        initial_value: float | None = None,
        final_value: float | None = None,
        total_steps: int | None = None,
    ) -> None:
        owner = type(self).__name__
        end = _pick(owner, "end_value", end_value, "final_value", final_value)
        self.end_value = _finite_number(owner, "end_value", end)
        self.n_steps = _positive_int(owner, "n_steps", _pick(owner, "n_steps", n_steps, "total_steps", total_steps))
        super().__init__(_pick(owner, "start_value", start_value, "initial_value", initial_value))

    def value_at(self, k: int) -> float:
        if k >= self.n_steps:
            return self.end_value
        return self.start_value + (self.end_value - self.start_value) * k / self.n_steps


class CosineScheduler(LinearScheduler):
    r"""v(k) = end + (start - end) (1 + cos(pi k / n)) / 2 for k < n, and end for k >= n."""

    def value_at(self, k: int) -> float:
        if k >= self.n_steps:
            return self.end_value
        return self.end_value + (self.start_value - self.end_value) * 0.5 * (1.0 + math.cos(math.pi * k / self.n_steps))


class ExponentialDecayScheduler(BaseScheduler):
    r"""v(k) = max(min_value, start_value * decay_rate^k), with 0 < decay_rate <= 1."""

    _parameters = ("decay_rate", "min_value")

    def __init__(
        self,
        start_value: float | None = None,
        decay_rate: float | None = None,
        min_value: float = 0.0,
        *,
        initial_value: float | None = None,
    ) -> None:
        owner = type(self).__name__
        if decay_rate is None or not 0.0 < decay_rate <= 1.0:
            raise ValueError(f"{owner}: decay_rate must be in (0, 1], got {decay_rate!r}.")
        if not min_value >= 0.0:
            raise ValueError(f"{owner}: min_value must be >= 0, got {min_value!r}.")
        self.decay_rate = float(decay_rate)
        self.min_value = float(min_value)
        super().__init__(_pick(owner, "start_value", start_value, "initial_value", initial_value))

    def value_at(self, k: int) -> float:
        return max(self.min_value, self.start_value * self.decay_rate**k)


class MultiStepScheduler(BaseScheduler):
    r"""v(k) = start_value * gamma^m(k), m(k) = the number of milestones <= k."""

    _parameters = ("milestones", "gamma")

    def __init__(
        self,
        start_value: float | None = None,
        milestones: Sequence[int] | None = None,
        gamma: float = 0.1,
        *,
        initial_value: float | None = None,
    ) -> None:
        owner = type(self).__name__
        milestones = list(milestones) if milestones is not None else []
        if not milestones or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in milestones):
            raise ValueError(f"{owner}: milestones must be a non-empty list of positive ints, got {milestones!r}.")
        if any(a >= b for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"{owner}: milestones must be strictly increasing, got {milestones!r}.")
        self.milestones = milestones
        self.gamma = _finite_number(owner, "gamma", gamma)
        super().__init__(_pick(owner, "start_value", start_value, "initial_value", initial_value))

    def value_at(self, k: int) -> float:
        return self.start_value * self.gamma ** sum(1 for m in self.milestones if k >= m)


class WarmupScheduler(BaseScheduler):
    r"""Linear warm-up into ``main_scheduler``: with W = warmup_steps, s0 = f * v_main(0),

    v(k) = s0 + (v_main(0) - s0) k / W for k <= W, and v_main(k - W) after,

    so the main schedule starts once the warm-up ends. f = ``warmup_init_factor``.
    """

    _parameters = ("warmup_steps", "warmup_init_factor", "target_value")

    def __init__(self, main_scheduler: BaseScheduler, warmup_steps: int, warmup_init_factor: float = 0.01) -> None:
        owner = type(self).__name__
        if not isinstance(main_scheduler, BaseScheduler):
            raise TypeError(f"{owner}: main_scheduler must be a scheduler, got {type(main_scheduler).__name__}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"{owner}: warmup_steps must be an int >= 0, got {warmup_steps!r}.")
        self.main_scheduler = main_scheduler
        self.warmup_steps = warmup_steps
        self.warmup_init_factor = _finite_number(owner, "warmup_init_factor", warmup_init_factor)
        self.target_value = main_scheduler.value_at(0)
        main_scheduler.reset()
        super().__init__(self.target_value * self.warmup_init_factor)

    def value_at(self, k: int) -> float:
        if k <= self.warmup_steps and self.warmup_steps > 0:
            return self.start_value + (self.target_value - self.start_value) * k / self.warmup_steps
        return self.main_scheduler.value_at(k - self.warmup_steps)

    def step(self) -> float:
        # Keep the main scheduler's own count in step, so its state is right when saved.
        if self.step_count + 1 > self.warmup_steps:
            self.main_scheduler.step()
        return super().step()

    def reset(self) -> None:
        self.main_scheduler.reset()
        super().reset()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "main_scheduler": self.main_scheduler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.main_scheduler.load_state_dict(state_dict["main_scheduler"])


class TemperatureScheduler(BaseScheduler):
    r"""A piecewise-linear temperature over a virtual time t, for two-regime (transport, then
    Boltzmann) sampling. Step k maps to :math:`t_k = t_0 + (t_1 - t_0) \min(k, n) / n` and

    .. math:: \epsilon(t) = 0 \;(t < \tau^*),\qquad
        \epsilon_{max} \frac{t - \tau^*}{1 - \tau^*} \;(\tau^* \le t < 1),\qquad
        \epsilon_{max} \;(t \ge 1)

    v(k) is :math:`\sqrt{\epsilon(t_k)}` with ``sqrt=True`` (the default: a ready
    ``noise_scale`` for `LangevinDynamics`, whose noise is then
    :math:`\sqrt{2 \epsilon h}\,\xi`), else :math:`\epsilon(t_k)`.

    Args:
        epsilon_max: the plateau temperature, >= 0. tau_star: the switch time, in [0, 1).
        n_steps: steps from ``t_start`` to ``t_end`` (> 0); the value holds after them.
        t_start, t_end: virtual times at steps 0 and n, ``t_end >= t_start`` (t_end may pass 1).
    """

    _parameters = ("epsilon_max", "tau_star", "n_steps", "t_start", "t_end", "sqrt")

    def __init__(
        self,
        epsilon_max: float,
        tau_star: float = 0.8,
        n_steps: int = 200,
        t_start: float = 0.0,
        t_end: float = 1.0,
        sqrt: bool = True,
    ) -> None:
        owner = type(self).__name__
        self.epsilon_max = _finite_number(owner, "epsilon_max", epsilon_max)
        if self.epsilon_max < 0:
            raise ValueError(f"{owner}: epsilon_max must be >= 0, got {epsilon_max!r}.")
        self.tau_star = _finite_number(owner, "tau_star", tau_star)
        if not 0.0 <= self.tau_star < 1.0:
            raise ValueError(f"{owner}: tau_star must be in [0, 1), got {tau_star!r}.")
        self.n_steps = _positive_int(owner, "n_steps", n_steps)
        self.t_start = _finite_number(owner, "t_start", t_start)
        self.t_end = _finite_number(owner, "t_end", t_end)
        if self.t_end < self.t_start:
            raise ValueError(f"{owner}: t_end={t_end!r} must be >= t_start={t_start!r}.")
        self.sqrt = bool(sqrt)
        super().__init__(self._value_at_time(self.t_start))

    def epsilon_at(self, t: float) -> float:
        r""":math:`\epsilon(t)`, the temperature at virtual time t."""
        if t < self.tau_star:
            return 0.0
        if t < 1.0:
            return self.epsilon_max * (t - self.tau_star) / (1.0 - self.tau_star)
        return self.epsilon_max

    def _value_at_time(self, t: float) -> float:
        epsilon = self.epsilon_at(t)
        return math.sqrt(epsilon) if self.sqrt else epsilon

    def value_at(self, k: int) -> float:
        return self._value_at_time(self.t_start + (self.t_end - self.t_start) * min(k, self.n_steps) / self.n_steps)
