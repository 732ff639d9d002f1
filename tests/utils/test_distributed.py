"""The torch.distributed utilities outside a process group (inside one: tests/stateful/test_distributed.py)."""

from __future__ import annotations

import pytest
import torch

import nnh
from nnh.utils import distributed as du


@pytest.fixture
def no_launcher(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)


def test_exported_from_nnh():
    for name in ("is_distributed", "get_rank", "get_local_rank", "get_world_size", "on_rank", "barrier",
                 "all_reduce_weighted_mean", "gather_object"):
        assert getattr(nnh, name) is getattr(du, name)


def test_one_process_is_rank_0_of_1(no_launcher):
    assert (du.is_distributed(), du.get_rank(), du.get_local_rank(), du.get_world_size()) == (False, 0, 0, 1)
    du.barrier()  # nothing to wait for


def test_before_a_group_exists_the_launcher_variables_answer(no_launcher, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert (du.get_rank(), du.get_local_rank(), du.get_world_size()) == (3, 1, 8)
    monkeypatch.setenv("RANK", "2")  # torchrun's win
    assert du.get_rank() == 2


def test_collectives_are_identities():
    assert du.all_reduce_weighted_mean({"loss": torch.tensor(2.0), "acc": 0.5}, weight=10) == {"loss": 2.0, "acc": 0.5}
    assert du.all_reduce_weighted_mean({"loss": 1.0}, weight=0)["loss"] != du.all_reduce_weighted_mean(
        {"loss": 1.0}, weight=0)["loss"]  # NaN: no samples
    assert du.gather_object({"a": 1}) == [{"a": 1}]


def test_on_rank_runs_here_and_checks_its_rank(no_launcher):
    calls = []

    @du.on_rank(0)
    def write(x):
        calls.append(x)
        return x * 2

    assert write(3) == 6 and calls == [3]
    assert du.on_rank(1, barrier=False)(lambda: 1)() is None  # this process is rank 0
    with pytest.raises(ValueError, match=r"on_rank: rank=-1 must be an int >= 0"):
        du.on_rank(-1)
