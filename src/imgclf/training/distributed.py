"""Training on several processes: where this process stands among torchrun's, its device and
process group, and the relaunch of the train stage under torchrun (`train.nproc` > 1).

Each process takes its share of every batch (DistributedDataParallel: NCCL on GPUs, gloo on
CPU); validation counts are summed over all processes; process 0 alone writes the model and
the logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from typing import Iterator

import torch
import torch.distributed as dist

from imgclf.core.errors import StageError
from imgclf.training.models import select_device


@dataclasses.dataclass(frozen=True)
class Processes:
    """Where this process stands among the training processes (one, or torchrun's)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes (itself when alone)."""
        if self.world == 1:
            return list(values)
        totals = torch.tensor(values, dtype=torch.float64,
                              device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(totals)
        return totals.tolist()


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ


@contextlib.contextmanager
def distributed(device_name: str) -> Iterator[tuple[Processes, torch.device]]:
    """This process's place among torchrun's processes, its device, and the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield Processes(), select_device(device_name)
        return
    processes = Processes(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))
    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield processes, device
        # Every process waits here, the GIL released, for the others. A gloo worker thread
        # frees the last all_reduce's tensors after the call has returned, which takes the GIL;
        # a process group destroyed meanwhile (when DDP's reducer is freed) waits for that
        # thread while holding the GIL: a deadlock, seen in a CPU test run with torch 2.13.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def relaunch_under_torchrun(nproc: int, module: str) -> None:
    """Run `python -m MODULE` in `nproc` processes on this machine under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", module]
    if subprocess.run(command).returncode != 0:
        raise StageError(f"training under torchrun with train.nproc={nproc} failed (see the "
                         "output of its processes above)")
