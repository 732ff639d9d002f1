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
]
