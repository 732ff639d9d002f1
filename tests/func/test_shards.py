"""nnh.func on DTensor shards in one process (a world of one): the sharded code paths, whose
sums over processes are then the local values. Two processes: tests/stateful/test_distributed.py."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from nnh.func import clip_grad_norm, init_train_state, train_step
from nnh.func.shards import is_sharded, local_shards, sum_over_shards


@pytest.fixture
def world_of_one():
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_dtensor_is_sharded_only_along_a_shard_placement_and_its_local_shard_shares_its_storage(world_of_one):
    mesh = init_device_mesh("cpu", (1,))
    x = torch.arange(6.0)
    sharded, replicated = distribute_tensor(x, mesh, [Shard(0)]), distribute_tensor(x, mesh, [Replicate()])
    assert is_sharded(sharded) and not is_sharded(replicated) and not is_sharded(x)
    local = local_shards([sharded, x])
    assert type(local[0]) is torch.Tensor and local[1] is x
    local[0].add_(1)  # in place on the shard is in place on the DTensor
    assert torch.equal(sharded.full_tensor(), x + 1)


def test_sum_over_shards_of_one_process_is_the_value_and_leaves_it_alone(world_of_one):
    values = torch.tensor([3.0, 0.5])
    assert sum_over_shards(values, torch.ones(2)) is values  # not sharded: itself
    mesh = init_device_mesh("cpu", (1, 1))  # summed over the second mesh dimension only
    like = distribute_tensor(torch.ones(4), mesh, [Replicate(), Shard(0)])
    total = sum_over_shards(values, like)
    assert total is not values and torch.equal(total, torch.tensor([3.0, 0.5]))


def test_clip_grad_norm_of_sharded_gradients_equals_torch_on_the_whole_tensors(world_of_one):
    mesh = init_device_mesh("cpu", (1,))
    g = torch.Generator().manual_seed(0)
    whole = [torch.randn(4, 3, generator=g), torch.randn(5, generator=g)]
    sharded = [distribute_tensor(t.clone(), mesh, [Shard(0)]) for t in whole]
    ref = [nn.Parameter(t.clone()) for t in whole]
    for p, t in zip(ref, whole):
        p.grad = t.clone()
    expected = torch.nn.utils.clip_grad_norm_(ref, max_norm=0.5)
    norm = clip_grad_norm(sharded, 0.5)
    assert norm.shape == () and float(norm) == pytest.approx(float(expected), rel=1e-6)
    for p, t in zip(ref, sharded):
        torch.testing.assert_close(t.full_tensor(), p.grad, rtol=1e-6, atol=0)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def _loss(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def test_a_fully_sharded_train_step_clips_skips_and_steps_as_torch_does(world_of_one):
    # The flags and the norm of a sharded step are summed over the shards' processes
    # (train._over_shards); in a world of one that sum is the local value.
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
    m, ref = _net(), _net()
    fully_shard(m)
    opt, opt_ref = torch.optim.AdamW(m.parameters(), lr=0.1), torch.optim.AdamW(ref.parameters(), lr=0.1)
    state = init_train_state(m, opt)
    start = [p.full_tensor().clone() for p in m.parameters()]
    poisoned = x.clone()
    poisoned[0, 0] = float("nan")
    _, metrics = train_step(state, (poisoned, y), module=m, loss_fn=_loss, optimizer=opt,
                            skip_nonfinite=True, max_grad_norm=0.1)
    assert not bool(metrics["stepped"]) and int(state["step"]) == 0
    assert all(torch.equal(a, p.full_tensor()) for a, p in zip(start, m.parameters()))

    _, metrics = train_step(state, (x, y), module=m, loss_fn=_loss, optimizer=opt,
                            skip_nonfinite=True, max_grad_norm=0.1)
    _loss(ref, (x, y)).backward()
    expected_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
    opt_ref.step()
    assert bool(metrics["stepped"]) and int(state["step"]) == 1
    assert float(expected_norm) > 0.1  # the clipping acted
    assert metrics["grad_norm"].shape == () and float(metrics["grad_norm"]) == pytest.approx(float(expected_norm), rel=1e-5)
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p.full_tensor(), q.detach(), rtol=1e-5, atol=1e-6)
