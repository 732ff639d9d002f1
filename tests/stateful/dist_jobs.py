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
    return {"loss": h.train_losses, "val_loss": h.val_losses, "acc": h.train_metrics_history["acc"],
            "val_acc": h.val_metrics_history["acc"]}


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

    from tests._models import set_loaders

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

    # A file saved by one process (the parent) loads under DDP.
    single = NNHandler.load(os.path.join(out, "single.pth"))
    result["single"] = {"weights": weights(single), "epoch": single.epoch, "model": type(single.model).__name__}
    return result
