"""`NNHandler.save` / `NNHandler.load` against plain `torch.save` / `torch.load` of the same state.

A ~50M-parameter MLP (3 x Linear(4096, 4096)) with Adam, after one training step, so the
optimizer holds exp_avg and exp_avg_sq for every parameter (~600 MB in all). Compared like for
like: the plain cases save and read `{"model": state_dict, "optimizer": state_dict}` of the
same model and optimizer.

Save (every run writes a new file in a temp folder on local disk; the file is deleted and
`os.sync()` called after each run, outside the timing, so no run inherits another's writeback):

    torch.save          torch.save(plain dict, path)                           (no durability)
    torch.save+fsync    the same, then flush and os.fsync the file             (reference)
    atomic_save(plain)  nnh.func.atomic_save(plain dict): temp file, fsync, rename, fsync dir
    NNHandler.save      the handler's whole state through atomic_save

Load (from files written once; the page cache is warm for every case):

    torch.load          torch.load(plain file, weights_only=True)
    plain restore       torch.load + build the model + load_state_dict + Adam + load_state_dict
    NNHandler.load      NNHandler.load(handler file, model_class=...): the same, done by nnh
    load, unverified    NNHandler.load with the checksum verification switched off (it still
                        copies the tensors out of the memory-mapped file, without summing)
    verify_checksum     the whole verification alone, on the dict torch.load read (NNHandler.load
                        sums each piece of a tensor right after copying it: it adds less)

and, after the save cases, `add_checksum` alone (the part of NNHandler.save that seals the file).

Target: NNHandler.save <= 1.2x torch.save, atomic write included; NNHandler.load <= 1.2x; the
checksum verification adds < 5% to NNHandler.load.

    .venv/bin/python benchmarks/checkpoint.py [--width 4096] [--layers 3] [--repeats 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from _timing import interleave, load_line, machine_line, median, paired_ratio, report, stopwatch

import nnh.func.checkpoint as func_checkpoint
from nnh import NNHandler
from nnh.func import atomic_save
import nnh.stateful.checkpoint as stateful_checkpoint
from nnh.stateful.checkpoint import handler_checkpoint


class WideMLP(nn.Module):
    def __init__(self, width: int = 4096, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks.append(nn.Linear(width, width))
            if i < layers - 1:
                blocks.append(nn.ReLU())
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_handler(width: int, layers: int) -> NNHandler:
    handler = NNHandler(WideMLP, width=width, layers=layers, model_type="regression")
    handler.set_optimizer(torch.optim.Adam, lr=1e-3)
    handler.set_loss_fn(F.mse_loss)
    x = torch.randn(8, width)
    handler.set_train_loader(torch.utils.data.TensorDataset(x, torch.randn(8, width)), batch_size=8)
    handler.train(1, validate_every=0, progress_bar=False)  # fills the Adam state and the history
    return handler


def fresh_path(folder: str, name: str) -> str:
    return os.path.join(folder, f"{name}.pth")


def discard(path: str) -> None:
    """Remove `path` and flush the kernel's dirty pages: the next run starts from a clean disk."""
    if os.path.exists(path):
        os.remove(path)
    os.sync()


def save_cases(handler: NNHandler, folder: str) -> dict[str, Callable[[], float]]:
    module, optimizer = handler.module, handler.optimizer

    def plain_state() -> dict[str, Any]:
        return {"model": module.state_dict(), "optimizer": optimizer.state_dict()}

    def timed_then_discard(name: str, write: Callable[[str], None]) -> Callable[[], float]:
        def run() -> float:
            path = fresh_path(folder, name)
            seconds = stopwatch(lambda: write(path))
            discard(path)
            return seconds
        return run

    def save_fsync(path: str) -> None:
        with open(path, "wb") as f:
            torch.save(plain_state(), f)
            f.flush()
            os.fsync(f.fileno())

    def handler_save(path: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # WideMLP lives in __main__: recorded by name, warned once
            handler.save(path)

    return {
        "torch.save": timed_then_discard("plain", lambda p: torch.save(plain_state(), p)),
        "torch.save+fsync": timed_then_discard("plain_fsync", save_fsync),
        "atomic_save(plain)": timed_then_discard("atomic", lambda p: atomic_save(plain_state(), p)),
        "NNHandler.save": timed_then_discard("handler", handler_save),
    }


def load_cases(handler: NNHandler, folder: str, width: int, layers: int) -> dict[str, Callable[[], float]]:
    """The load cases."""
    real_read = stateful_checkpoint.read_checkpoint
    plain_path, handler_path = fresh_path(folder, "load_plain"), fresh_path(folder, "load_handler")
    torch.save({"model": handler.module.state_dict(), "optimizer": handler.optimizer.state_dict()}, plain_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handler.save(handler_path)
    os.sync()
    print(f"file sizes: plain {os.path.getsize(plain_path) / 1e6:.1f} MB, "
          f"NNHandler {os.path.getsize(handler_path) / 1e6:.1f} MB")

    def plain_load() -> None:
        torch.load(plain_path, map_location="cpu", weights_only=True)

    def plain_restore() -> None:
        ckpt = torch.load(plain_path, map_location="cpu", weights_only=True)
        model = WideMLP(width, layers)
        model.load_state_dict(ckpt["model"])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        opt.load_state_dict(ckpt["optimizer"])

    def handler_load() -> None:
        NNHandler.load(handler_path, model_class=WideMLP)

    def unverified_load() -> float:
        # load_handler's read_checkpoint, told not to verify: the same copy out of the file.
        stateful_checkpoint.read_checkpoint = lambda path, map_location=None, verify=True: real_read(
            path, map_location, verify=False)
        try:
            return stopwatch(handler_load)
        finally:
            stateful_checkpoint.read_checkpoint = real_read

    sealed = torch.load(handler_path, map_location="cpu", weights_only=True)

    return {"torch.load": lambda: stopwatch(plain_load), "plain restore": lambda: stopwatch(plain_restore),
            "NNHandler.load": lambda: stopwatch(handler_load), "load, unverified": unverified_load,
            "verify_checksum": lambda: stopwatch(lambda: func_checkpoint.verify_checksum(sealed, handler_path))}


def disk_report(folder: str) -> str:
    try:
        return subprocess.run(["df", "-h", folder], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"df failed: {exc}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=3, help="Linear(width, width) layers")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="parent of the temp folder (local disk)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="nnh-bench-ckpt-", dir=args.dir)
    try:
        handler = make_handler(args.width, args.layers)
        n_params = handler.count_parameters()
        print(f"machine: {machine_line()}; {load_line()}")
        print(f"disk ({folder}):\n{disk_report(folder)}")
        print(f"model: {args.layers} x Linear({args.width}, {args.width}) = {n_params / 1e6:.1f}M parameters, "
              f"Adam state included; {args.warmup} warm-up + {args.repeats} interleaved runs per case")

        print("\nsave")
        saves = interleave(save_cases(handler, folder), repeats=args.repeats, warmup=args.warmup)
        print(report(saves, "torch.save", unit="ms", scale=1e3))
        base, synced = median(saves["torch.save"]), median(saves["torch.save+fsync"])
        ratio = median(saves["NNHandler.save"]) / base
        print(f"NNHandler.save / torch.save = {ratio:.2f}  (target <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'})")
        print(f"NNHandler.save / (torch.save+fsync) = {median(saves['NNHandler.save']) / synced:.2f}; "
              f"fsync alone adds {(synced - base) * 1e3:.0f} ms ({(synced - base) / median(saves['NNHandler.save']):.0%} "
              "of NNHandler.save)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = handler_checkpoint(handler)
        seal = median([stopwatch(lambda: func_checkpoint.add_checksum(ckpt)) for _ in range(args.repeats)])
        print(f"add_checksum (inside NNHandler.save): {seal * 1e3:.1f} ms = "
              f"{seal / median(saves['NNHandler.save']):.1%} of NNHandler.save")

        print("\nload")
        loads = interleave(load_cases(handler, folder, args.width, args.layers), repeats=args.repeats,
                           warmup=args.warmup)
        print(report(loads, "torch.load", unit="ms", scale=1e3))
        ratio = median(loads["NNHandler.load"]) / median(loads["torch.load"])
        print(f"NNHandler.load / torch.load = {ratio:.2f}  (target <= 1.2: {'met' if ratio <= 1.2 else 'MISSED'})")
        print(f"NNHandler.load / plain restore = "
              f"{median(loads['NNHandler.load']) / median(loads['plain restore']):.2f}")
        paired = paired_ratio(loads["NNHandler.load"], loads["load, unverified"])
        cost = 1 - 1 / paired  # the verified load's share spent verifying
        print(f"checksum verification: NNHandler.load / unverified (paired) = {paired:.3f}, so verifying is "
              f"{cost:.1%} of NNHandler.load (target < 5%: {'met' if cost < 0.05 else 'MISSED'}); "
              f"medians {median(loads['NNHandler.load']) * 1e3:.1f} against "
              f"{median(loads['load, unverified']) * 1e3:.1f} ms; verify_checksum alone on a loaded dict, "
              f"{median(loads['verify_checksum']) * 1e3:.1f} ms")
        print(f"\nafter the timed runs: {load_line()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
