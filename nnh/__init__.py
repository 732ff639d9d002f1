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
# Names a TorchEBM user finds under the same spelling
from nnh.stateful.mcmc.energy import BoothModel
from nnh.stateful.mcmc.energy import HimmelblauModel
from nnh.stateful.mcmc.energy import StyblinskiTangModel
from nnh.stateful.mcmc.schedulers import TemperatureScheduler
from nnh.stateful.mcmc.schedulable import Schedulable
from nnh.stateful.mcmc.integrators import BaseIntegrator
from nnh.stateful.mcmc.integrators import BaseRungeKuttaIntegrator
from nnh.stateful.mcmc.integrators import BaseSDERungeKuttaIntegrator
from nnh.stateful.mcmc.integrators import BaseSymplecticIntegrator
from nnh.stateful.mcmc.integrators import EulerMaruyamaIntegrator
from nnh.stateful.mcmc.integrators import GeneralisedLeapfrogIntegrator
from nnh.stateful.mcmc.integrators import HeunIntegrator
from nnh.stateful.mcmc.integrators import LeapfrogIntegrator
from nnh.stateful.mcmc.integrators import RK4Integrator
from nnh.stateful.mcmc.integrators import get_integrator
from nnh.stateful.mcmc.descent import GradientDescentSampler
from nnh.stateful.mcmc.descent import NesterovSampler
from nnh.stateful.mcmc.rmhmc import RiemannianManifoldHMC
from nnh.stateful.mcmc.losses import BaseContrastiveDivergence
from nnh.stateful.mcmc.losses import BaseLoss
from nnh.stateful.mcmc.contrastive_divergence import PersistentContrastiveDivergence
from nnh.stateful.mcmc.score_matching import BaseScoreMatching
from nnh.stateful.mcmc.score_matching import DenoisingScoreMatching
from nnh.stateful.mcmc.score_matching import SlicedScoreMatching
from nnh.stateful.mcmc.flow_sampler import FlowSampler
from nnh.stateful.mcmc.flow_sampler import PredictionType

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
    # Names a TorchEBM user finds under the same spelling
    "BoothModel",
    "HimmelblauModel",
    "StyblinskiTangModel",
    "TemperatureScheduler",
    "Schedulable",
    "BaseIntegrator",
    "BaseRungeKuttaIntegrator",
    "BaseSDERungeKuttaIntegrator",
    "BaseSymplecticIntegrator",
    "EulerMaruyamaIntegrator",
    "GeneralisedLeapfrogIntegrator",
    "HeunIntegrator",
    "LeapfrogIntegrator",
    "RK4Integrator",
    "get_integrator",
    "GradientDescentSampler",
    "NesterovSampler",
    "RiemannianManifoldHMC",
    "BaseContrastiveDivergence",
    "BaseLoss",
    "PersistentContrastiveDivergence",
    "BaseScoreMatching",
    "DenoisingScoreMatching",
    "SlicedScoreMatching",
    "FlowSampler",
    "PredictionType",
]
