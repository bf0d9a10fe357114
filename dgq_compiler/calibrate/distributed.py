"""Calibration on torch.distributed: `torchrun --nproc-per-node N -m dgq_compiler calibrate ...`.

Each rank calibrates its slice of the prompts (the same contiguous slices as `--shard rank/world`), then
the ranks reduce their statistics with collective elementwise min (`*_min` arrays) and max (the others),
the same exact, order-free merge as `dgq merge-stats`: the result is byte-identical to one process.
Backend: NCCL when the ranks run on CUDA devices (one per local rank), gloo on CPU. Multi-node runs
use torchrun's own rendezvous (`--nnodes`, `--rdzv-endpoint`); nothing here depends on the node count.
Tested with gloo on CPU; the CUDA/NCCL path is written to the same API but untested on this machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from dgq_compiler.errors import DgqError


@dataclass(frozen=True)
class Rank:
    rank: int
    world: int
    local_rank: int
    device: str    # the torch device this rank samples on
    backend: str   # nccl | gloo


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_rank(device: str | None = None) -> Rank:
    """Join the process group torchrun set up; a rank's device is cuda:LOCAL_RANK when CUDA is there."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as exc:
            raise DgqError(f"cannot join the torch.distributed group ({backend}): {str(exc).splitlines()[0]}") from None
    return Rank(rank, world, local_rank, device, backend)


def reduce_stats(stats, rank: Rank):
    """Every rank's statistics -> the statistics of all ranks' prompts (on every rank)."""
    import numpy as np
    import torch
    import torch.distributed as dist

    layout = (stats.config_sha256, stats.timesteps, stats.resolution, stats.sampling,
              [(n, stats.arrays[n].shape) for n in sorted(stats.arrays)])
    layouts: list = [None] * rank.world
    dist.all_gather_object(layouts, layout)
    if any(other != layouts[0] for other in layouts):
        raise DgqError("ranks calibrated different models, schedules or quantization points: cannot reduce")
    indices: list = [None] * rank.world
    dist.all_gather_object(indices, list(stats.prompt_indices))
    merged_indices = sorted(i for part in indices for i in part)
    if len(set(merged_indices)) != len(merged_indices):
        raise DgqError("ranks calibrated overlapping prompts: cannot reduce")
    device = torch.device(rank.device if rank.backend == "nccl" else "cpu")
    arrays = {}
    for name in sorted(stats.arrays):  # the same order on every rank
        tensor = torch.from_numpy(np.ascontiguousarray(stats.arrays[name], dtype=np.float32)).to(device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN if name.endswith("_min") else dist.ReduceOp.MAX)
        arrays[name] = np.ascontiguousarray(tensor.cpu().numpy(), dtype=np.float32)
    return replace(stats, prompt_indices=tuple(merged_indices), arrays=arrays)


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
