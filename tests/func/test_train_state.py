"""nnh.func.train_state: the train state's scalars have the dtypes the module docstring
promises whatever the default dtype, and live on the module's device."""

import torch
from torch import nn

from nnh.func.train_state import init_train_state


def test_the_scalars_keep_their_dtypes_under_a_float64_default(float64_default):
    module = nn.Linear(3, 2)
    state = init_train_state(module, grad_scaler=True, init_scale=1024.0)
    assert state["params", "weight"].dtype == torch.float64  # the module follows the default
    assert state["step"].dtype == torch.int64
    assert state["acc_samples"].dtype == torch.float32
    assert state["acc_nonfinite"].dtype == torch.bool
    assert state["scaler", "scale"].dtype == torch.float32 and state["scaler", "scale"].item() == 1024.0
    assert state["scaler", "growth_tracker"].dtype == torch.int32


def test_the_scalars_live_on_the_modules_device():
    # The meta device stands in for an accelerator: nothing may fall back to the CPU.
    module = nn.Linear(3, 2, device="meta")
    state = init_train_state(module, grad_scaler=True)
    for key in ["step", "acc_samples", "acc_nonfinite", ("scaler", "scale"), ("scaler", "growth_tracker")]:
        assert state[key].device.type == "meta", key
    assert state["params", "weight"] is module.weight
