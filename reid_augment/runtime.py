"""What a training run needs of its processes and clocks, apart from the GAN: torchrun's process group (`Dist`,
`init_distributed`), DDP wrapping, the collectives the loop makes (`all_reduce`, `any_rank`, `barrier`), the guard
against host-device syncs (`sync_debug`) and the clock of time spent making batches (`WaitClock`). With one process
every collective is a no-op, so the loop calls them unconditionally.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class Dist:
    """This process's place among torchrun's: its rank and the world size (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(dev: torch.device) -> Dist:
    """Under torchrun (WORLD_SIZE > 1), join the process group (NCCL on CUDA, else gloo) on `dev`; else one process."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return Dist(dist.get_rank(), dist.get_world_size())


def wrap(module: torch.nn.Module, dev: torch.device, ctx: Dist, broadcast_buffers: bool = True) -> torch.nn.Module:
    """`module` wrapped for DDP when there are several processes, else `module` itself."""
    if ctx.world == 1:
        return module
    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None,
                                   broadcast_buffers=broadcast_buffers)


def all_reduce(tensor: torch.Tensor, ctx: Dist, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """`tensor` reduced in place over every process (a sum unless `op` says otherwise); with one process, as is."""
    if ctx.world > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


def rank_zeros(flag: bool, dev: torch.device, ctx: Dist) -> bool:
    """Process 0's `flag` on every process: a choice made per process (the CPU's bf16 probe, which times kernels
    and may tip either way under load) is then made once for the whole run."""
    if ctx.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=dev)
    dist.broadcast(value, 0)
    return bool(value.item())


def any_rank(nonfinite: torch.Tensor, out_of_time: bool, ctx: Dist) -> tuple[bool, bool]:
    """Whether any process saw a non-finite loss, and whether any ran out of time: one all-reduce, one sync."""
    flags = torch.stack([nonfinite, torch.full_like(nonfinite, float(out_of_time))])
    bad, late = all_reduce(flags, ctx, dist.ReduceOp.MAX).tolist()
    return bool(bad), bool(late)


def barrier(ctx: Dist) -> None:
    """Wait until every process gets here (nothing to wait for with one)."""
    if ctx.world > 1:
        dist.barrier()


@contextmanager
def sync_debug(mode: str | None):
    """Inside, a host-device sync warns or raises (`mode` 'warn' or 'error'; None: nothing is checked)."""
    if not mode:
        yield
        return
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(old)


class WaitClock:
    """Seconds spent making batches. On a GPU the host returns from the batch call before the batch is made, so
    there it is the GPU's time between CUDA events recorded around the call, read at log intervals only."""

    def __init__(self, dev: torch.device):
        self.cuda, self.seconds, self.pending = dev.type == "cuda", 0.0, []

    def __enter__(self) -> None:
        if self.cuda:
            self.pending.append(torch.cuda.Event(enable_timing=True))
            self.pending[-1].record()
        else:
            self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.pending.append(torch.cuda.Event(enable_timing=True))
            self.pending[-1].record()
        else:
            self.seconds += time.perf_counter() - self.start

    def take(self) -> float:
        """The seconds since the last take (on a GPU, waits for the last batch)."""
        if self.pending:
            self.pending[-1].synchronize()
            pairs = zip(self.pending[::2], self.pending[1::2])
            self.seconds += sum(start.elapsed_time(end) for start, end in pairs) / 1000
        seconds, self.seconds, self.pending = self.seconds, 0.0, []
        return seconds
