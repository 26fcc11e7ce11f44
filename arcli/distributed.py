"""Data-parallel training under `torchrun`: who this process is, the process group, batch shards.

`torchrun --nproc-per-node N -m arcli train ...` starts N copies of the command with RANK,
WORLD_SIZE and LOCAL_RANK in their environment. Each copy builds the same model from the same seed,
wraps it in DistributedDataParallel (gloo on the CPU, nccl on CUDA) and trains on its own rows of
every batch: all ranks draw the same batch of B rows from the same seeded generator and rank r keeps
rows [r * B/N, (r + 1) * B/N). So the batches do not depend on N: a run may resume with another
number of processes and still see the same data. Rank 0 alone writes checkpoints, logs and progress.

The gradient of the batch is the gradient of its mean loss per unit (sample, sub-pixel, token).
DDP averages the ranks' gradients, so rank r minimises objective_r * count_r * N / count, which makes
the average the same mean per unit one process computes over the whole batch, even where the ranks'
shards hold different numbers of units (lines of text of different lengths).
"""

from __future__ import annotations

import datetime
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from arcli.errors import ArcliError, OptionError

# A rank waits this long for the others at a collective (held-out BLEU runs on rank 0 alone while
# the others wait; a dead peer is noticed at once through its closed connection, not by this).
TIMEOUT = datetime.timedelta(minutes=30)


class PeerLost(ArcliError):
    """Another training process stopped (killed, or failed) while this one waited for it."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; World() is a single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # index among the processes of this machine (its GPU, on CUDA)
    backend: str | None = None  # "gloo" or "nccl" once the process group is up

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files, logs and progress."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


SINGLE = World()  # one process, no process group


def from_environment(environ: dict[str, str] | None = None) -> World:
    """The World that torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (World() without them)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return World()
    try:
        size, rank = int(environ["WORLD_SIZE"]), int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ArcliError(
            f"WORLD_SIZE={environ.get('WORLD_SIZE')!r}, RANK={environ.get('RANK')!r}, LOCAL_RANK={environ.get('LOCAL_RANK')!r}: "
            "torchrun sets these to whole numbers; start data-parallel training with torchrun"
        ) from None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ArcliError(f"WORLD_SIZE={size}, RANK={rank}: the rank must be in 0..WORLD_SIZE-1; start data-parallel training with torchrun")
    return World(rank=rank, size=size, local_rank=local_rank)


def check_batch(world: World, batch_size: int) -> int:
    """Rows per rank; refuses a batch that the processes cannot share evenly."""
    if batch_size % world.size:
        lower = batch_size - batch_size % world.size
        suggestion = f"e.g. {lower} or {lower + world.size}" if lower else f"e.g. {world.size}"
        raise OptionError(
            f"--batch-size {batch_size} does not divide among {world.size} processes: give a multiple of {world.size} ({suggestion})"
        )
    return batch_size // world.size


def device_for(world: World, device: torch.device) -> torch.device:
    """This rank's device: its own GPU (cuda:LOCAL_RANK) on CUDA, the device as given otherwise."""
    if device.type != "cuda" or not world.parallel:
        return device
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise ArcliError(
            f"local rank {world.local_rank} has no GPU: this machine has {count}; start at most {count} processes per node"
        )
    return torch.device("cuda", world.local_rank)


def start(world: World, device: torch.device) -> World:
    """Join the process group (gloo on the CPU, nccl on CUDA); a single process joins nothing."""
    if not world.parallel:
        return world
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as error:
        raise ArcliError(f"cannot join the {world.size} training processes ({backend}): {_first_line(error)}") from None
    return World(rank=world.rank, size=world.size, local_rank=world.local_rank, backend=backend)


def stop(world: World) -> None:
    if world.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Any, world: World, rows: int) -> Any:
    """This rank's rows of a batch of `rows` rows: every tensor whose first dimension is `rows`
    (inside tuples, named tuples, lists and dicts) is cut into `world.size` equal parts and part
    `world.rank` kept. Anything else (None, numbers, a tensor of another length such as the ordering
    a MADE batch trains) is the batch's as a whole and goes to every rank unchanged."""
    if not world.parallel:
        return batch
    if rows % world.size:
        raise ValueError(f"a batch of {rows} rows does not divide among {world.size} processes")
    per = rows // world.size
    if isinstance(batch, torch.Tensor):
        return batch[world.rank * per : (world.rank + 1) * per] if batch.dim() and batch.shape[0] == rows else batch
    if isinstance(batch, dict):
        return {k: shard(v, world, rows) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(shard(v, world, rows) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard(v, world, rows) for v in batch)
    return batch


def sum_over_ranks(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    """The sum of `values` over all ranks (float64), the same on every rank."""
    if not world.parallel:
        return [float(v) for v in values]
    where = device if world.backend == "nccl" else torch.device("cpu")  # nccl reduces only CUDA tensors
    tensor = torch.tensor(list(values), dtype=torch.float64, device=where)
    _collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def failed_ranks(world: World, failed: bool, device: torch.device) -> list[int]:
    """The ranks (all of them asked at once) that report a failure."""
    flags = [0.0] * world.size
    flags[world.rank] = 1.0 if failed else 0.0
    return [rank for rank, flag in enumerate(sum_over_ranks(flags, world, device)) if flag]


def same_on_every_rank(value: int, world: World, device: torch.device) -> bool:
    """Whether every rank holds the same whole number (e.g. a hash of the prepared model settings)."""
    if not world.parallel:
        return True
    number = float(value % (1 << 52))  # exactly representable in float64
    where = device if world.backend == "nccl" else torch.device("cpu")
    extremes = torch.tensor([number, -number], dtype=torch.float64, device=where)
    _collective(dist.all_reduce, extremes, op=dist.ReduceOp.MAX)
    return float(extremes[0]) == -float(extremes[1])  # the largest value is also the smallest


class DataParallel(DistributedDataParallel):
    """DDP that lets a task's loss read the model's own attributes (`model.config`, `vocab_size`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if not world.parallel:
        return model
    # Masked/strided convolution kernels (PixelCNN) get gradients laid out unlike DDP's buckets: a
    # copy per step, which DDP warns about in every process; the result is the same.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _collective(function, *args, **kwargs) -> None:
    try:
        function(*args, **kwargs)
    except (RuntimeError, dist.DistError) as error:
        raise lost_peer(error) from None


def is_peer_failure(error: BaseException) -> bool:
    """Whether an error raised inside a collective (DDP's gradient all-reduce in `backward`
    included) comes from a process that went away, rather than from this one."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        sign in text for sign in ("gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe")
    )


def lost_peer(error: BaseException) -> PeerLost:
    return PeerLost(f"another training process stopped ({_first_line(error)})")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = re.sub(r"^\[[^\]]*\] ", "", text.splitlines()[0])  # gloo's "[path/pair.cc:537] " source location
    return line[:160]
