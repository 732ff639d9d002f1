"""NNHandler.train under torch.distributed against hand-written DDP and FSDP2 loops.

Two processes on the CPU (gloo), started by this script with torchrun's variables. Workload:
the MLP 128 -> 512 -> 512 -> 10 (ReLU), random classification data, batch 64 per process,
AdamW(lr=1e-3, weight_decay=1e-2), cross-entropy. Every case reads the same `DataLoader`
(a `DistributedSampler`, so each process its half) and a run is one epoch of `--steps` steps:

    hand ddp     DistributedDataParallel(model); per batch: zero_grad, forward, cross_entropy,
                 backward (the gradients' all-reduce), AdamW(foreach=True).step()
    nnh ddp      NNHandler(strategy="ddp") with that DataLoader: train(1, validate_every=0)
    hand fsdp    fully_shard(model), the same loop
    hand fsdp checked
                 the same, stepping only when every rank's gradient shards are finite (one
                 all-reduce of a flag per step, read on the host): what nnh's FSDP update checks
    nnh fsdp     NNHandler(strategy="fsdp"), train(1, validate_every=0)
    ... clip     the FSDP pair with gradient clipping to norm 1: clip_grad_norm_ in the hand loop,
                 train(gradient_clipping_norm=1.0); both then reduce the norm over the shards
With --breakdown, two more DDP cases separate the loop from the step: a loop over
`nnh.func.train_step` on the DDP wrapper, with the non-finite skip as `train` runs it
(`skip_nonfinite=True, share_nonfinite=True`) and without it.

nnh's epoch adds what the hand loops leave out: the non-finite check of every update, the stop
and preemption flags exchanged at every window (asynchronously), one all-reduce of the epoch's
sums, rank 0's buffers at the epoch's end; under FSDP, one all-reduce per update of the skip
flag (each rank sees only its shards), which carries the gradient norm when clipping. Each
case keeps its model across runs. The cases
are interleaved after a warm-up (`_timing.interleave`); both processes run the same rounds, and
rank 0 reports its times. Target: nnh ddp / hand ddp <= 1.05; nnh fsdp against hand fsdp is
reported the same way.

    .venv/bin/python benchmarks/ddp.py [--steps 64] [--repeats 20] [--warmup 2] [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from _timing import interleave, load_line, machine_line, report, stopwatch

IN, HIDDEN, OUT, BATCH, WORLD = 128, 512, 10, 64, 2


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                                 nn.Linear(HIDDEN, OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fresh_model() -> MLP:
    torch.manual_seed(0)
    return MLP()


def loader(steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    n = steps * BATCH * WORLD
    data = TensorDataset(torch.randn(n, IN, generator=g), torch.randint(0, OUT, (n,), generator=g))
    sampler = DistributedSampler(data, num_replicas=WORLD, rank=dist.get_rank(), shuffle=True, seed=0)
    return DataLoader(data, batch_size=BATCH, sampler=sampler)


def hand_case(strategy: str, data: DataLoader, clip: float | None = None, check: bool = False):
    module = fresh_model()
    if strategy == "ddp":
        model: nn.Module = nn.parallel.DistributedDataParallel(module)
    else:
        from torch.distributed.fsdp import fully_shard

        with torch.no_grad():
            for p in module.parameters():
                dist.broadcast(p, src=0)
        model = fully_shard(module)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2, foreach=True)
    epoch = [0]

    def one_epoch() -> None:
        data.sampler.set_epoch(epoch[0])
        epoch[0] += 1
        for x, y in data:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            if check and not finite_everywhere(model):
                continue
            opt.step()

    return lambda: stopwatch(one_epoch)


def finite_everywhere(model: nn.Module) -> bool:
    """Whether every rank's gradient shards are finite: the check a careful hand-written
    sharded loop makes before stepping (one all-reduce of a flag, read on the host)."""
    local = [p.grad.to_local() for p in model.parameters() if p.grad is not None]
    bad = torch.stack([torch.isfinite(g).all() for g in local]).logical_not().any().float().reshape(1)
    dist.all_reduce(bad)
    return bad.item() == 0


def func_case(data: DataLoader, skip: bool):
    from nnh.func import init_train_state, train_step

    module = fresh_model()
    ddp = nn.parallel.DistributedDataParallel(module)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=1e-2)
    state = init_train_state(module, opt)

    def loss_fn(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    def one_epoch() -> None:
        for batch in data:
            train_step(state, batch, module=module, loss_fn=loss_fn, optimizer=opt, forward=ddp,
                       skip_nonfinite=skip, share_nonfinite=skip)

    return lambda: stopwatch(one_epoch)


def nnh_case(strategy: str, data: DataLoader, clip: float | None = None):
    from nnh import NNHandler

    torch.manual_seed(0)
    h = NNHandler(MLP, strategy=strategy)
    h.set_optimizer(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2)
    h.set_loss_fn(F.cross_entropy)
    h.set_train_loader(data)
    return lambda: stopwatch(lambda: h.train(1, validate_every=0, progress_bar=False, gradient_clipping_norm=clip))


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = loader(args.steps)
    cases = {"hand ddp": hand_case("ddp", data), "nnh ddp": nnh_case("ddp", data),
             "hand fsdp": hand_case("fsdp", data), "nnh fsdp": nnh_case("fsdp", data),
             "hand fsdp checked": hand_case("fsdp", data, check=True),
             "hand fsdp clip": hand_case("fsdp", data, 1.0), "nnh fsdp clip": nnh_case("fsdp", data, 1.0)}
    if args.breakdown:
        cases.update({"func ddp": func_case(data, True), "func ddp no skip": func_case(data, False)})
    if rank == 0:
        print(machine_line())
        print(load_line())
        print(f"{WORLD} processes (gloo, CPU), {args.steps} steps of batch {BATCH} per process and epoch; "
              f"{args.warmup} warm-up rounds, {args.repeats} interleaved rounds", flush=True)
    times = interleave(cases, repeats=args.repeats, warmup=args.warmup)
    if rank == 0:
        ddp = {k: v for k, v in times.items() if "ddp" in k}
        fsdp = {k: times[k] for k in ("hand fsdp", "nnh fsdp", "hand fsdp checked")}
        print("\nDDP (times in ms per step)")
        print(report(ddp, "hand ddp", per=args.steps, per_label="step"))
        print("\nFSDP2 (times in ms per step)")
        print(report(fsdp, "hand fsdp", per=args.steps, per_label="step"))
        checked = {k: times[k] for k in ("hand fsdp checked", "nnh fsdp")}
        print("\nFSDP2 against the hand loop that checks its gradients' finiteness on every rank "
              "before stepping (times in ms per step)")
        print(report(checked, "hand fsdp checked", per=args.steps, per_label="step"))
        print("\nFSDP2 with gradient clipping to norm 1 (times in ms per step)")
        clip = {k: times[k] for k in ("hand fsdp clip", "nnh fsdp clip")}
        print(report(clip, "hand fsdp clip", per=args.steps, per_label="step"))
        print(load_line(), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def launch(argv: list[str]) -> int:
    """Start WORLD copies of this script as torchrun would, and wait for them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, *argv], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
             for r in range(WORLD)]
    return max(p.wait() for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--breakdown", action="store_true", help="add the nnh.func.train_step loops (DDP)")
    args = parser.parse_args()
    if "RANK" not in os.environ:
        sys.exit(launch(sys.argv[1:]))
    worker(args)


if __name__ == "__main__":
    main()
