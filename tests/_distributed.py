"""Run a job function in several processes, as torchrun would, and collect what each returns.

`run_ranks("tests.stateful.dist_jobs:train_equivalence", tmp_path)` starts `world` Python
processes with torchrun's variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
`MASTER_PORT`) and one torch thread each; every process calls the job with `(rank, out)`,
where `out` is a folder shared by the ranks, and the dict it returns is saved for the parent.
A process that outlives `timeout` is killed, and the test fails naming it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from tests._models import CHILD_ENV, ROOT


@dataclass
class RankResult:
    rank: int
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # from the start of all processes to this one's exit
    data: dict[str, Any] | None  # what the job returned (None when it raised)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(job: str, out: Any, world: int = 2, timeout: float = 60, env: dict[str, str] | None = None,
              check: bool = True) -> list[RankResult]:
    out = str(out)
    os.makedirs(out, exist_ok=True)
    base = {k: v for k, v in CHILD_ENV.items() if not k.startswith("SLURM_")}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world),
                PYTHONUNBUFFERED="1", **(env or {}))
    procs, start = [], time.monotonic()
    for rank in range(world):
        penv = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen([sys.executable, "-m", "tests._distributed", job, out], cwd=ROOT, env=penv,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for rank, proc in enumerate(procs):
        left = max(1.0, timeout - (time.monotonic() - start))
        try:
            stdout, stderr = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            stdout, stderr = proc.communicate()
            raise AssertionError(f"{job}: rank {rank} still ran after {timeout} s (a hang)\n{stderr[-4000:]}")
        seconds = time.monotonic() - start
        path = os.path.join(out, f"rank{rank}.pt")
        data = torch.load(path, weights_only=False) if os.path.exists(path) else None
        results.append(RankResult(rank, proc.returncode, stdout, stderr, seconds, data))
    if check:
        for r in results:
            assert r.returncode == 0 and r.data is not None, f"{job}: rank {r.rank} failed\n{r.stderr[-6000:]}"
    return results


def main() -> None:
    job, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    module_name, _, name = job.partition(":")
    module = __import__(module_name, fromlist=[name])
    rank = int(os.environ["RANK"])
    data = getattr(module, name)(rank, out)
    torch.save(data, os.path.join(out, f"rank{rank}.pt"))
    # The job is done and its result written. Leave without the interpreter's teardown: about
    # one run in forty, gloo's threads abort it ("terminate called without an active exception")
    # after the process group was destroyed, which is not what these tests check.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
