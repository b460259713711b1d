"""Data-parallel training with torchrun: who a process is, its share of the streams, DDP wrapping.

    torchrun --nproc_per_node 2 -m lstm_lab train --preset zaremba-small --out runs/small-ddp

starts two copies of the command; each learns from the variables torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK)
which one it is.  The training text is cut into batch_size streams exactly as by one process, and rank r
trains on its own contiguous block of columns:

    batchify(text, 8), 2 ranks        rank 0              rank 1
    ┌ s0 s1 s2 s3 s4 s5 s6 s7 ┐       ┌ s0 s1 s2 s3 ┐     ┌ s4 s5 s6 s7 ┐
    │ ...                     │  ->   │ ...         │     │ ...         │     same rows (windows) on every rank
    └                         ┘       └             ┘     └             ┘

Each rank carries the state of its own streams.  Its loss is Zaremba's: NLL summed over time, divided by its
batch_size / N streams; DistributedDataParallel averages the gradients over the N ranks, which gives
(1 / N) * sum over ranks of (N / B) * (its streams' gradient) = (1 / B) * (all B streams' gradient): exactly the
gradient of one process training all B streams.  So the learning rate, the loss scaling and the clipping
threshold stay those of one process.  Chapter 7.
"""
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from lstm_lab.runtime import seed_everything

__all__ = ["SINGLE", "World", "world_from_env", "check_shards", "shard_streams", "rank_device", "start_process_group",
           "stop_process_group", "from_rank0", "wrap", "unwrap", "sum_over_ranks"]


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes that train one model together.  Chapter 7."""
    rank: int = 0  # this process, 0 .. world_size - 1; rank 0 writes the run folder
    world_size: int = 1  # processes training together (torchrun's --nproc_per_node x nodes)
    local_rank: int = 0  # this process's number on its machine: it trains on cuda:local_rank
    backend: Optional[str] = None  # "gloo" (CPUs) or "nccl" (GPUs) once the process group is started


SINGLE = World()  # one process, no process group: plain `python -m lstm_lab train`


def world_from_env(environ):
    """The `World` of a process torchrun started, from its WORLD_SIZE, RANK and LOCAL_RANK; `SINGLE` when
    WORLD_SIZE is unset or 1 (a plain run).  Chapter 7."""
    world_size = int(environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return SINGLE
    return World(rank=int(environ["RANK"]), world_size=world_size, local_rank=int(environ["LOCAL_RANK"]))


def check_shards(batch_size, world_size):
    """Raise ValueError, naming the world sizes that work, unless batch_size streams split evenly over the ranks.
    Chapter 7."""
    if batch_size % world_size:
        sizes = ", ".join(str(n) for n in range(1, batch_size + 1) if batch_size % n == 0)
        raise ValueError(f"batch_size {batch_size} does not split over {world_size} processes: use "
                         f"--nproc_per_node {sizes}, or a batch size that is a multiple of {world_size}")


def shard_streams(source, rank, world_size):
    """Rank `rank`'s contiguous share of the streams of a batchified source: (S, B) -> (S, B / world_size).

    Every rank gets all S rows, so all take the same number of windows and their collectives always meet.  Chapter 7."""
    batch_size = source.shape[1]
    check_shards(batch_size, world_size)
    share = batch_size // world_size
    return source[:, rank * share: (rank + 1) * share]


def rank_device(device, world):
    """The device this process trains on: cuda:LOCAL_RANK when `device` is a GPU (one GPU per process), else
    `device`.  ValueError if this machine has fewer GPUs than processes.  Chapter 7."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise ValueError(f"process {world.local_rank} on this machine has no GPU of its own ({count} GPU(s)): "
                         f"use --nproc_per_node {count} or fewer")
    return torch.device("cuda", world.local_rank)


def start_process_group(world, device):
    """Join the other processes of a torchrun launch: gloo between CPUs, nccl between GPUs.

    torchrun's MASTER_ADDR and MASTER_PORT say where to meet.  Returns `world` with its backend named.  Chapter 7."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives run on this process's GPU
    dist.init_process_group(backend, rank=world.rank, world_size=world.world_size)
    return replace(world, backend=backend)


def stop_process_group():
    """Leave the process group, if this process is in one (safe to call after an error).  Chapter 7."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def from_rank0(value):
    """Rank 0's `value` (anything picklable), on every rank: rank 0 passes its own, the others anything.  Chapter 7."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model, device, world, seed):
    """The model to train in this process: `model` itself for one process, else a DistributedDataParallel.

    Wrap after loading a checkpoint: DDP copies rank 0's weights to every rank when it wraps.  It first seeds
    this rank's generators with seed + rank, so that every rank draws its own dropout masks; a resumed DDP run
    therefore draws other masks than an uninterrupted one would have (one process resumes its generators
    exactly, from the checkpoint).  Chapter 7."""
    if world.world_size == 1:
        return model
    seed_everything(seed + world.rank)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model):
    """The LanguageModel inside a DistributedDataParallel wrapper (or `model` itself): what is saved, evaluated
    and asked for `init_state`, so checkpoints have no "module." prefixes and fit any run.  Chapter 7."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def sum_over_ranks(stats, world_size, device):
    """`train_epoch`'s stats with "nll" and "tokens" summed over all ranks: the numbers of the whole batch.

    One process: `stats` as they are.  "seconds" stays this rank's.  Chapter 7."""
    if world_size == 1:
        return stats
    totals = torch.tensor([stats["nll"], stats["tokens"]], dtype=torch.float64, device=device)
    dist.all_reduce(totals)  # sum
    return {**stats, "nll": totals[0].item(), "tokens": int(totals[1].item())}
