"""From the launcher's environment to a process group: what `NNHandler(use_distributed=...)` sets up.

Two launchers are recognised:
  - torchrun (or any launcher that sets the same variables): `RANK`, `LOCAL_RANK`,
    `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`;
  - Slurm's srun: `SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS` (`SLURM_STEP_NUM_TASKS`
    when srun sets it), with the rendezvous at `MASTER_ADDR` if set, else the first host
    of `SLURM_JOB_NODELIST` (bracket ranges such as ``gpu[01-04,07]`` are expanded here,
    no `scontrol` needed), and port `MASTER_PORT` if set, else
    ``DEFAULT_PORT + SLURM_JOB_ID % 1000`` (two jobs sharing a node get different ports).
torchrun's variables win when both are present (torchrun started inside a Slurm job).
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist

from nnh.stateful.runtime import Runtime
from nnh.utils.distributed import get_local_rank

__all__ = ["DEFAULT_PORT", "Launch", "detect_launch", "expand_hostlist", "setup_runtime"]

DEFAULT_PORT = 29500
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SLURM_VARS = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_JOB_NODELIST")
STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Launch:
    """What the launcher says about this process."""

    launcher: str  # "torchrun" or "slurm"
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int

    @property
    def init_method(self) -> str:
        host = f"[{self.master_addr}]" if ":" in self.master_addr else self.master_addr  # IPv6
        return f"tcp://{host}:{self.master_port}"


def expand_hostlist(hostlist: str) -> list[str]:
    """The host names of a Slurm host list: ``"gpu[01-03,07],cpu1"`` ->
    ``["gpu01", "gpu02", "gpu03", "gpu07", "cpu1"]``. Zero padding is kept, and several
    bracket groups in one name expand as a product (``"r[1-2]n[1-2]"`` -> r1n1, r1n2, r2n1, r2n2)."""
    if not isinstance(hostlist, str) or not hostlist.strip():
        raise ValueError(f"expand_hostlist: {hostlist!r} is not a Slurm host list such as 'gpu[01-04,07]'.")
    hosts: list[str] = []
    for name in _split_top_level(hostlist.strip()):
        hosts.extend(_expand_name(name, hostlist))
    return hosts


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_name(name: str, whole: str) -> list[str]:
    match = re.search(r"\[([^\[\]]*)\]", name)
    if match is None:
        if "[" in name or "]" in name:
            raise ValueError(f"expand_hostlist: unbalanced brackets in {whole!r}.")
        return [name]
    head, tail = name[:match.start()], name[match.end():]
    out = []
    for item in match.group(1).split(","):
        lo, _, hi = item.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"expand_hostlist: {item!r} in {whole!r} is not a number or a range such as 01-04.")
        width = len(lo)
        for n in range(int(lo), int(hi or lo) + 1):
            out.extend(head + str(n).zfill(width) + rest for rest in _expand_name(tail, whole))
    return out


def _ints(env: Mapping[str, str], names: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for name in names:
        value = env[name]
        try:
            out[name] = int(value)
        except ValueError:
            raise ValueError(f"NNHandler: the environment variable {name}={value!r} must be an integer; "
                             "it is set by the launcher (torchrun or srun).") from None
    return out


def detect_launch(env: Mapping[str, str] | None = None) -> tuple[Launch | None, dict[str, list[str]]]:
    """(the launch this environment describes, or None; the variables each launcher lacks)."""
    env = os.environ if env is None else env
    missing = {"torchrun": [v for v in TORCHRUN_VARS if v not in env],
               "slurm": [v for v in SLURM_VARS if v not in env]}
    if not missing["torchrun"]:
        n = _ints(env, ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"))
        launch = Launch("torchrun", n["RANK"], n["LOCAL_RANK"], n["WORLD_SIZE"], env["MASTER_ADDR"], n["MASTER_PORT"])
    elif not missing["slurm"]:
        n = _ints(env, ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"))
        world = int(env["SLURM_STEP_NUM_TASKS"]) if env.get("SLURM_STEP_NUM_TASKS", "").isdigit() else n["SLURM_NTASKS"]
        addr = env.get("MASTER_ADDR") or expand_hostlist(env["SLURM_JOB_NODELIST"])[0]
        job = env.get("SLURM_JOB_ID", "0")
        port = int(env["MASTER_PORT"]) if "MASTER_PORT" in env else DEFAULT_PORT + (int(job) % 1000 if job.isdigit() else 0)
        launch = Launch("slurm", n["SLURM_PROCID"], n["SLURM_LOCALID"], world, addr, port)
    else:
        return None, missing
    if not 0 <= launch.rank < launch.world_size:
        raise ValueError(f"NNHandler: the {launch.launcher} environment gives rank {launch.rank} in a world of "
                         f"{launch.world_size}; the rank must lie in [0, world size). Check the launch command.")
    return launch, missing


def check_timeout(timeout: Any) -> datetime.timedelta | None:
    if timeout is None or isinstance(timeout, datetime.timedelta):
        return timeout
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return datetime.timedelta(seconds=timeout)
    raise ValueError(f"NNHandler: process_group_timeout={timeout!r} must be a number of seconds > 0, a "
                     "datetime.timedelta, or None (torch's default).")


def check_strategy(strategy: Any) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"NNHandler: strategy={strategy!r}; use 'ddp' (a full replica per process) or 'fsdp' "
                         "(parameters, gradients and optimizer state sharded over the processes).")
    return strategy


def setup_runtime(use_distributed: bool | None, device: torch.device, strategy: str = "ddp",
                  timeout: datetime.timedelta | None = None) -> Runtime:
    """The handler's `Runtime`: one process, or a rank of a process group (initialised here
    from the launcher's environment unless one exists already, which is then used as it is).

    `use_distributed=None` joins a group when one exists or the environment describes a launch
    of more than one process; True requires a group or a complete launch environment (and
    accepts a world of one); False ignores both. The device is `cuda:LOCAL_RANK` when
    `device` is a CUDA device (backend nccl), else the CPU (backend gloo).
    """
    strategy = check_strategy(strategy)
    if use_distributed is False:
        return Runtime(device)
    existing = dist.is_available() and dist.is_initialized()
    launch = None
    if not existing:
        launch, missing = detect_launch()
        if launch is None and use_distributed:
            raise RuntimeError(
                "NNHandler(use_distributed=True): no process group exists and the environment describes no "
                f"launch. torchrun sets {', '.join(TORCHRUN_VARS)} (missing: {', '.join(missing['torchrun'])}); "
                f"Slurm's srun sets {', '.join(SLURM_VARS)} (missing: {', '.join(missing['slurm'])}). Start the "
                "script with torchrun or srun, call torch.distributed.init_process_group first, or pass "
                "use_distributed=False.")
        if launch is None or (use_distributed is None and launch.world_size == 1):
            return Runtime(device)
    if not dist.is_available():
        raise RuntimeError("NNHandler: this torch build has no torch.distributed; pass use_distributed=False.")
    local_rank = launch.local_rank if launch is not None else get_local_rank()
    device = _rank_device(device, local_rank)
    if not existing:
        _init_group(launch, device, timeout)
    elif dist.get_backend() == "nccl" and device.type != "cuda":
        raise ValueError("NNHandler: the process group uses the nccl backend, which reduces CUDA tensors only, but "
                         f"device={str(device)!r}; pass device='cuda' or initialise the group with backend='gloo'.")
    return Runtime(device, rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                   strategy=strategy, group=_control_group(timeout))


_CONTROL_GROUPS: dict[int, Any] = {}


def _control_group(timeout: datetime.timedelta | None) -> Any:
    """A gloo group over the whole world for the host-side agreements (flags, epoch sums,
    objects): no GPU synchronisation, never queued behind the gradients' collectives. One per
    world group, shared by the handlers of this process."""
    key = id(dist.group.WORLD)
    if key not in _CONTROL_GROUPS:
        _CONTROL_GROUPS.clear()
        _CONTROL_GROUPS[key] = dist.new_group(backend="gloo", timeout=timeout)
    return _CONTROL_GROUPS[key]


def _rank_device(hint: torch.device, local_rank: int) -> torch.device:
    if hint.type != "cuda":
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(f"NNHandler: local rank {local_rank} has no GPU of its own (this machine has {count}); "
                           "start at most one process per GPU on each machine.")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _init_group(launch: Launch, device: torch.device, timeout: datetime.timedelta | None) -> None:
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
    if launch.launcher == "torchrun":
        # env:// also picks up the store of torchrun's agent when it offers one.
        dist.init_process_group(backend, init_method="env://", **kwargs)
    else:
        dist.init_process_group(backend, init_method=launch.init_method, rank=launch.rank,
                                world_size=launch.world_size, **kwargs)
    # nnh made the group, so nnh takes it down at exit; a group the user made stays theirs.
    atexit.register(_destroy_owned_group, dist.group.WORLD)


def _destroy_owned_group(group: Any) -> None:
    # While the interpreter is whole: gloo's worker threads must not outlive it.
    _CONTROL_GROUPS.clear()
    if dist.is_initialized() and dist.group.WORLD is group:
        dist.destroy_process_group()
