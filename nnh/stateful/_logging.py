"""The per-handler logger."""

from __future__ import annotations

import itertools
import logging
import os
import sys

from nnh.stateful.enums import LoggingMode

_ids = itertools.count()
_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def make_logger(mode: LoggingMode | str | None, filename: str, level: int) -> logging.Logger | None:
    """A logger of its own for one handler (no shared handlers between two NNHandlers), writing
    to the console, a file or both; None when `mode` is None."""
    if mode is None:
        return None
    mode = LoggingMode.from_string(mode)
    logger = logging.getLogger(f"nnh.NNHandler.{next(_ids)}")
    logger.setLevel(level)
    logger.propagate = False
    formatter = logging.Formatter(_FORMAT)
    sinks: list[logging.Handler] = []
    if mode in (LoggingMode.CONSOLE, LoggingMode.BOTH):
        sinks.append(logging.StreamHandler(sys.stderr))
    if mode in (LoggingMode.FILE, LoggingMode.BOTH):
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        sinks.append(logging.FileHandler(filename))
    for sink in sinks:
        sink.setFormatter(formatter)
        sink.setLevel(level)
        logger.addHandler(sink)
    return logger
