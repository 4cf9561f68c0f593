"""Process-group setup for ``torchrun``: which rank this process is, and the few collectives training uses."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import resolve_device
from ..errors import TrainingError, UsageError


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device of this process; ``world_size == 1`` when not under ``torchrun``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes (NCCL on GPU, gloo on CPU), or run alone.

    ``device`` is ``--device`` (:func:`mobilenets.devices.resolve_device`). Under ``torchrun`` each
    process uses GPU ``LOCAL_RANK``, so a GPU index there is refused: pick GPUs with
    ``CUDA_VISIBLE_DEVICES``.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size > 1 and device.startswith("cuda:"):
        raise UsageError(
            f"--device {device!r}: under torchrun each process uses GPU LOCAL_RANK; pass --device cuda "
            "(or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    resolved = resolve_device(device, local_rank=local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)


def shutdown_distributed(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (a no-op when alone); returns it."""
    if context.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, context: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) into ``module`` in every process.

    Each process updates them from its own batches, so they differ between processes; parameters
    do not (DistributedDataParallel keeps them equal). A no-op when alone.
    """
    if context.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def any_process(flag: bool, context: DistContext) -> bool:
    """True if ``flag`` is true in any process, so all of them stop at the same step."""
    if not context.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather_objects(value: object, context: DistContext) -> list[object]:
    """``value`` of every process, by rank, in every process (``[value]`` when alone)."""
    if not context.distributed:
        return [value]
    values: list[object] = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process died or hung."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        marker in text for marker in ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out")
    )


def lost_peer_error(error: BaseException, context: DistContext) -> TrainingError:
    """The error a process raises when the process group broke under it, saying what to do next."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip())  # drop gloo's "[source/file.cc:561]"
    first_line = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
    return TrainingError(
        f"process {context.rank} of {context.world_size} lost contact with the others ({first_line[:160]}); "
        f"another process probably died: torchrun's summary names it and its exit code. The run stopped "
        f"without writing; continue from the last checkpoint with the same command plus --resume"
    )
