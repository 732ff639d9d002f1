"""nnh.func: pure functions over `tensordict.TensorDict` state.

Usable in custom loops and under `torch.compile`; `nnh.stateful` is a thin shell over them.
"""

from nnh.func.amp import unscale_grads, update_scale
from nnh.func.ema import ema_source, ema_update, init_ema
from nnh.func.optim import has_functional_update, init_optimizer_state, optimizer_update
from nnh.func.train import batch_size_of, clip_grad_norm, init_train_state, train_step
from nnh.func.mcmc import *  # noqa: F401,F403  (the MCMC steps: langevin_step, mala_step, hmc_step)
from nnh.func.mcmc import __all__ as _mcmc_all

__all__ = [
    "batch_size_of",
    "clip_grad_norm",
    "ema_source",
    "ema_update",
    "has_functional_update",
    "init_ema",
    "init_optimizer_state",
    "init_train_state",
    "optimizer_update",
    "train_step",
    "unscale_grads",
    "update_scale",
]

from nnh.func.checkpoint import (  # noqa: E402
    FORMAT_VERSION,
    CheckpointError,
    Unrecorded,
    atomic_save,
    decode_value,
    encode_value,
    find_unrecorded,
    import_object,
    import_path,
    load_state_from_dict,
    read_checkpoint,
    state_to_dict,
)

__all__ += [
    "FORMAT_VERSION",
    "CheckpointError",
    "Unrecorded",
    "atomic_save",
    "decode_value",
    "encode_value",
    "find_unrecorded",
    "import_object",
    "import_path",
    "load_state_from_dict",
    "read_checkpoint",
    "state_to_dict",
]

__all__ += list(_mcmc_all)
