"""Schedulers: v(k) formulas, both argument spellings, state and checkpoint round trips."""

import math

import pytest

from nnh import (
    ConstantScheduler,
    CosineScheduler,
    ExponentialDecayScheduler,
    LinearScheduler,
    MultiStepScheduler,
    TemperatureScheduler,
    WarmupScheduler,
)
from nnh.func.checkpoint import decode_value, encode_value


def values(scheduler, n):
    """[v(0), v(1), ..., v(n)] as seen through get_value() and step()."""
    out = [scheduler.get_value()]
    out += [scheduler.step() for _ in range(n)]
    return out


def test_formulas():
    assert values(ConstantScheduler(0.3), 3) == [0.3] * 4
    assert values(LinearScheduler(1.0, 0.0, 4), 6) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0])
    cos = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)] + [0.1, 0.1]
    assert values(CosineScheduler(1.0, 0.1, 4), 5) == pytest.approx(cos)
    assert values(ExponentialDecayScheduler(1.0, 0.5, min_value=0.2), 4) == pytest.approx([1.0, 0.5, 0.25, 0.2, 0.2])
    assert values(MultiStepScheduler(1.0, [2, 4], gamma=0.1), 5) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    warm = WarmupScheduler(LinearScheduler(1.0, 0.0, 4), warmup_steps=2, warmup_init_factor=0.1)
    assert values(warm, 7) == pytest.approx([0.1, 0.55, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


def test_both_spellings_and_conflicts():
    a = LinearScheduler(start_value=0.05, end_value=0.03, n_steps=100)
    b = LinearScheduler(initial_value=0.05, final_value=0.03, total_steps=100)
    assert values(a, 120) == values(b, 120)
    c = CosineScheduler(initial_value=3e-2, final_value=5e-3, total_steps=100)
    assert values(c, 100)[-1] == pytest.approx(5e-3)
    assert ConstantScheduler(initial_value=2.0).get_value() == 2.0
    with pytest.raises(ValueError, match="got n_steps=10 and total_steps=20; pass only one"):
        LinearScheduler(1.0, 0.0, n_steps=10, total_steps=20)
    with pytest.raises(TypeError, match="missing end_value \\(also accepted as final_value\\)"):
        CosineScheduler(start_value=1.0, n_steps=3)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: LinearScheduler(1.0, 0.0, 0), "n_steps must be a positive int, got 0"),
        (lambda: ExponentialDecayScheduler(1.0, 1.5), "decay_rate must be in \\(0, 1\\], got 1.5"),
        (lambda: MultiStepScheduler(1.0, [3, 2]), "strictly increasing"),
        (lambda: ConstantScheduler(float("nan")), "start_value must be a finite number"),
        (lambda: WarmupScheduler(0.1, 3), "main_scheduler must be a scheduler"),
    ],
)
def test_errors(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_state_dict_and_checkpoint_encoding_round_trip():
    warm = WarmupScheduler(CosineScheduler(start_value=1.0, end_value=0.0, n_steps=10), warmup_steps=3)
    for _ in range(6):
        warm.step()
    assert warm.init_kwargs == {"warmup_steps": 3} and isinstance(warm.init_args[0], CosineScheduler)
    restored = decode_value(encode_value(warm, "scheduler"))  # what a handler checkpoint stores
    assert type(restored) is WarmupScheduler
    assert restored.state_dict() == warm.state_dict()
    assert values(restored, 8) == values(warm, 8)
    fresh = WarmupScheduler(CosineScheduler(1.0, 0.0, 10), 3)
    fresh.load_state_dict(warm.state_dict())
    assert fresh.get_value() == warm.get_value()
    warm.reset()
    assert warm.step_count == 0 and warm.main_scheduler.step_count == 0


BUILT = [
    (lambda: ConstantScheduler(0.3), lambda: ConstantScheduler(9.0)),
    (lambda: LinearScheduler(1.0, 0.2, 10), lambda: LinearScheduler(5.0, 4.0, 3)),
    (lambda: CosineScheduler(1.0, 0.1, 8), lambda: CosineScheduler(2.0, 1.0, 50)),
    (lambda: ExponentialDecayScheduler(1.0, 0.7, min_value=0.05), lambda: ExponentialDecayScheduler(3.0, 0.99)),
    (lambda: MultiStepScheduler(1.0, [3, 5], gamma=0.5), lambda: MultiStepScheduler(2.0, [10], gamma=0.1)),
    (lambda: WarmupScheduler(ExponentialDecayScheduler(1.0, 0.8), 3, 0.2),
     lambda: WarmupScheduler(ExponentialDecayScheduler(7.0, 0.5), 1, 0.5)),
    (lambda: TemperatureScheduler(0.4, tau_star=0.5, n_steps=10, t_end=1.5),
     lambda: TemperatureScheduler(2.0, tau_star=0.1, n_steps=3, sqrt=False)),
]


@pytest.mark.parametrize("make, make_other", BUILT)
def test_state_dict_carries_every_parameter(make, make_other):
    # Loading the state into a scheduler of the same class built with other numbers gives the
    # saved schedule from the saved step on, and the same schedule after a reset.
    saved = make()
    for _ in range(4):
        saved.step()
    other = make_other()
    other.load_state_dict(saved.state_dict())
    assert values(other, 12) == values(saved, 12)
    other.reset()
    saved.reset()
    assert values(other, 12) == values(saved, 12)


def test_state_dict_of_an_older_nnh_still_loads():
    s = ExponentialDecayScheduler(1.0, 0.5)
    s.load_state_dict({"step_count": 2, "current_value": 0.25})
    assert s.step() == 0.125


def test_temperature_scheduler_formula():
    # t_k = k / 10 over [0, 1.5]: zero below tau* = 0.5, linear ramp to 1, then the plateau.
    raw = TemperatureScheduler(0.4, tau_star=0.5, n_steps=10, t_end=1.5, sqrt=False)
    t = [1.5 * min(k, 10) / 10 for k in range(13)]
    expected = [0.0 if u < 0.5 else (0.4 * (u - 0.5) / 0.5 if u < 1.0 else 0.4) for u in t]
    assert values(raw, 12) == pytest.approx(expected)
    root = TemperatureScheduler(0.4, tau_star=0.5, n_steps=10, t_end=1.5)
    assert values(root, 12) == pytest.approx([math.sqrt(e) for e in expected])
    assert TemperatureScheduler(1.0, tau_star=0.0, n_steps=4).get_value() == 0.0  # eps(0) = 0 at tau* = 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon_max": -1.0}, "epsilon_max must be >= 0"),
        ({"epsilon_max": 1.0, "tau_star": 1.0}, r"tau_star must be in \[0, 1\)"),
        ({"epsilon_max": 1.0, "n_steps": 0}, "n_steps must be a positive int"),
        ({"epsilon_max": 1.0, "t_start": 1.0, "t_end": 0.5}, "t_end=0.5 must be >= t_start=1.0"),
    ],
)
def test_temperature_scheduler_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TemperatureScheduler(**kwargs)
