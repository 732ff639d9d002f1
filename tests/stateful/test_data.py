import pytest
import torch
from torch.utils.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset,
                              SequentialSampler, SubsetRandomSampler, TensorDataset, default_collate)

from nnh.stateful.data import build_loader, fetches_batches

N = 103  # not a multiple of the batch size: the last batch is short


def tensor_dataset(n: int = N) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, generator=g), torch.randint(0, 10, (n,), generator=g),
                         torch.arange(n, dtype=torch.float64))


def assert_same_batches(got: list, want: list) -> None:
    assert len(got) == len(want)
    for b, (x, y) in enumerate(zip(got, want)):
        assert type(x) is type(y), f"batch {b}: {type(x).__name__} != {type(y).__name__}"
        if isinstance(y, dict):
            assert x.keys() == y.keys()
            x, y = [x[k] for k in y], [y[k] for k in y]
        assert len(x) == len(y)
        for u, v in zip(x, y):
            assert u.dtype == v.dtype and u.shape == v.shape and torch.equal(u, v), f"batch {b} differs"


def order(batches: list) -> list[int]:
    """The sample indices in load order, read from the arange column."""
    return [int(i) for b in batches for i in b[2]]


class TaggedTensorDataset(TensorDataset):
    """A TensorDataset subclass that keeps `__getitem__` and `__len__`."""

    tag = "kept"


class HalfTensorDataset(TensorDataset):
    """A TensorDataset subclass with its own `__len__`: its samplers see half the rows."""

    def __len__(self) -> int:
        return super().__len__() // 2


class ScaledTensorDataset(TensorDataset):
    """A TensorDataset subclass with its own `__getitem__`: not a plain one."""

    def __getitem__(self, i):
        return tuple(2 * t[i] for t in self.tensors)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_tensor_dataset_same_batches_with_generator(shuffle, drop_last):
    ds = tensor_dataset()
    g_std, g_new = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    std = DataLoader(ds, batch_size=16, shuffle=shuffle, drop_last=drop_last, generator=g_std)
    new = build_loader(ds, batch_size=16, shuffle=shuffle, drop_last=drop_last, generator=g_new)
    assert fetches_batches(ds, dict(batch_size=16)) and type(new.dataset).__getitems__
    assert new.dataset.tensors[0] is ds.tensors[0]  # a view over the same tensors, no copy
    for _ in range(2):  # two epochs: the second order comes from the generator's advanced state
        want, got = list(std), list(new)
        assert_same_batches(got, want)
        assert type(got[0]) is list
    assert torch.equal(g_std.get_state(), g_new.get_state())
    assert len(new) == len(std) == (N // 16 if drop_last else -(-N // 16))
    assert len(got[-1][0]) == (16 if drop_last else N % 16)
    assert (order(got) != list(range(len(order(got))))) == shuffle


def test_tensor_dataset_global_rng_same_draws_and_replay():
    ds = tensor_dataset()
    torch.manual_seed(3)
    want = [list(DataLoader(ds, batch_size=16, shuffle=True)) for _ in range(2)]
    state_std = torch.get_rng_state()
    torch.manual_seed(3)
    loader = build_loader(ds, batch_size=16, shuffle=True)
    got = [list(loader) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state_std)  # same number of draws
    assert_same_batches(got[0] + got[1], want[0] + want[1])
    assert order(got[0]) != order(got[1])
    # Exact resume replays the epoch-start state and skips the batches done by iterating.
    torch.manual_seed(3)
    list(loader)
    epoch_start = torch.get_rng_state()
    it = iter(loader)
    for _ in range(3):
        next(it)
    rest = list(it)
    torch.set_rng_state(epoch_start)
    it = iter(loader)
    for _ in range(3):
        next(it)
    assert_same_batches(list(it), rest)
    assert_same_batches(rest, want[1][3:])


def test_tensor_dataset_two_workers():
    ds = tensor_dataset(64)
    kw = dict(batch_size=16, shuffle=True, num_workers=2)
    want = list(DataLoader(ds, generator=torch.Generator().manual_seed(1), **kw))
    got = list(build_loader(ds, generator=torch.Generator().manual_seed(1), **kw))
    assert_same_batches(got, want)
    assert sorted(order(got)) == list(range(64))


def test_tensor_dataset_subclasses():
    kept = TaggedTensorDataset(*tensor_dataset().tensors)
    assert fetches_batches(kept, {"batch_size": 32})
    assert_same_batches(list(build_loader(kept, batch_size=32)), list(DataLoader(kept, batch_size=32)))
    scaled = ScaledTensorDataset(*tensor_dataset().tensors)
    assert not fetches_batches(scaled, {"batch_size": 32})
    got = list(build_loader(scaled, batch_size=32))
    assert build_loader(scaled, batch_size=32).dataset is scaled
    assert torch.equal(got[0][2], 2 * torch.arange(32, dtype=torch.float64))
    half = HalfTensorDataset(*tensor_dataset().tensors)
    assert not fetches_batches(half, {"batch_size": 32})
    assert len(build_loader(half, batch_size=32)) == len(DataLoader(half, batch_size=32)) == 2


def test_negative_indices_from_a_user_sampler_keep_their_meaning():
    ds = tensor_dataset()
    sampler = [-1, -2, 0, 5]
    assert_same_batches(list(build_loader(ds, sampler=sampler, batch_size=2)),
                        list(DataLoader(ds, sampler=sampler, batch_size=2)))


class DictGetitems(Dataset):
    """A dict-of-tensors dataset with torch's batched-fetch hook."""

    def __init__(self, n: int, per_sample: bool) -> None:
        g = torch.Generator().manual_seed(0)
        self.data = {"x": torch.randn(n, 2, generator=g), "i": torch.arange(n)}
        self.per_sample = per_sample
        self.getitems_calls: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.data["i"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.data.items()}

    def __getitems__(self, indices: list[int]):
        self.getitems_calls.append(list(indices))
        if self.per_sample:  # torch's contract: a list of samples for collate_fn
            return [self[i] for i in indices]
        return {k: v[indices] for k, v in self.data.items()}  # a ready batch: needs collate_fn


class NoGetitems(Dataset):
    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


@pytest.mark.parametrize("per_sample", [True, False])
def test_getitems_dataset_matches_torch(per_sample):
    ds = DictGetitems(N, per_sample)
    kw = dict(batch_size=16, shuffle=True, drop_last=False)
    if not per_sample:
        kw["collate_fn"] = lambda batch: batch
    assert fetches_batches(ds, kw)
    loader = build_loader(ds, generator=torch.Generator().manual_seed(5), **kw)
    assert loader.dataset is ds  # torch's own path: it already calls __getitems__ per batch
    got = list(loader)
    assert ds.getitems_calls == [b["i"].tolist() for b in got]
    assert len(ds.getitems_calls) == len(loader) == 7
    # The same batches as a per-sample dataset through the standard loader and default_collate.
    want = list(DataLoader(NoGetitems(ds), batch_size=16, shuffle=True,
                           generator=torch.Generator().manual_seed(5)))
    assert_same_batches(got, want)


def test_plain_map_dataset_falls_back():
    ds = NoGetitems(tensor_dataset())
    assert not fetches_batches(ds, {"batch_size": 16})
    loader = build_loader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2))
    assert loader.dataset is ds and loader.collate_fn is default_collate
    want = list(DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2)))
    assert_same_batches(list(loader), want)


def test_user_collate_fn_falls_back_and_sees_samples():
    ds = tensor_dataset()
    seen = []

    def collate(samples):
        seen.append((type(samples[0]).__name__, len(samples)))
        return default_collate(samples)[0].sum(0)

    assert not fetches_batches(ds, {"batch_size": 16, "collate_fn": collate})
    loader = build_loader(ds, batch_size=16, collate_fn=collate)
    assert loader.dataset is ds and loader.collate_fn is collate
    got = list(loader)
    assert seen[0] == ("tuple", 16) and seen[-1] == ("tuple", N % 16)
    assert torch.equal(got[0], ds.tensors[0][:16].sum(0))
    # collate_fn=default_collate means what no collate_fn means: the batched path.
    assert fetches_batches(ds, {"batch_size": 16, "collate_fn": default_collate})


@pytest.mark.parametrize("make", [
    lambda ds: dict(sampler=SubsetRandomSampler(range(0, N, 3), generator=torch.Generator().manual_seed(4)),
                    batch_size=8),
    lambda ds: dict(batch_sampler=BatchSampler(SequentialSampler(range(40)), 6, drop_last=True)),
    lambda ds: dict(sampler=DistributedSampler(ds, num_replicas=3, rank=1, shuffle=True, seed=9),
                    batch_size=8),
], ids=["sampler", "batch_sampler", "distributed"])
def test_user_samplers_keep_their_meaning(make):
    ds = tensor_dataset()
    std, new = DataLoader(ds, **make(ds)), build_loader(ds, **make(ds))
    assert fetches_batches(ds, make(ds))
    assert type(new.sampler) is type(std.sampler) and len(new) == len(std)
    for epoch in range(2):
        for loader in (std, new):
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
        want = list(std)
        assert_same_batches(list(new), want)
        if epoch == 0:
            first = order(want)
    if isinstance(std.sampler, DistributedSampler):
        assert order(want) != first and len(first) == -(-N // 3)  # set_epoch reshuffled rank 1's third


def test_batch_size_none_is_per_sample():
    ds = tensor_dataset()
    assert not fetches_batches(ds, {"batch_size": None})
    loader = build_loader(ds, batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert loader.dataset is ds
    got = list(loader)
    assert len(got) == len(loader) == N and got[0][0].shape == (3,)


@pytest.mark.parametrize("kw", [dict(), dict(batch_size=10), dict(batch_size=10, drop_last=True),
                                dict(batch_size=200), dict(batch_size=200, drop_last=True),
                                dict(batch_sampler=BatchSampler(range(N), 7, drop_last=False))])
def test_len_equals_standard(kw):
    ds = tensor_dataset()
    assert len(build_loader(ds, **kw)) == len(DataLoader(ds, **kw)) == len(list(DataLoader(ds, **kw)))


def test_other_loader_arguments_pass_through():
    def init(worker_id):
        pass

    loader = build_loader(tensor_dataset(), batch_size=8, num_workers=2, timeout=5.0, worker_init_fn=init,
                          persistent_workers=True, prefetch_factor=3, pin_memory=False)
    assert (loader.num_workers, loader.timeout, loader.worker_init_fn, loader.persistent_workers,
            loader.prefetch_factor, loader.pin_memory) == (2, 5.0, init, True, 3, False)


class ListIndexed(Dataset):
    """A user dataset whose `__getitem__` also takes a list of indices and returns the batch."""

    def __init__(self) -> None:
        self.x, self.calls = torch.randn(N, 4, generator=torch.Generator().manual_seed(1)), 0

    def __len__(self) -> int:
        return N

    def __getitem__(self, index):
        self.calls += 1  # an int gives a sample, a list the stacked batch
        return {"x": self.x[index], "sq": self.x[index] ** 2}


def test_batched_true_declares_list_indexing():
    ds = ListIndexed()
    assert not fetches_batches(ds, {"batch_size": 16}) and fetches_batches(ds, {"batch_size": 16, "batched": True})
    loader = build_loader(ds, batch_size=16, shuffle=True, batched=True, generator=torch.Generator().manual_seed(8))
    assert loader.dataset.dataset is ds
    got = list(loader)
    assert ds.calls == len(loader) == 7  # one call per batch
    want = list(DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(8)))
    assert_same_batches(got, want)


def test_batched_false_forces_standard_path():
    ds = tensor_dataset()
    assert not fetches_batches(ds, {"batch_size": 16, "batched": False})
    assert build_loader(ds, batch_size=16, batched=False).dataset is ds


def test_batched_argument_errors():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    with pytest.raises(ValueError, match="IterableDataset"):
        build_loader(Stream(), batch_size=2, batched=True)
    with pytest.raises(TypeError, match="batched='yes'"):
        build_loader(tensor_dataset(), batch_size=2, batched="yes")
    assert [b.tolist() for b in build_loader(Stream(), batch_size=2)] == [[0, 1], [2]]
