"""Shared timing for the benchmarks: interleaved runs after a warm-up, medians, ratios.

Every benchmark compares a few variants ("cases") of the same work in one process. A case is
a callable that does one run and returns the seconds it measured itself, so it can leave its
set-up (fresh weights, deleting a file) out of the figure. `interleave` runs each case
`warmup` times, then `repeats` rounds in which every case runs once, in an order that rotates
from round to round: slow drift of the machine (other processes, thermal state, the page
cache) then falls on every case alike instead of on whichever ran last.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from typing import Callable

import torch

Case = Callable[[], float]


def stopwatch(fn: Callable[[], object]) -> float:
    """Seconds `fn()` takes, by `time.perf_counter` (CPU work: no device to synchronize)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleave(cases: dict[str, Case], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every case `warmup` times (discarded), then `repeats` interleaved rounds; return
    the measured seconds per case, in round order."""
    if repeats < 1:
        raise ValueError(f"interleave: repeats={repeats!r} must be >= 1.")
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(cases[name]())
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[r] / den[r]: robust to drift between rounds, since both runs
    of a round saw the same machine state."""
    return statistics.median(n / d for n, d in zip(num, den))


def report(times: dict[str, list[float]], baseline: str, *, unit: str = "ms", scale: float = 1e3,
           per: int = 1, per_label: str = "run") -> str:
    """A table: median, min, max per case (seconds * scale / per), and each case's ratio to
    `baseline` as a ratio of medians and as the median of per-round ratios."""
    base = times[baseline]
    width = max(len(n) for n in times)
    lines = [f"{'case':<{width}}  {'median':>10}  {'min':>10}  {'max':>10}  {'ratio(med)':>10}  {'ratio(paired)':>13}",
             f"{'':<{width}}  {f'{unit}/{per_label}':>10}"]
    for name, xs in times.items():
        med, lo, hi = (v * scale / per for v in (median(xs), min(xs), max(xs)))
        ratio = median(xs) / median(base)
        paired = paired_ratio(xs, base)
        lines.append(f"{name:<{width}}  {med:>10.4g}  {lo:>10.4g}  {hi:>10.4g}  {ratio:>10.3f}  {paired:>13.3f}")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def load_line() -> str:
    """The 1/5/15-minute load averages: other work on a 2-core machine skews every figure, so
    each benchmark prints them before and after its runs."""
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average unavailable"


def machine_line() -> str:
    """CPU model, cores, torch version and intra-op threads, for the header of every run."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op threads, Python {platform.python_version()}")
