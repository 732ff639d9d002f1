"""The draws of the chain steps follow the state's device (and dtype)."""

import torch

from nnh.func._noise import standard_normal_like, uniform_per_chain


def test_draws_are_made_on_the_states_device():
    # The meta device stands for any device other than the default one (a GPU).
    x = torch.empty(5, 3, dtype=torch.float64, device="meta")
    noise, uniform = standard_normal_like(x, None), uniform_per_chain(x, None)
    assert noise.device == x.device and noise.shape == (5, 3) and noise.dtype == torch.float64
    assert uniform.device == x.device and uniform.shape == (5,) and uniform.dtype == torch.float64
