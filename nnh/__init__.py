"""nnh: one handler object for a PyTorch model's whole life, over a functional core."""

from nnh._version import __version__

__all__ = ["__version__"]
