"""Schedulers: v(k) formulas, both argument spellings, state and checkpoint round trips."""

import math

import pytest

from nnh import (
    ConstantScheduler,
    CosineScheduler,
    ExponentialDecayScheduler,
    LinearScheduler,
    MultiStepScheduler,
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
