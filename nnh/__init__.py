"""nnh: one handler object for a PyTorch model's whole life, over a functional core."""

from nnh._version import __version__
from nnh.stateful import LoggingMode
from nnh.stateful import ModelType
from nnh.stateful import NNHandler
from nnh.stateful import Sampler
from nnh.stateful import load_model_code
from nnh.stateful.mcmc.energy import AckleyModel
from nnh.stateful.mcmc.energy import BaseModel
from nnh.stateful.mcmc.base import BaseSampler
from nnh.stateful.mcmc.schedulers import BaseScheduler
from nnh.stateful.mcmc.schedulers import ConstantScheduler
from nnh.stateful.mcmc.contrastive_divergence import ContrastiveDivergence
from nnh.stateful.mcmc.schedulers import CosineScheduler
from nnh.stateful.mcmc.energy import DoubleWellModel
from nnh.stateful.mcmc.schedulers import ExponentialDecayScheduler
from nnh.stateful.mcmc.energy import GaussianModel
from nnh.stateful.mcmc.hmc import HamiltonianMonteCarlo
from nnh.stateful.mcmc.energy import HarmonicModel
from nnh.stateful.mcmc.langevin import LangevinDynamics
from nnh.stateful.mcmc.schedulers import LinearScheduler
from nnh.stateful.mcmc.mala import MALA
from nnh.stateful.mcmc.schedulers import MultiStepScheduler
from nnh.stateful.mcmc.plotting import plot_samples_vs_density
from nnh.stateful.mcmc.plotting import plot_trajectory
from nnh.stateful.mcmc.energy import RastriginModel
from nnh.stateful.mcmc.energy import RosenbrockModel
from nnh.stateful.mcmc.schedulers import WarmupScheduler
from nnh.func.sde import VPSDE
from nnh.func.sde import VESDE
from nnh.func.sde import SubVPSDE
from nnh.func.score import denoising_score_matching
from nnh.func.likelihood import bits_per_dim
from nnh.utils.distributed import all_reduce_weighted_mean
from nnh.utils.distributed import barrier
from nnh.utils.distributed import gather_object
from nnh.utils.distributed import get_local_rank
from nnh.utils.distributed import get_rank
from nnh.utils.distributed import get_world_size
from nnh.utils.distributed import is_distributed
from nnh.utils.distributed import on_rank

__all__ = [
    "__version__",
    "LoggingMode",
    "ModelType",
    "NNHandler",
    "Sampler",
    "load_model_code",
    "AckleyModel",
    "BaseModel",
    "BaseSampler",
    "BaseScheduler",
    "ConstantScheduler",
    "ContrastiveDivergence",
    "CosineScheduler",
    "DoubleWellModel",
    "ExponentialDecayScheduler",
    "GaussianModel",
    "HamiltonianMonteCarlo",
    "HarmonicModel",
    "LangevinDynamics",
    "LinearScheduler",
    "MALA",
    "MultiStepScheduler",
    "plot_samples_vs_density",
    "plot_trajectory",
    "RastriginModel",
    "RosenbrockModel",
    "WarmupScheduler",
    "VPSDE",
    "VESDE",
    "SubVPSDE",
    "denoising_score_matching",
    "bits_per_dim",
    "all_reduce_weighted_mean",
    "barrier",
    "gather_object",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "on_rank",
]
