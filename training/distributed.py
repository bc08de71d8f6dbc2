"""The processes of a run: one, or N under torchrun (DDP), and the few numbers they share."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True      # fp32 leftovers (teacher pre/post, loss) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, world, local, device)


@contextmanager
def distributed_run() -> Iterator[Dist]:
    """with distributed_run() as d: the process group of a run (joined, then left however the run ends)."""
    d = setup_distributed()
    try:
        yield d
        if d.world > 1:
            # leave together: a rank that tears its gloo pair down while another still talks to it can
            # abort ("terminate called without an active exception"); not on an error, where peers may be gone
            dist.barrier()
    finally:
        close_distributed()


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a --precision (one of PRECISIONS) on `device`; None = fp32, no autocast.
    auto = bf16 on GPUs, fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_ranks_sum(values: list[float], d: Dist) -> list[float]:
    """Sum small per-rank numbers over all ranks (no-op on one process)."""
    if d.world == 1:
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def all_ranks_mean(value: torch.Tensor, d: Dist) -> float:
    """The mean of a scalar tensor over all ranks, as a Python float."""
    reduced = value.detach().clone()
    if d.world > 1:
        dist.all_reduce(reduced)
        reduced /= d.world
    return reduced.item()
