"""`nnh.stateful.data.build_loader` against the standard `DataLoader` on a `TensorDataset`.

One run iterates one epoch of TensorDataset(4096 x 64 float32, 4096 int64), batch 256,
shuffle=True, num_workers=0, each case with its own `torch.Generator` seeded alike:

    DataLoader      DataLoader(ds, batch_size=256, shuffle=True): per-sample __getitem__ + default_collate
    list index      a TensorDataset with __getitems__ returning [t[indices] for t in tensors]
                    (indexing with the Python list) and a pass-through collate_fn
    build_loader    build_loader(ds, batch_size=256, shuffle=True): index_select with a tensor of indices

Before timing, one epoch of each case is checked bitwise against the DataLoader's.

    .venv/bin/python benchmarks/data_path.py [--n 4096] [--dim 64] [--batch 256] [--repeats 30]
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from _timing import interleave, load_line, machine_line, median, report, stopwatch

from nnh.stateful.data import build_loader


class ListIndexedTensorDataset(TensorDataset):
    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return [t[indices] for t in self.tensors]


def _pass_through(batch: Any) -> Any:
    return batch


def make_loaders(ds: TensorDataset, batch: int) -> dict[str, DataLoader]:
    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    return {
        "DataLoader": DataLoader(ds, batch_size=batch, shuffle=True, generator=gen()),
        "list index": DataLoader(ListIndexedTensorDataset(*ds.tensors), batch_size=batch, shuffle=True,
                                 generator=gen(), collate_fn=_pass_through),
        "build_loader": build_loader(ds, batch_size=batch, shuffle=True, generator=gen()),
    }


def epoch(loader: DataLoader) -> Callable[[], None]:
    def run() -> None:
        for _ in loader:
            pass
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds after the warm-up")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}; {load_line()}")
    g = torch.Generator().manual_seed(1)
    ds = TensorDataset(torch.randn(args.n, args.dim, generator=g), torch.randint(0, 10, (args.n,), generator=g))
    loaders = make_loaders(ds, args.batch)

    # Same generators, same seed: each case's first epoch must be the DataLoader's, bitwise.
    check = {name: list(loader) for name, loader in loaders.items()}
    for name, batches in check.items():
        same = len(batches) == len(check["DataLoader"]) and all(
            type(b) is list and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(b, ref))
            for b, ref in zip(batches, check["DataLoader"]))
        print(f"{name}: {len(batches)} batches, identical to DataLoader's: {same}")
        if not same:
            raise SystemExit(f"{name} yields different batches from DataLoader's")

    n_batches = len(loaders["DataLoader"])
    print(f"\nTensorDataset({args.n} x {args.dim} float32, {args.n} int64), batch {args.batch}, shuffle=True: "
          f"{n_batches} batches/epoch; {args.warmup} warm-up + {args.repeats} interleaved epochs per case")
    cases = {name: (lambda fn=epoch(loader): stopwatch(fn)) for name, loader in loaders.items()}
    times = interleave(cases, repeats=args.repeats, warmup=args.warmup)
    print(report(times, "DataLoader", unit="us", scale=1e6, per=n_batches, per_label="batch"))
    base = median(times["DataLoader"])
    for name in ("list index", "build_loader"):
        print(f"DataLoader / {name} = {base / median(times[name]):.2f}x "
              f"({median(times[name]) / n_batches * 1e6:.0f} vs {base / n_batches * 1e6:.0f} us/batch)")
    print(f"\nafter the timed runs: {load_line()}")


if __name__ == "__main__":
    main()
