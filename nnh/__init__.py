"""nnh: one handler object for a PyTorch model's whole life, over a functional core."""

from nnh._version import __version__
from nnh.stateful import LoggingMode, ModelType, NNHandler, Sampler, load_model_code
from nnh.stateful.mcmc import *  # noqa: F401,F403  (MCMC samplers, energy models, schedulers, CD)
from nnh.stateful.mcmc import __all__ as _mcmc_all

__all__ = ["__version__", "LoggingMode", "ModelType", "NNHandler", "Sampler", "load_model_code", *_mcmc_all]
