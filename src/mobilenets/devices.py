"""Which device a command runs on: ``--device auto|cpu|cuda|cuda:N``, checked before any work starts."""

from __future__ import annotations

import torch

from .errors import UsageError

DEVICE_HELP = "auto (cuda if available), cpu, cuda, cuda:1, ..."


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """The device ``name`` asks for; ``auto`` is CUDA when present, else the CPU.

    A CUDA device without an index takes ``local_rank`` (the GPU ``torchrun`` gives this process), so the
    result always names one GPU. Raises :class:`UsageError` for a name torch does not know, for CUDA on a
    machine without it, and for a GPU index the machine does not have.
    """
    requested = name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: only CPU and CUDA are supported (auto, cpu, cuda or cuda:N)")
    if device.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name!r} asks for CUDA, but no CUDA device is available")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UsageError(f"--device {name!r}: this machine has {count} GPU(s), numbered 0 to {count - 1}")
    if local_rank >= count:
        raise UsageError(
            f"--device {requested!r}: this process is LOCAL_RANK {local_rank}, but the machine has {count} "
            f"GPU(s); start at most {count} process(es) per node, or train on the CPU with --device cpu"
        )
    return torch.device("cuda", local_rank if device.index is None else device.index)
