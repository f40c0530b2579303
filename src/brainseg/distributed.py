"""Multi-process training: launch under torchrun, set up the process group, reduce metrics.

`train.devices: N` with N > 1 makes the train stage re-run itself under torchrun, so the DVC
command stays `python stages/train.py`. Each process trains on cuda:LOCAL_RANK when CUDA is used,
else on the CPU with the gloo backend (what the tests use).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from brainseg.errors import BrainsegError


class DistributedError(BrainsegError, RuntimeError):
    pass


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def run_under_torchrun(processes: int) -> None:
    """Re-run this script (same arguments) as `processes` torchrun workers on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *sys.argv]
    print(f"train.devices = {processes}: launching {' '.join(cmd[1:])}", flush=True)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise DistributedError(f"torchrun with {processes} processes failed (exit code {code}); "
                               "the first worker's error is printed above")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DistributedError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def setup(device_name: str, devices: int) -> Context:
    """Join the process group when under torchrun; a single process otherwise."""
    if not launched_by_torchrun():
        return Context(0, 1, resolve_device(device_name))
    world, rank, local_rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if world != devices:
        raise DistributedError(f"torchrun started {world} processes but train.devices is {devices}")
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"train.devices is {devices} but only {torch.cuda.device_count()} CUDA "
                                   "device(s) are visible")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, device)


def cleanup(ctx: Context) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(ctx: Context, values: list[float]) -> list[float]:
    """Element-wise sum over all processes (float64, so sums of per-image scores stay exact enough)."""
    if ctx.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_buffers(ctx: Context, module: torch.nn.Module) -> None:
    """Give every process rank 0's batch-norm statistics, so all validate the model rank 0 saves."""
    if ctx.world > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def barrier(ctx: Context) -> None:
    if ctx.world > 1:
        dist.barrier()
