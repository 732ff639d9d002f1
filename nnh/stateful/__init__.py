"""nnh.stateful: the objects users hold, thin shells over `nnh.func`."""

from nnh.stateful.checkpoint import load_model_code
from nnh.stateful.enums import LoggingMode
from nnh.stateful.enums import ModelType
from nnh.stateful.handler import NNHandler
from nnh.stateful.sampler import Sampler

__all__ = ["LoggingMode", "ModelType", "NNHandler", "Sampler", "load_model_code"]
