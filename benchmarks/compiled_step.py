"""The training step compiled against eager: `nnh.func.train_step` under
`torch.compile(fullgraph=True)` and as it is, on the same ready batches.

The brief's benchmark MLP (64-256-256-1, Adam, MSE, batch 256), one intra-op thread by default.
Interleaved rounds after a warm-up (which includes compiling), medians, one process.

    .venv/bin/python benchmarks/compiled_step.py [--batches 50] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import cpu_model, interleave, load_line, report, stopwatch  # noqa: E402

from nnh.func import init_train_state, train_step  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = init_train_state(model, optimizer)
    batches = [(torch.randn(256, 64), torch.randn(256, 1)) for _ in range(args.batches)]

    def loss_fn(m, batch):
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    compiled = torch.compile(train_step, fullgraph=True)

    def case(step):
        def run() -> float:
            def epoch() -> None:
                for batch in batches:
                    step(state, batch, module=model, loss_fn=loss_fn, optimizer=optimizer, skip_nonfinite=True)
            return stopwatch(epoch) / len(batches)
        return run

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s); "
          f"{load_line()}")
    times = interleave({"eager train_step": case(train_step), "compiled train_step": case(compiled)},
                       repeats=args.repeats, warmup=2)
    print(report(times, "eager train_step", unit="us", scale=1e6))
    print(load_line())


if __name__ == "__main__":
    main()
