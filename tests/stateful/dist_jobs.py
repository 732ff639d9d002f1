"""The jobs the distributed tests run in each rank (see `tests._distributed.run_ranks`).

Each job takes `(rank, out)` and returns a dict of what the parent test asserts on. The data
and the models are those of `tests._models`, so that the parent can compute the same run in
one process for comparison.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnh import NNHandler
from nnh.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, TensorBoardLogger
from tests._models import accuracy, classification_data

K_SHORT = 3  # accumulation steps: 4 batches per epoch make windows of 3 and 1 (a short last one)


class Smooth(nn.Module):
    """No batch statistics and no dropout: per-rank batches average exactly as one batch."""

    def __init__(self, in_features: int = 6, hidden: int = 16, out_features: int = 3) -> None:
        super().__init__()
        self.a = nn.Linear(in_features, hidden)
        self.b = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def smooth_handler(batch_size: int, strategy: str = "ddp", **kwargs: Any) -> NNHandler:
    """64 training and 32 validation samples, unshuffled: `batch_size` per rank. One process
    with `2 * batch_size` sees the same global batches as two ranks with `batch_size`."""
    torch.manual_seed(0)
    h = NNHandler(Smooth, strategy=strategy, **kwargs)
    h.set_optimizer(torch.optim.AdamW, lr=1e-2, weight_decay=0.01)
    h.set_loss_fn(nn.functional.cross_entropy)
    h.add_metric("acc", accuracy)
    h.set_train_loader(classification_data(64), batch_size=batch_size)
    h.set_val_loader(classification_data(32, seed=1), batch_size=batch_size)
    return h


def weights(h: NNHandler) -> dict[str, torch.Tensor]:
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in h.module.state_dict().items()}


def history(h: NNHandler) -> dict[str, Any]:
    return {"loss": list(h.train_losses), "val_loss": list(h.val_losses), "acc": list(h.train_metrics_history["acc"]),
            "val_acc": list(h.val_metrics_history["acc"])}


# ---------------------------------------------------------------------------- training and files
def train_equivalence(rank: int, out: str) -> dict[str, Any]:
    mine = os.path.join(out, f"r{rank}")  # each rank is told to write here: only rank 0 may
    h = smooth_handler(8, logger_mode="file", logger_filename=os.path.join(mine, "nnh.log"))
    h.add_callback(CSVLogger(os.path.join(mine, "log.csv")))
    h.add_callback(TensorBoardLogger(os.path.join(mine, "tb")))
    h.add_callback(ModelCheckpoint(os.path.join(mine, "best.pth"), save_weights_only=True))
    h.auto_save(1, save_path=os.path.join(mine, "auto"))
    h.train(2, progress_bar=True)
    result = {"plain": weights(h), "plain_history": history(h), "logger_is_none": h.logger is None,
              "model": type(h.model).__name__, "module": type(h.module).__name__}
    a = smooth_handler(8)
    a.train(2, gradient_accumulation_steps=K_SHORT, progress_bar=False)
    result.update(accumulated=weights(a), accumulated_history=history(a))
    # 45 samples: the sampler pads rank 1 with a repeat of sample 0, which predict drops.
    x = classification_data(45).tensors[0]
    result["predict"] = h.predict(DataLoader(TensorDataset(x), batch_size=10))
    result.update(utilities(rank, out))
    return result


def utilities(rank: int, out: str) -> dict[str, Any]:
    from nnh import (all_reduce_weighted_mean, barrier, gather_object, get_local_rank, get_rank, get_world_size,
                     is_distributed, on_rank)

    flag = os.path.join(out, "written_by_rank0")

    @on_rank(0)
    def write() -> str:
        time.sleep(0.3)  # rank 1 reads right after the call: the barrier must make it wait
        with open(flag, "w") as f:
            f.write("x")
        return "done"

    @on_rank(0)
    def fail() -> None:
        raise OSError("disk full")

    returned = write()
    seen = os.path.exists(flag)
    try:
        fail()
        failure = None
    except (OSError, RuntimeError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    barrier()
    return {"ranks": (get_rank(), get_local_rank(), get_world_size(), is_distributed()),
            "mean": all_reduce_weighted_mean({"a": rank + 1.0, "b": torch.tensor(10.0 * rank)}, weight=rank + 1),
            "gathered": gather_object({"rank": rank}), "on_rank": (returned, seen), "failure": failure}


# ---------------------------------------------------------------------------- decisions on one rank
class NaNOnRank:
    """A loss that is NaN on `rank` at its `at`-th call, while its gradients stay finite (the
    NaN is a constant): only the loss, not the gradients, says that the step must be skipped."""

    def __init__(self, rank: int, at: int) -> None:
        self.rank, self.at, self.calls = rank, at, 0

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(output, target)
        self.calls += 1
        if int(os.environ["RANK"]) == self.rank and self.calls == self.at + 1:
            loss = loss + torch.tensor(float("nan"))
        return loss


class OnRank:
    """On `rank` only: at the end of (epoch, batch) set `stop_training`, or send `signum` to
    this process; batch None means the end of the epoch."""

    def __init__(self, rank: int, epoch: int, batch: int | None = None, signum: int | None = None) -> None:
        self.rank, self.at, self.signum, self.epoch, self.handler = rank, (epoch, batch), signum, -1, None

    def on_train_begin(self, logs):
        pass

    def on_epoch_begin(self, epoch, logs):
        self.epoch = epoch

    def _fire(self, where):
        if int(os.environ["RANK"]) == self.rank and where == self.at:
            if self.signum is None:
                self.handler.stop_training = True
            else:
                os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, batch, logs):
        self._fire((self.epoch, batch))

    def on_epoch_end(self, epoch, logs):
        self._fire((epoch, None))


def steps(h: NNHandler) -> int:
    return int(h.train_state["step"])


TOTAL = 3
KW = dict(ema_decay=0.9, progress_bar=False)


def preemptible(out: str):
    from tests._models import build_handler

    h = build_handler()  # MLP with dropout and BatchNorm, AdamW, StepLR, shuffled data
    h.set_preemption_checkpoint(os.path.join(out, "pre.pth"))
    return h


def decisions(rank: int, out: str) -> dict[str, Any]:
    import warnings

    from nnh.stateful.runtime import FlagExchange
    from tests._models import set_loaders

    # Exchange the stop and preemption flags at every window (by default about every 0.2 s of
    # training), so that where a run stops does not depend on this machine's speed.
    FlagExchange.PERIOD_S = 0

    result: dict[str, Any] = {}
    # A NaN loss on rank 1 at batch 2: every rank skips that update, and replicas stay equal.
    h = smooth_handler(8)
    h.set_loss_fn(NaNOnRank(rank=1, at=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h.train(1, progress_bar=False)
    result["nan"] = {"steps": steps(h), "weights": weights(h), "loss": h.train_losses,
                     "warnings": [str(w.message) for w in caught if "non-finite" in str(w.message)]}

    # stop_training from a callback on one rank, at an epoch end and after a batch.
    h = smooth_handler(8)
    h.add_callback(OnRank(rank=1, epoch=1))
    h.train(5, progress_bar=False)
    b = smooth_handler(8)
    b.add_callback(OnRank(rank=0, epoch=1, batch=0))
    b.train(5, progress_bar=False)
    e = smooth_handler(8)
    e.add_callback(EarlyStopping(monitor="loss", mode="max", patience=0))  # the loss falls: stop at epoch 1
    e.train(5, progress_bar=False)
    result["stop"] = {"epoch_end": (h.epoch, steps(h)), "batch": (b.epoch, steps(b)), "early": e.epoch}

    # SIGTERM to rank 1 alone, in the middle of epoch 1: both stop at the same batch, and the
    # checkpoint resumes exactly (compared with the same run uninterrupted).
    ref = preemptible(out)
    ref.train(TOTAL, seed=5, **KW)
    p = preemptible(out)
    p.add_callback(OnRank(rank=1, epoch=1, batch=0, signum=signal.SIGTERM))
    p.train(TOTAL, seed=5, **KW)
    result["preempted"] = {"epoch": p.epoch, "steps": steps(p)}
    resumed = NNHandler.load(os.path.join(out, "pre.pth"), callbacks=[])
    set_loaders(resumed)
    resumed.train(TOTAL - resumed.epoch, **KW)
    result["resume"] = {"ref": weights(ref), "ref_ema": dict(ref.train_state["ema"].items()),
                        "got": weights(resumed), "got_ema": dict(resumed.train_state["ema"].items()),
                        "ref_history": history(ref), "got_history": history(resumed), "epoch": resumed.epoch}
    resumed.save(os.path.join(out, "final.pth"))
    result["final"] = {"weights": weights(resumed), "optimizer": resumed.optimizer.state_dict(),
                       "history": history(resumed), "rng": torch.get_rng_state()}

    # A module frozen after the handler was built: DDP is built again for the rest.
    fz = smooth_handler(8)
    frozen = {k: v.clone() for k, v in fz.module.a.state_dict().items()}
    fz.freeze_module(fz.module.a)
    fz.train(1, progress_bar=False)
    result["frozen"] = {"unchanged": all(torch.equal(v, fz.module.a.state_dict()[k]) for k, v in frozen.items()),
                        "weights": weights(fz)}

    # A file saved by one process (the parent) loads under DDP.
    single = NNHandler.load(os.path.join(out, "single.pth"))
    result["single"] = {"weights": weights(single), "epoch": single.epoch, "model": type(single.model).__name__}
    return result


# ---------------------------------------------------------------------------- a rank that raises
class RaiseOnRank1:
    """A loss that raises on rank 1 at its third call (batch 2 of epoch 0)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if int(os.environ["RANK"]) == 1 and self.calls == 3:
            raise ValueError("bad batch")
        return nn.functional.cross_entropy(output, target)


TIMEOUT_S = 4.0


def one_rank_raises(rank: int, out: str) -> dict[str, Any]:
    """Rank 1 raises and then stays alive without taking part (as a rank stuck elsewhere
    would): rank 0 must fail by the process-group timeout, not wait for ever."""
    h = smooth_handler(8, process_group_timeout=TIMEOUT_S)
    h.set_loss_fn(RaiseOnRank1())
    try:
        h.train(3, progress_bar=False)
        error = None
    except Exception as exc:  # noqa: BLE001 - the test reads it
        error = f"{type(exc).__name__}: {exc}"
    failed_at = time.time()
    if rank == 1:
        with open(os.path.join(out, "rank1_raised_at"), "w") as f:
            f.write(repr(failed_at))
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(out, "rank0.pt")) and time.time() < deadline:
            time.sleep(0.1)  # alive, silent, until rank 0 has given up
        os._exit(3)  # no clean-up: leave the group as a crashed rank would
    torch.save({"error": error, "failed_at": failed_at}, os.path.join(out, "rank0.pt"))
    # Leave at once: tearing down a group whose peer vanished mid-collective waits for the
    # pending operations to time out too, which only lengthens the test.
    os._exit(0)


# ---------------------------------------------------------------------------- FSDP2
FSDP_KW = dict(gradient_accumulation_steps=K_SHORT, gradient_clipping_norm=0.5, ema_decay=0.9, progress_bar=False)


def full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def optimizer_moments(h: NNHandler) -> dict[str, torch.Tensor]:
    """exp_avg of each parameter, by name, as whole tensors."""
    return {name: full(h.optimizer.state[p]["exp_avg"]) for name, p in h.module.named_parameters()}


def fsdp(rank: int, out: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    d, f = smooth_handler(8), smooth_handler(8, strategy="fsdp")
    for h in (d, f):
        h.train(2, **FSDP_KW)
    result.update(ddp=weights(d), fsdp=weights(f), histories=(history(d), history(f)), module=type(f.module).__name__)
    db, fb = smooth_handler(8), smooth_handler(8, strategy="fsdp")
    for h in (db, fb):
        h.train(1, use_amp="bf16", progress_bar=False)
    result["bf16"] = (weights(db), weights(fb))

    # Saved as shards; loaded back by two processes (here), and by one (the parent test).
    f.save(os.path.join(out, "fsdp_ckpt"))
    result["saved"] = {"weights": weights(f), "moments": optimizer_moments(f), "history": history(f),
                       "ema": {k: full(v) for k, v in f.train_state["ema"].items()}}
    g = NNHandler.load(os.path.join(out, "fsdp_ckpt"))
    g.set_train_loader(classification_data(64), batch_size=8)
    g.set_val_loader(classification_data(32, seed=1), batch_size=8)
    for h in (f, g):
        h.train(1, **FSDP_KW)
    result["continued"] = (weights(f), weights(g), type(g.module).__name__)

    # A file saved by one process (the parent), sharded on loading, then trained on.
    s = NNHandler.load(os.path.join(out, "single.pth"), strategy="fsdp")
    result["from_single"] = {"weights": weights(s), "moments": optimizer_moments(s), "module": type(s.module).__name__,
                             "ema": {k: full(v) for k, v in s.train_state["ema"].items()}}
    s.set_train_loader(classification_data(64), batch_size=8)
    s.set_val_loader(classification_data(32, seed=1), batch_size=8)
    s.train(1, **FSDP_KW)
    result["from_single"]["continued"] = weights(s)
    result["shards"] = shard_checks(rank)
    try:
        s.freeze_module(s.module.a)
        result["freeze"] = None
    except ValueError as exc:
        result["freeze"] = (str(exc), all(p.requires_grad for p in s.module.parameters()))
    return result


def shard_checks(rank: int) -> dict[str, Any]:
    """nnh.func on DTensor shards: the global gradient norm, the gated optimizer update, and a
    non-finite gradient in one rank's shard only."""
    from torch.distributed.fsdp import fully_shard

    from nnh.func import clip_grad_norm, init_train_state, train_step
    from nnh.func.optim import optimizer_update

    x, y = classification_data(16).tensors

    def sharded_with_grads(opt_class, **kw):
        torch.manual_seed(0)
        m = Smooth()
        fully_shard(m)
        opt = opt_class(m.parameters(), **kw)
        nn.functional.cross_entropy(m(x[rank * 8:(rank + 1) * 8]), y[rank * 8:(rank + 1) * 8]).backward()
        return m, opt

    torch.manual_seed(0)
    plain = Smooth()
    nn.functional.cross_entropy(plain(x), y).backward()
    m, _ = sharded_with_grads(torch.optim.SGD, lr=0.1)
    norm = clip_grad_norm([p.grad for p in m.parameters()], 0.1)
    want = clip_grad_norm([p.grad for p in plain.parameters()], 0.1)
    clipped = {n: full(p.grad) for n, p in m.named_parameters()}
    out = {"norm": (float(norm), float(want)), "clipped": (clipped, {n: p.grad.clone() for n, p in plain.named_parameters()})}

    gated_equal = {}
    for opt_class, kw in ((torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)), (torch.optim.AdamW, dict(lr=0.1))):
        (m1, o1), (m2, o2) = sharded_with_grads(opt_class, **kw), sharded_with_grads(opt_class, **kw)
        for o in (o1, o2):
            init_train_state(m1 if o is o1 else m2, o)
        step = torch.zeros((), dtype=torch.int64)
        optimizer_update(o1, step)
        optimizer_update(o2, step, torch.zeros(1))  # the gated path, as on a GPU
        same = all(torch.equal(a.to_local(), b.to_local()) for a, b in zip(m1.parameters(), m2.parameters()))
        before = [p.to_local().clone() for p in m2.parameters()]
        optimizer_update(o2, step, torch.ones(1))
        skipped = all(torch.equal(a, p.to_local()) for a, p in zip(before, m2.parameters()))
        gated_equal[opt_class.__name__] = (same, skipped)
    out["gated"] = gated_equal

    # An inf in rank 1's shard alone: both ranks skip the update.
    m, opt = sharded_with_grads(torch.optim.AdamW, lr=0.1)
    state = init_train_state(m, opt)
    if rank == 1:
        next(iter(m.parameters())).grad.to_local().view(-1)[0] = float("inf")
    before = [p.to_local().clone() for p in m.parameters()]
    _, metrics = train_step(state, (x[:8], y[:8]), module=m, optimizer=opt, micro_batch=1, update=True,
                            loss_fn=lambda model, b: nn.functional.cross_entropy(model(b[0]), b[1]),
                            skip_nonfinite=True, max_grad_norm=1.0)
    out["inf_in_one_shard"] = {"stepped": bool(metrics["stepped"]), "step": int(state["step"]),
                               "unchanged": all(torch.equal(a, p.to_local()) for a, p in zip(before, m.parameters()))}
    return out
