"""Data loaders that fetch a whole batch per dataset call.

`DataLoader(TensorDataset(...), batch_size=256)` reads a batch as 256 `dataset[i]` calls and a
`default_collate` that stacks 256 rows per tensor. Indexing each tensor once with the batch's
indices gives the same tensors at about a tenth of the cost (`benchmarks/data_path.py`: ~13x on a
2-core CPU, batch 256 of 64 floats).

`build_loader` gets there without touching the loader's logic: it hands `DataLoader` a view of
the dataset with torch's own batched-fetch hook, `__getitems__(indices) -> batch`, which the
DataLoader calls with each list of indices its batch sampler yields, and a `collate_fn` that
passes that ready batch through. Every other argument goes to `DataLoader` as given, so the
samplers (`shuffle`, `sampler`, `batch_sampler`, `drop_last`, `generator`), their RNG draws,
`len(loader)`, `loader.sampler` (and `set_epoch` on it), workers and pinning are the standard
loader's own.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset, default_collate

__all__ = ["build_loader", "fetches_batches"]


def build_loader(dataset: Dataset, **loader_kwargs: Any) -> DataLoader:
    """`DataLoader(dataset, **loader_kwargs)`, fetching a whole batch per dataset call when it can.

    The batched path is taken for a map-style `dataset` when the loader batches (`batch_size`
    not None, or a `batch_sampler`), no `collate_fn` other than `default_collate` is given, and
    the dataset is one of
      - a `TensorDataset` (or a subclass keeping its `__getitem__` and `__len__`) of strided
        tensors: batch `[t[indices] for t in tensors]`, equal (`torch.equal`, dtype, a list)
        to `default_collate([dataset[i] for i in indices])`;
      - any dataset declared with the loader kwarg `batched=True`, which this function consumes:
        the declaration that `dataset[indices]` (`indices` a list of ints) returns the batch
        `default_collate([dataset[i] for i in indices])` would.
    `loader.dataset` is then a wrapper (a `TensorDataset` over the same tensors, or
    `_ListIndexedDataset` with the user's object as `.dataset`). A dataset with its own
    `__getitems__` gets the standard loader: torch already calls `__getitems__(indices)` once
    per batch and passes its result to `collate_fn`. `batched=False` forces the standard path.
    Everything else gets `DataLoader(dataset, **loader_kwargs)` unchanged.
    """
    kwargs = dict(loader_kwargs)
    batched = kwargs.pop("batched", None)
    view = _batch_view(dataset, batched, kwargs)
    if view is None:
        return DataLoader(dataset, **kwargs)
    # The view's batch is already collated; the identity keeps `pin_memory` and the
    # worker queue acting on it as they would on default_collate's output.
    kwargs["collate_fn"] = _ready_batch
    return DataLoader(view, **kwargs)


def fetches_batches(dataset: Any, loader_kwargs: Mapping[str, Any]) -> bool:
    """Whether `build_loader(dataset, **loader_kwargs)` calls the dataset once per batch (through
    its own `__getitems__` or the batched path) rather than once per sample."""
    kwargs = dict(loader_kwargs)
    batched = kwargs.pop("batched", None)
    if _auto_collates(kwargs) and _has_getitems(dataset):
        return True
    return _batch_view(dataset, batched, kwargs) is not None


class _BatchedTensorDataset(TensorDataset):
    """A `TensorDataset` over the same tensors that the DataLoader reads a batch at a time."""

    def __getitems__(self, indices: Any) -> list[torch.Tensor]:
        # index_select with a tensor of indices: ~2x faster than indexing with the Python list
        # (benchmarks/data_path.py); the rows copied are the same, so the values are bitwise
        # those default_collate stacks.
        index = torch.as_tensor(indices, dtype=torch.long)
        try:
            return [t.index_select(0, index.to(t.device)) for t in self.tensors]
        except IndexError:
            # index_select rejects negative indices, which dataset[i] accepts; advanced
            # indexing takes them and raises dataset[i]'s own error for out-of-range ones.
            return [t[index.to(t.device)] for t in self.tensors]


class _ListIndexedDataset(Dataset):
    """A dataset declared `batched=True`: `dataset[indices]` is already the collated batch."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: list) -> Any:
        return self.dataset[indices]


def _ready_batch(batch: Any) -> Any:
    return batch


def _batch_view(dataset: Any, batched: Any, kwargs: Mapping[str, Any]) -> Dataset | None:
    """The dataset view `build_loader` loads from on the batched path, or None for the
    standard path."""
    if batched is not None and not isinstance(batched, bool):
        raise TypeError(f"build_loader: batched={batched!r} must be True, False or None (detect).")
    if batched is True and isinstance(dataset, IterableDataset):
        raise ValueError(
            f"build_loader: batched=True declares that dataset[list_of_indices] returns a batch, "
            f"but {type(dataset).__name__} is an IterableDataset, which has no indices; drop batched=True."
        )
    if batched is False or isinstance(dataset, IterableDataset) or _has_getitems(dataset):
        return None
    if not _auto_collates(kwargs):
        return None  # the loader asks for one sample at a time: nothing to batch
    collate_fn = kwargs.get("collate_fn")
    if collate_fn is not None and collate_fn is not default_collate:
        return None  # a user collate_fn expects the list of samples
    if _is_plain_tensor_dataset(dataset):
        return _BatchedTensorDataset(*dataset.tensors)
    if batched is True:
        return _ListIndexedDataset(dataset)
    return None


def _auto_collates(kwargs: Mapping[str, Any]) -> bool:
    """Whether the DataLoader fetches lists of indices (DataLoader's own `_auto_collation`)."""
    return kwargs.get("batch_sampler") is not None or kwargs.get("batch_size", 1) is not None


def _has_getitems(dataset: Any) -> bool:
    # The test torch's _MapDatasetFetcher makes.
    return bool(getattr(dataset, "__getitems__", None))


def _is_plain_tensor_dataset(dataset: Any) -> bool:
    cls = type(dataset)
    return (isinstance(dataset, TensorDataset)
            and cls.__getitem__ is TensorDataset.__getitem__
            and cls.__len__ is TensorDataset.__len__
            # default_collate raises on sparse and nested tensors; keep that behaviour.
            and all(t.layout == torch.strided and not t.is_nested for t in dataset.tensors))


def make_loader(which: str, dataset: Any, loader_kwargs: dict[str, Any], runtime: Any = None) -> DataLoader:
    """The loader for `NNHandler.set_{which}_loader(dataset, **loader_kwargs)`: a ready
    DataLoader as it is (with no kwargs), or `build_loader` over a dataset, with this rank's
    `ShardSampler` under torch.distributed (`nnh.stateful.sharding`)."""
    from nnh.stateful.sharding import shard_kwargs, warn_unsharded

    if isinstance(dataset, DataLoader):
        if loader_kwargs:
            raise ValueError(f"set_{which}_loader got a ready DataLoader and loader kwargs {sorted(loader_kwargs)}; "
                             "pass either a Dataset with kwargs or the DataLoader alone.")
        if runtime is not None and runtime.distributed and not isinstance(dataset.dataset, IterableDataset):
            warn_unsharded(which, dataset.sampler)
        return dataset
    if not hasattr(dataset, "__getitem__") and not hasattr(dataset, "__iter__"):
        raise TypeError(f"set_{which}_loader expects a Dataset or DataLoader, got {type(dataset).__name__}.")
    if runtime is not None:
        loader_kwargs = shard_kwargs(which, dataset, loader_kwargs, runtime)
    return build_loader(dataset, **loader_kwargs)
