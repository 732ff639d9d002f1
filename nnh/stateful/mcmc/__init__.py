"""MCMC samplers, energy models, schedulers, contrastive divergence and their plots."""

from nnh.stateful.mcmc.base import BaseSampler
from nnh.stateful.mcmc.contrastive_divergence import ContrastiveDivergence
from nnh.stateful.mcmc.energy import AckleyModel
from nnh.stateful.mcmc.energy import BaseModel
from nnh.stateful.mcmc.energy import DoubleWellModel
from nnh.stateful.mcmc.energy import GaussianModel
from nnh.stateful.mcmc.energy import HarmonicModel
from nnh.stateful.mcmc.energy import RastriginModel
from nnh.stateful.mcmc.energy import RosenbrockModel
from nnh.stateful.mcmc.hmc import HamiltonianMonteCarlo
from nnh.stateful.mcmc.langevin import LangevinDynamics
from nnh.stateful.mcmc.mala import MALA
from nnh.stateful.mcmc.plotting import plot_samples_vs_density
from nnh.stateful.mcmc.plotting import plot_trajectory
from nnh.stateful.mcmc.schedulers import BaseScheduler
from nnh.stateful.mcmc.schedulers import ConstantScheduler
from nnh.stateful.mcmc.schedulers import CosineScheduler
from nnh.stateful.mcmc.schedulers import ExponentialDecayScheduler
from nnh.stateful.mcmc.schedulers import LinearScheduler
from nnh.stateful.mcmc.schedulers import MultiStepScheduler
from nnh.stateful.mcmc.schedulers import TemperatureScheduler
from nnh.stateful.mcmc.schedulers import WarmupScheduler
# Names a TorchEBM user finds under the same spelling
from nnh.stateful.mcmc.contrastive_divergence import PersistentContrastiveDivergence
from nnh.stateful.mcmc.descent import GradientDescentSampler
from nnh.stateful.mcmc.descent import NesterovSampler
from nnh.stateful.mcmc.energy import BoothModel
from nnh.stateful.mcmc.energy import HimmelblauModel
from nnh.stateful.mcmc.energy import StyblinskiTangModel
from nnh.stateful.mcmc.flow_sampler import FlowSampler
from nnh.stateful.mcmc.flow_sampler import PredictionType
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
from nnh.stateful.mcmc.losses import BaseContrastiveDivergence
from nnh.stateful.mcmc.losses import BaseLoss
from nnh.stateful.mcmc.rmhmc import RiemannianManifoldHMC
from nnh.stateful.mcmc.schedulable import Schedulable
from nnh.stateful.mcmc.score_matching import BaseScoreMatching
from nnh.stateful.mcmc.score_matching import DenoisingScoreMatching
from nnh.stateful.mcmc.score_matching import SlicedScoreMatching

__all__ = [
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
    "RastriginModel",
    "RosenbrockModel",
    "TemperatureScheduler",
    "WarmupScheduler",
    "plot_samples_vs_density",
    "plot_trajectory",
    # Names a TorchEBM user finds under the same spelling
    "PersistentContrastiveDivergence",
    "GradientDescentSampler",
    "NesterovSampler",
    "BoothModel",
    "HimmelblauModel",
    "StyblinskiTangModel",
    "FlowSampler",
    "PredictionType",
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
    "BaseContrastiveDivergence",
    "BaseLoss",
    "RiemannianManifoldHMC",
    "Schedulable",
    "BaseScoreMatching",
    "DenoisingScoreMatching",
    "SlicedScoreMatching",
]
