"""`nnh.func.ema_update` against a per-parameter Python loop and `AveragedModel`.

The model is a deep stack of small blocks (Linear(w, w) + LayerNorm(w), four parameter tensors
each), the shape where per-tensor overhead, not memory bandwidth, decides the cost of an EMA
update. Each run applies `--updates` EMA updates with decay 0.999 through:

    loop          for e, p in zip(ema, params): e.mul_(d).add_(p, alpha=1 - d)   (under no_grad)
    ema_update    nnh.func.ema_update(ema, ema_source(model), d), both TensorDicts built once
    swa multi     AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d)).update_parameters
    swa avg_fn    AveragedModel(model, avg_fn=get_ema_avg_fn(d)).update_parameters
    foreach floor torch._foreach_lerp_ on ready lists: the kernel alone, no bookkeeping

Target: ema_update at least 3x faster than the loop.

    .venv/bin/python benchmarks/ema.py [--blocks 64] [--widths 64 128 256] [--updates 100] [--repeats 15]
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn, get_ema_multi_avg_fn

from _timing import interleave, load_line, machine_line, median, report, stopwatch

from nnh.func import ema_source, ema_update, init_ema


def make_model(blocks: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [nn.Linear(width, width), nn.LayerNorm(width)]
    return nn.Sequential(*layers)


def build_cases(model: nn.Module, decay: float, updates: int) -> tuple[dict[str, Callable[[], float]], dict[str, list[torch.Tensor]]]:
    """One callable per implementation, each owning its EMA copy; returns the EMA tensors of
    each too, in `model.parameters()` order, for the agreement check."""
    params = list(model.parameters())
    loop_ema = [p.detach().clone() for p in params]
    floor_ema = [p.detach().clone() for p in params]
    floor_src = [p.detach() for p in params]
    td_ema = init_ema(model)
    td_src = ema_source(model)
    swa_multi = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
    swa_single = AveragedModel(model, avg_fn=get_ema_avg_fn(decay))

    def loop() -> None:
        with torch.no_grad():
            for _ in range(updates):
                for e, p in zip(loop_ema, params):
                    e.mul_(decay).add_(p, alpha=1 - decay)

    def nnh_ema() -> None:
        for _ in range(updates):
            ema_update(td_ema, td_src, decay)

    def multi() -> None:
        for _ in range(updates):
            swa_multi.update_parameters(model)

    def single() -> None:
        for _ in range(updates):
            swa_single.update_parameters(model)

    def floor() -> None:
        with torch.no_grad():
            for _ in range(updates):
                torch._foreach_lerp_(floor_ema, floor_src, 1 - decay)

    cases = {"loop": loop, "ema_update": nnh_ema, "swa multi": multi, "swa avg_fn": single, "foreach floor": floor}
    emas = {
        "loop": loop_ema,
        "ema_update": [td_ema[n] for n, _ in model.named_parameters()],
        "swa multi": list(swa_multi.module.parameters()),
        "swa avg_fn": list(swa_single.module.parameters()),
        "foreach floor": floor_ema,
    }
    return {name: (lambda fn=fn: stopwatch(fn)) for name, fn in cases.items()}, emas


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=64, help="Linear+LayerNorm blocks (4 tensors each)")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256],
                        help="block widths to run, one model per width (same --blocks)")
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--updates", type=int, default=100, help="EMA updates per timed run")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds after the warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}; {load_line()}")
    for width in args.widths:
        run_width(args, width)
    print(f"\nafter the timed runs: {load_line()}")


def run_width(args: argparse.Namespace, width: int) -> None:
    torch.manual_seed(0)
    model = make_model(args.blocks, width)
    n_tensors = len(list(model.parameters()))
    n_params = sum(p.numel() for p in model.parameters())
    cases, emas = build_cases(model, args.decay, args.updates)

    print(f"\n{args.blocks} x (Linear({width}, {width}) + LayerNorm({width})): {n_tensors} parameter "
          f"tensors, {n_params / 1e6:.3f}M parameters; {args.updates} updates/run, decay {args.decay}, "
          f"{args.warmup} warm-up + {args.repeats} interleaved runs per case")
    times = interleave(cases, repeats=args.repeats, warmup=args.warmup)
    print(report(times, "loop", unit="us", scale=1e6, per=args.updates, per_label="update"))
    loop = median(times["loop"])
    for name in ("ema_update", "swa multi", "swa avg_fn", "foreach floor"):
        verdict = f"  (target >= 3x: {'met' if loop / median(times[name]) >= 3 else 'MISSED'})" if name == "ema_update" else ""
        print(f"loop / {name} = {loop / median(times[name]):.2f}x{verdict}")
    print(f"ema_update - foreach floor = {(median(times['ema_update']) - median(times['foreach floor'])) / args.updates * 1e6:.0f} "
          "us/update (collecting the TensorDict leaves)")
    # Every case started from the same weights and applied the same number of updates (the
    # AveragedModels' first update is a copy, made during the warm-up): they must agree.
    ref = emas["ema_update"]
    diffs = [f"{name} {max((a - b).abs().max().item() for a, b in zip(ts, ref)):.1e}"
             for name, ts in emas.items() if name != "ema_update"]
    print("max |EMA - ema_update's|: " + ", ".join(diffs))

if __name__ == "__main__":
    main()
