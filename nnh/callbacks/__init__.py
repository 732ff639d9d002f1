"""Callbacks: hooks into `NNHandler.train`."""

__all__: list[str] = []
