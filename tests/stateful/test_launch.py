"""The launcher's environment, read in one process: torchrun's and Slurm's variables, Slurm
host lists, and what `use_distributed` does with an environment that is incomplete."""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist
from torch import nn

from nnh import NNHandler
from nnh.stateful.launch import DEFAULT_PORT, Launch, detect_launch, expand_hostlist

TORCHRUN = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "1234"}
SLURM = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "gpu[01-04,07],cpu1",
         "SLURM_JOB_ID": "123456"}
ALL = (*TORCHRUN, *SLURM, "SLURM_STEP_NUM_TASKS")


@pytest.fixture
def env(monkeypatch):
    """A clean launcher environment that a test fills in."""
    for name in ALL:
        monkeypatch.delenv(name, raising=False)

    def set_env(values):
        for k, v in values.items():
            monkeypatch.setenv(k, v)

    return set_env


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("hostlist, hosts", [
    ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
    ("node7", ["node7"]),
    ("a[8-10],b", ["a8", "a9", "a10", "b"]),
    ("gpu[001-002],cpu[1,3-4]", ["gpu001", "gpu002", "cpu1", "cpu3", "cpu4"]),
    ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
])
def test_slurm_host_lists_expand(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("hostlist, match", [("gpu[01-", "unbalanced"), ("gpu[a-b]", "'a-b'"), ("", "not a Slurm host list")])
def test_bad_host_lists_are_refused(hostlist, match):
    with pytest.raises(ValueError, match=match):
        expand_hostlist(hostlist)


def test_torchrun_variables(env):
    env(TORCHRUN)
    launch, _ = detect_launch()
    assert launch == Launch("torchrun", 3, 1, 4, "10.0.0.7", 1234)
    assert launch.init_method == "tcp://10.0.0.7:1234"


def test_slurm_variables_with_the_first_host_and_the_default_port(env):
    env(SLURM)
    launch, _ = detect_launch()
    assert launch == Launch("slurm", 5, 1, 8, "gpu01", DEFAULT_PORT + 456)


def test_slurm_takes_master_addr_port_and_the_step_size_when_set(env):
    env({**SLURM, "MASTER_ADDR": "fe80::1", "MASTER_PORT": "4000", "SLURM_STEP_NUM_TASKS": "6"})
    launch, _ = detect_launch()
    assert (launch.master_addr, launch.master_port, launch.world_size) == ("fe80::1", 4000, 6)
    assert launch.init_method == "tcp://[fe80::1]:4000"


def test_torchrun_wins_inside_a_slurm_job(env):
    env({**SLURM, **TORCHRUN})
    assert detect_launch()[0].launcher == "torchrun"


def test_no_launch_lists_what_each_launcher_lacks(env):
    env({"RANK": "0", "SLURM_NTASKS": "2"})
    launch, missing = detect_launch()
    assert launch is None
    assert missing == {"torchrun": ["LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"],
                       "slurm": ["SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_NODELIST"]}


@pytest.mark.parametrize("values, match", [({**TORCHRUN, "RANK": "4"}, "rank 4 in a world of 4"),
                                           ({**TORCHRUN, "WORLD_SIZE": "four"}, "WORLD_SIZE='four' must be an integer")])
def test_bad_values_are_refused(env, values, match):
    env(values)
    with pytest.raises(ValueError, match=match):
        detect_launch()


def test_use_distributed_true_without_a_launch_fails_before_any_work(env):
    env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match=r"use_distributed=True.*missing: LOCAL_RANK, MASTER_ADDR, MASTER_PORT\)"
                                           r".*missing: SLURM_PROCID"):
        NNHandler(Net, use_distributed=True)
    assert not dist.is_initialized()


def test_use_distributed_false_ignores_a_complete_environment(env):
    env(TORCHRUN)  # a world of 4 that does not exist: joining it would wait for ever
    h = NNHandler(Net, use_distributed=False)
    assert (h.runtime.distributed, h.runtime.rank, h.runtime.world_size) == (False, 0, 1)
    assert not dist.is_initialized()


def test_a_world_of_one_is_one_process_unless_asked(env):
    env({**TORCHRUN, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    assert not NNHandler(Net).runtime.distributed


@pytest.mark.parametrize("kwargs, kind, match", [
    ({"strategy": "zero"}, ValueError, "strategy='zero'; use 'ddp'"),
    ({"process_group_timeout": -1}, ValueError, "process_group_timeout=-1 must be a number of seconds"),
    ({"strategy_options": ["x"]}, TypeError, r"strategy_options=\['x'\] must be a dict"),
    ({"strategy_options": {"shard_modules": (Net,)}}, ValueError, "only strategy='fsdp' uses"),
])
def test_bad_distributed_arguments(env, kwargs, kind, match):
    with pytest.raises(kind, match=match):
        NNHandler(Net, **kwargs)


def test_a_group_the_user_made_is_used_and_left_alone(tmp_path, env):
    from tests._distributed import free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
    try:
        h = NNHandler(Net)  # use_distributed=None joins the existing group, even a world of one
        assert h.runtime.distributed and type(h.model).__name__ == "DistributedDataParallel"
        h.set_optimizer(torch.optim.SGD, lr=0.1)
        h.set_loss_fn(nn.functional.cross_entropy)
        h.set_train_loader(torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
        h.train(1, progress_bar=False, validate_every=0)
        h.save(tmp_path / "one.pth")
        del h
        assert dist.is_initialized()  # nnh never destroys a group it did not make
        assert NNHandler.load(tmp_path / "one.pth", model_class=Net).epoch == 1
    finally:
        dist.destroy_process_group()
