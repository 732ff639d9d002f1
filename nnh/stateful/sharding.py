"""Data under torch.distributed: each rank's share of a dataset, and predictions gathered back.

`set_train_loader` / `set_val_loader` give a map-style dataset a `ShardSampler` (a
`DistributedSampler` whose shuffle seed is the run's seed), so each rank reads its own
1/world_size of every epoch; the user's `shuffle` and `drop_last` keep their meaning.
`predict` shards a sequential loader the same way and gathers the outputs on rank 0 in dataset
order, without the samples the sampler repeats to even out the ranks.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, SequentialSampler
from torch.utils._pytree import tree_flatten, tree_unflatten

from nnh.stateful.runtime import Runtime

__all__ = ["ShardSampler", "shard_kwargs", "warn_unsharded", "start_epoch", "predict_loader", "gather_predictions"]


class ShardSampler(DistributedSampler):
    """A `DistributedSampler` built by nnh: its shuffle seed follows the run's seed (see
    `start_epoch`), so runs with different seeds see different orders, as in one process."""


def shard_kwargs(which: str, dataset: Any, loader_kwargs: dict[str, Any], runtime: Runtime) -> dict[str, Any]:
    """`loader_kwargs` with a `ShardSampler` over `dataset` for this rank, when nnh shards it:
    a map-style dataset without a sampler or batch sampler of the user's."""
    if not runtime.distributed or isinstance(dataset, IterableDataset):
        return loader_kwargs
    if "sampler" in loader_kwargs or "batch_sampler" in loader_kwargs:
        given = loader_kwargs.get("sampler") or loader_kwargs.get("batch_sampler")
        warn_unsharded(which, given)
        return loader_kwargs
    kwargs = dict(loader_kwargs)
    shuffle = bool(kwargs.pop("shuffle", False))
    kwargs["sampler"] = ShardSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=shuffle,
                                     drop_last=bool(kwargs.get("drop_last", False)))
    return kwargs


def warn_unsharded(which: str, sampler: Any) -> None:
    """Warn that every rank reads all of a `which` loader whose sampler nnh did not build."""
    if isinstance(sampler, DistributedSampler) or isinstance(getattr(sampler, "sampler", None), DistributedSampler):
        return
    warnings.warn(f"set_{which}_loader under torch.distributed: the loader's sampler ({type(sampler).__name__}) "
                  "is not a DistributedSampler, so every rank reads the whole dataset. Pass the Dataset with "
                  "loader kwargs (nnh then shards it), or give the loader a DistributedSampler.",
                  UserWarning, stacklevel=4)


def start_epoch(loader: Any, epoch: int, seed: int | None) -> None:
    """Tell the loader's sampler which epoch starts (its shuffle order), and give a
    `ShardSampler` the run's seed (0 without one)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, ShardSampler):
        sampler.seed = 0 if seed is None else seed
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def predict_loader(loader: Any, runtime: Runtime) -> tuple[Any, list[int] | None]:
    """(the loader this rank predicts on, the dataset index of each sample it yields in order).

    A loader with a `DistributedSampler` is used as it is; a sequential batching loader over a
    map-style dataset is rebuilt with a `DistributedSampler(shuffle=False)` and the same
    batch size, collate function and workers. Any other loader (an IterableDataset, a custom
    sampler) runs whole on every rank, and the indices are None.
    """
    if not runtime.distributed:
        return loader, None
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader, [i for batch in loader.batch_sampler for i in batch]
    shardable = (isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)
                 and isinstance(loader.sampler, SequentialSampler) and loader.batch_size is not None)
    if not shardable:
        return loader, None
    sampler = DistributedSampler(loader.dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=False)
    mine = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
                      worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
                      prefetch_factor=loader.prefetch_factor if loader.num_workers else None,
                      persistent_workers=loader.persistent_workers)
    return mine, [i for batch in mine.batch_sampler for i in batch]


def gather_predictions(outputs: list[Any], indices: list[int] | None, runtime: Runtime, batch_size: int | None,
                       device: torch.device) -> list[Any] | None:
    """Rank 0: every rank's outputs in dataset order, each sample once, split into batches of
    `batch_size` (as one process would return them), on `device`. Other ranks: None.

    Outputs are tensors, or tuples/dicts of tensors, with the batch as their first dimension.
    Without `indices` (a loader every rank ran whole) rank 0 returns its own outputs.
    """
    if not runtime.distributed:
        return outputs
    if indices is None:
        return outputs if runtime.is_main else None
    leaves, spec = _concat(outputs)
    everything = runtime.gather((leaves, indices))  # every rank's outputs have rank 0's structure
    if not runtime.is_main:
        return None
    first: dict[int, int] = {}  # dataset index -> its first row in the concatenation of all ranks
    offset = 0
    for _, idx in everything:
        for pos, i in enumerate(idx):
            first.setdefault(i, offset + pos)
        offset += len(idx)
    order = sorted(first)
    pick = torch.tensor([first[i] for i in order], dtype=torch.long)
    if spec is None:
        return []
    merged = [torch.cat([part[j] for part, _ in everything if part]).index_select(0, pick).to(device)
              for j in range(spec.num_leaves)]
    size = batch_size or len(order) or 1
    return [tree_unflatten([t[start:start + size] for t in merged], spec) for start in range(0, len(order), size)]


def _concat(outputs: list[Any]) -> tuple[list[Tensor], Any]:
    """The outputs' leaves, each concatenated over the batches, and their tree structure."""
    if not outputs:
        return [], None
    flat = [tree_flatten(out) for out in outputs]
    spec = flat[0][1]
    for leaves, s in flat:
        if s != spec or not all(isinstance(t, Tensor) and t.dim() > 0 for t in leaves):
            raise TypeError("NNHandler.predict under torch.distributed gathers tensors, or tuples/dicts of tensors, "
                            "whose first dimension is the batch; the model returned something else. Return "
                            "tensors, or predict in one process.")
    return [torch.cat([leaves[j] for leaves, _ in flat]) for j in range(spec.num_leaves)], spec
