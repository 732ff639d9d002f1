"""Each rank's share of the data, checked in one process with the runtimes of two ranks (the
collectives are tested with two processes in test_distributed.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from nnh.stateful.config import TrainConfig, check_ready
from nnh.stateful.data import make_loader
from nnh.stateful.runtime import Runtime
from nnh.stateful.sharding import ShardSampler, start_epoch

CPU = torch.device("cpu")


def ranks(world: int = 2) -> list[Runtime]:
    return [Runtime(CPU, rank=r, world_size=world, strategy="ddp") for r in range(world)]


def data(n: int = 45) -> TensorDataset:
    return TensorDataset(torch.arange(n).float().unsqueeze(1), torch.arange(n))


def epoch_indices(loader: DataLoader, epoch: int, seed: int | None = 0) -> list[int]:
    start_epoch(loader, epoch, seed)
    return [int(i) for _, y in loader for i in y]


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_ranks_split_every_epoch_between_them(shuffle):
    loaders = [make_loader("train", data(), {"batch_size": 4, "shuffle": shuffle}, rt) for rt in ranks()]
    assert all(isinstance(loader.sampler, ShardSampler) for loader in loaders)
    orders = []
    for epoch in range(2):
        shares = [epoch_indices(loader, epoch) for loader in loaders]
        assert len(shares[0]) == len(shares[1]) == 23  # 45 samples: one repeated to even out
        assert sorted(set(shares[0]) | set(shares[1])) == list(range(45))
        orders.append(shares[0])
    if shuffle:
        assert orders[0] != orders[1]  # a new order every epoch
        assert epoch_indices(loaders[0], 0, seed=1) != orders[0]  # that follows the run's seed
    else:
        assert orders[0] == orders[1] == list(range(0, 45, 2))  # rank 1 gets 1, 3, ..., 43 and 0 again


def test_drop_last_drops_the_remainder_instead():
    loaders = [make_loader("train", data(), {"batch_size": 4, "drop_last": True}, rt) for rt in ranks()]
    shares = [epoch_indices(loader, 0) for loader in loaders]
    assert len(shares[0]) == len(shares[1]) == 20  # 22 each, the last short batch dropped
    assert not set(shares[0]) & set(shares[1])


def test_the_batched_data_path_reads_the_sampler_s_batches():
    fast = make_loader("train", data(), {"batch_size": 4, "shuffle": True}, ranks()[1])
    assert type(fast.dataset).__name__ == "_BatchedTensorDataset"
    plain = DataLoader(data(), batch_size=4, sampler=fast.sampler)
    start_epoch(fast, 3, 7)
    for a, b in zip(fast, plain, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_loaders_nnh_did_not_shard_are_used_as_given_with_a_warning():
    rt = ranks()[0]
    with pytest.warns(UserWarning, match="every rank reads the whole dataset"):
        make_loader("train", DataLoader(data(), batch_size=4), {}, rt)
    given = DataLoader(data(), batch_size=4, sampler=DistributedSampler(data(), num_replicas=2, rank=0))
    assert make_loader("train", given, {}, rt) is given  # already sharded: no warning


def test_train_refuses_what_a_world_cannot_run():
    loader = make_loader("train", data(), {"batch_size": 4}, ranks()[0])
    with pytest.raises(ValueError, match=r"compile=True.*handler.compile_model\(\)"):
        check_ready(TrainConfig(1, validate_every=0, compile=True), object(), object(), loader, None, ranks()[0])
    with pytest.raises(ValueError, match="saved in the middle of an epoch by 2 process.*running with 1"):
        check_ready(TrainConfig(1, validate_every=0), object(), object(), loader, None, Runtime(CPU),
                    {"world_size": 2})
