import pytest
import torch
from tensordict import TensorDict
from torch import nn

from nnh.func import ema_source, ema_update, init_ema


def test_ema_update_matches_hand_computed_average():
    torch.manual_seed(0)
    ema = TensorDict({"a": torch.randn(3, 4), "b": torch.randn(5)}, batch_size=[])
    start = ema.clone()
    ps = [TensorDict({"a": torch.randn(3, 4), "b": torch.randn(5)}, batch_size=[]) for _ in range(3)]
    d = 0.9
    for p in ps:
        out = ema_update(ema, p, d)
        assert out is ema  # in place
    for k in ("a", "b"):
        expected = start[k]
        for p in ps:
            expected = d * expected + (1 - d) * p[k]
        torch.testing.assert_close(ema[k], expected, rtol=1e-6, atol=1e-6)


def test_ema_tracks_floating_buffers_not_integer_ones():
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    keys = set(ema_source(m).keys())
    assert {"1.running_mean", "1.running_var", "0.weight"} <= keys
    assert "1.num_batches_tracked" not in keys
    ema = init_ema(m)
    assert ema["0.weight"] is not m[0].weight and torch.equal(ema["0.weight"], m[0].weight)


def test_ema_update_rejects_bad_decay():
    td = TensorDict({"a": torch.zeros(2)}, batch_size=[])
    with pytest.raises(ValueError, match="decay=1.5"):
        ema_update(td, td.clone(), 1.5)


def test_ema_update_takes_a_tensor_decay_and_a_plain_dict():
    torch.manual_seed(0)
    ema = TensorDict({"a": torch.randn(3, 4), "b": torch.randn(5)}, batch_size=[])
    params = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    expected = ema_update(ema.clone(), TensorDict(params, batch_size=[]), 0.999)
    # A float64 decay gives the float path's weight 1 - decay exactly.
    out = ema_update(ema.clone(), params, torch.tensor(0.999, dtype=torch.float64))
    for k in ("a", "b"):
        assert torch.equal(out[k], expected[k])
    frozen = ema_update(ema.clone(), params, torch.tensor(1.0))  # decay 1: a gated-off update
    for k in ("a", "b"):
        assert torch.equal(frozen[k], ema[k])


def test_ema_update_walks_nested_states():
    ema = TensorDict({"enc": TensorDict({"w": torch.zeros(2)}, batch_size=[]), "b": torch.zeros(1)}, batch_size=[])
    params = {"enc": {"w": torch.ones(2)}, "b": torch.full((1,), 2.0)}
    ema_update(ema, params, 0.75)
    assert ema["enc", "w"].tolist() == [0.25, 0.25] and ema["b"].tolist() == [0.5]
