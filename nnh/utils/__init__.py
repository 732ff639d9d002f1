"""nnh.utils: helpers that work with or without `NNHandler`, in your own PyTorch code too."""

from nnh.utils.distributed import all_reduce_weighted_mean
from nnh.utils.distributed import barrier
from nnh.utils.distributed import gather_object
from nnh.utils.distributed import get_local_rank
from nnh.utils.distributed import get_rank
from nnh.utils.distributed import get_world_size
from nnh.utils.distributed import is_distributed
from nnh.utils.distributed import on_rank

__all__ = [
    "all_reduce_weighted_mean",
    "barrier",
    "gather_object",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "on_rank",
]
