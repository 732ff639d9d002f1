"""nnh.func: pure functions over `tensordict.TensorDict` state.

Usable in custom loops and under `torch.compile`; `nnh.stateful` is a thin shell over them.
"""

from nnh.func.amp import unscale_grads
from nnh.func.amp import update_scale
from nnh.func.ema import ema_source
from nnh.func.ema import ema_update
from nnh.func.ema import init_ema
from nnh.func.optim import has_functional_update
from nnh.func.optim import init_optimizer_state
from nnh.func.optim import optimizer_update
from nnh.func.train import batch_size_of
from nnh.func.train import clip_grad_norm
from nnh.func.train import init_train_state
from nnh.func.train import train_step
from nnh.func.checkpoint import CHECKSUM_KEY
from nnh.func.checkpoint import Unstorable
from nnh.func.checkpoint import add_checksum
from nnh.func.checkpoint import tensor_checksum
from nnh.func.checkpoint import verify_checksum
from nnh.func.checkpoint import atomic_save
from nnh.func.checkpoint import atomic_write
from nnh.func.checkpoint import CheckpointError
from nnh.func.checkpoint import decode_value
from nnh.func.checkpoint import encode_value
from nnh.func.checkpoint import find_unrecorded
from nnh.func.checkpoint import FORMAT_VERSION
from nnh.func.checkpoint import import_object
from nnh.func.checkpoint import import_path
from nnh.func.checkpoint import load_state_from_dict
from nnh.func.checkpoint import read_checkpoint
from nnh.func.checkpoint import state_to_dict
from nnh.func.checkpoint import Unrecorded
from nnh.func.mcmc import autograd_energy_and_grad
from nnh.func.mcmc import ChainState
from nnh.func.mcmc import effective_sample_size
from nnh.func.mcmc import energy_and_grad_fn
from nnh.func.mcmc import EnergyAndGrad
from nnh.func.mcmc import event_sum
from nnh.func.mcmc import func_energy_and_grad
from nnh.func.mcmc import hmc_step
from nnh.func.mcmc import init_chain_state
from nnh.func.mcmc import kinetic_energy
from nnh.func.mcmc import langevin_proposal
from nnh.func.mcmc import langevin_step
from nnh.func.mcmc import leapfrog
from nnh.func.mcmc import mala_step
from nnh.func.mcmc import metropolis_accept
from nnh.func.mcmc import reject_nonfinite
from nnh.func.mcmc import select_chains
from nnh.func.mcmc import standard_normal_like
from nnh.func.mcmc import StepInfo
from nnh.func.mcmc import uniform_per_chain
from nnh.func.sde import VPSDE
from nnh.func.sde import VESDE
from nnh.func.sde import SubVPSDE
from nnh.func.score import batch_time
from nnh.func.score import model_score
from nnh.func.score import dsm_loss
from nnh.func.score import denoising_score_matching
from nnh.func.sampling import euler_maruyama_step
from nnh.func.sampling import langevin_corrector_step
from nnh.func.sampling import probability_flow_drift
from nnh.func.sampling import probability_flow_step
from nnh.func.divergence import hutchinson_divergence
from nnh.func.divergence import hutchinson_probes
from nnh.func.ode import euler_step
from nnh.func.ode import heun_step
from nnh.func.ode import rk4_step
from nnh.func.ode import ODE_STEPS
from nnh.func.likelihood import likelihood_ode_step
from nnh.func.likelihood import bits_per_dim
# Names a TorchEBM user finds under the same spelling
from nnh.func.energy_grad import conditioned_energy_and_grad
from nnh.func.integrators import Drift
from nnh.func.integrators import HamiltonField
from nnh.func.integrators import euler_maruyama_update
from nnh.func.integrators import generalised_leapfrog
from nnh.func.integrators import heun_update
from nnh.func.integrators import rk4_update
from nnh.func.mcmc import heun_langevin_step
from nnh.func.descent import gradient_descent_step
from nnh.func.descent import nesterov_step
from nnh.func.rmhmc import metric_cholesky
from nnh.func.rmhmc import riemannian_kinetic_energy
from nnh.func.rmhmc import rmhmc_step
from nnh.func.score_matching import denoising_score_matching_loss
from nnh.func.score_matching import energy_score
from nnh.func.score_matching import projection_probes
from nnh.func.score_matching import sliced_score_matching_loss
from nnh.func.flow import CosineInterpolant
from nnh.func.flow import Interpolant
from nnh.func.flow import LinearInterpolant
from nnh.func.flow import VariancePreservingInterpolant
from nnh.func.flow import diffusion_coefficient
from nnh.func.flow import expand_t_like_x
from nnh.func.flow import get_interpolant
from nnh.func.flow import score_from_prediction
from nnh.func.flow import velocity_from_prediction

__all__ = [
    "unscale_grads",
    "update_scale",
    "ema_source",
    "ema_update",
    "init_ema",
    "has_functional_update",
    "init_optimizer_state",
    "optimizer_update",
    "batch_size_of",
    "clip_grad_norm",
    "init_train_state",
    "train_step",
    "CHECKSUM_KEY",
    "Unstorable",
    "add_checksum",
    "tensor_checksum",
    "verify_checksum",
    "atomic_save",
    "atomic_write",
    "CheckpointError",
    "decode_value",
    "encode_value",
    "find_unrecorded",
    "FORMAT_VERSION",
    "import_object",
    "import_path",
    "load_state_from_dict",
    "read_checkpoint",
    "state_to_dict",
    "Unrecorded",
    "autograd_energy_and_grad",
    "ChainState",
    "effective_sample_size",
    "energy_and_grad_fn",
    "EnergyAndGrad",
    "event_sum",
    "func_energy_and_grad",
    "hmc_step",
    "init_chain_state",
    "kinetic_energy",
    "langevin_proposal",
    "langevin_step",
    "leapfrog",
    "mala_step",
    "metropolis_accept",
    "reject_nonfinite",
    "select_chains",
    "standard_normal_like",
    "StepInfo",
    "uniform_per_chain",
    "VPSDE",
    "VESDE",
    "SubVPSDE",
    "batch_time",
    "model_score",
    "dsm_loss",
    "denoising_score_matching",
    "euler_maruyama_step",
    "langevin_corrector_step",
    "probability_flow_drift",
    "probability_flow_step",
    "hutchinson_divergence",
    "hutchinson_probes",
    "euler_step",
    "heun_step",
    "rk4_step",
    "ODE_STEPS",
    "likelihood_ode_step",
    "bits_per_dim",
    # Names a TorchEBM user finds under the same spelling
    "conditioned_energy_and_grad",
    "Drift",
    "HamiltonField",
    "euler_maruyama_update",
    "generalised_leapfrog",
    "heun_update",
    "rk4_update",
    "heun_langevin_step",
    "gradient_descent_step",
    "nesterov_step",
    "metric_cholesky",
    "riemannian_kinetic_energy",
    "rmhmc_step",
    "denoising_score_matching_loss",
    "energy_score",
    "projection_probes",
    "sliced_score_matching_loss",
    "CosineInterpolant",
    "Interpolant",
    "LinearInterpolant",
    "VariancePreservingInterpolant",
    "diffusion_coefficient",
    "expand_t_like_x",
    "get_interpolant",
    "score_from_prediction",
    "velocity_from_prediction",
]
