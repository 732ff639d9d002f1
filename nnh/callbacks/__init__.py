"""Callbacks: hooks into `NNHandler.train` (see docs/callbacks.md)."""

from nnh.callbacks.base import Callback
from nnh.callbacks.csv_logger import CSVLogger
from nnh.callbacks.early_stopping import EarlyStopping
from nnh.callbacks.epoch_timer import EpochTimer
from nnh.callbacks.garbage_collector import GarbageCollector
from nnh.callbacks.lr_monitor import LearningRateMonitor
from nnh.callbacks.model_checkpoint import ModelCheckpoint
from nnh.callbacks.tensorboard import TensorBoardLogger

__all__ = [
    "Callback",
    "CSVLogger",
    "EarlyStopping",
    "EpochTimer",
    "GarbageCollector",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "TensorBoardLogger",
]
