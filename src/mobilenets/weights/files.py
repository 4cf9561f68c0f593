"""Reading weight files safely, whatever wrote them; writing them as safetensors, atomically.

Formats are recognised by their first bytes, not their extension: safetensors (an 8-byte header
length, then JSON), PyTorch's zip archive and legacy PyTorch pickles. PyTorch files are read with
``torch.load(..., weights_only=True)`` only, so a file carrying code is refused and nothing runs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save

from ..atomic import save_atomic
from ..errors import MissingFileError, UsageError

# Containers other projects wrap a state_dict in, tried in this order.
_CONTAINER_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model", "net", "params")  # ema: ours
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


class UnsafeWeightsError(UsageError):
    """A weights file that holds Python objects other than tensors (possibly code): refused."""


# torch's weights-only unpickler explains a refusal in a long multi-line message: the line that names
# what it refused (a global, a call, an object it will not build) is the one worth showing.
_REFUSAL = re.compile(r"unsupported global|trying to call reduce|can only (?:create|build)", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OPCODE = re.compile(r"unsupported operand", re.IGNORECASE)
# What a truncated or damaged pickle raises inside torch.load, besides torch's own RuntimeError.
_DAMAGED = (
    RuntimeError,
    EOFError,
    OSError,
    struct.error,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    ValueError,
)


def _kind(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(9)
    # safetensors first: its header length is arbitrary bytes that may well start with "PK" or 0x80.
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 100 * 1024**2:
        return "safetensors"
    if head[:2] == b"PK":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-pickle"
    return "unknown"


def _safetensors_in_memory(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file read whole, for names safetensors cannot open (it takes UTF-8 paths only)."""
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    return load(data), dict(header.get("__metadata__") or {})


def utf8_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is UTF-8 (a name of other bytes holds surrogates here): libraries written in
    Rust or C++ (safetensors, ONNX Runtime) take only such names."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        if utf8_name(path):
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        else:
            tensors, metadata = _safetensors_in_memory(path)
    except (SafetensorError, OSError, ValueError, RuntimeError, struct.error) as error:
        raise UsageError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
    if not tensors:
        return tensors, metadata
    return unwrap_state_dict(tensors, str(path)), metadata  # a DDP or compiled model's, saved as is


def _exported_program(path: Path) -> str | None:
    """ "TorchScript" or "torch.export" when ``path`` is such a program's archive rather than weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None  # torch.load names the damage
    if any(name.endswith("/archive_format") for name in names):
        return "torch.export"
    if any("/code/" in name for name in names):
        return "TorchScript"
    return None


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    program = _exported_program(path) if _kind(path) == "torch-zip" else None
    if program is not None:  # torch.load would warn, then advise weights_only=False
        raise UsageError(
            f"{str(path)!r} is a {program} program (what `mobilenets export` writes), not a weights file; "
            "run it with --program, or give the weights it was exported from"
        )
    try:
        # A handle, not the name: torch.load reads a name ending in .safetensors with safetensors, whatever
        # the first bytes say (a .pth renamed, or damage that looks like a pickle, gave a traceback).
        with path.open("rb") as handle:
            loaded = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickler_detail(error)
        if _OPCODE.search(detail):  # pickle.dump's protocol 4 or 5 (torch.save writes 2): nothing was read
            raise UsageError(
                f"{str(path)!r} is not a readable PyTorch weights file: torch.load's weights-only reader "
                f"stops at {detail} (a pickle protocol other than torch.save's, such as pickle.dump's "
                "default 4, or damage), so nothing in it ran. Re-save the weights with "
                "torch.save(state_dict) or as safetensors from a trusted environment"
            ) from None
        if not _REFUSAL.search(detail):  # a bad length, a damaged archive: not refused
            raise UsageError(f"{str(path)!r} is not a readable PyTorch weights file: {detail}") from None
        raise UnsafeWeightsError(
            f"refused to load {str(path)!r}: it holds Python objects other than tensors, which could run "
            f"code (torch.load with weights_only=True: {detail}; a truncated file can look like this too). "
            "Re-save the weights as a plain state_dict or safetensors from a trusted environment"
        ) from None
    except _DAMAGED as error:
        raise UsageError(f"{str(path)!r} is not a readable PyTorch weights file: {_reason(error)}") from None
    return unwrap_state_dict(loaded, str(path))


def _reason(error: BaseException) -> str:
    """The first line of ``error``'s message, or what it means when it has none."""
    if isinstance(error, EOFError | struct.error | IndexError):  # what a cut legacy pickle raises
        return f"it ends early or is damaged ({type(error).__name__}: a truncated copy or download?)"
    message = _ANSI.sub("", str(error)).strip()
    return message.splitlines()[0] if message else type(error).__name__


def _unpickler_detail(error: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler stopped at, from the long advice around it (which ends by
    suggesting ``weights_only=False``: never shown). torch puts it after ``WeightsUnpickler error:``, on
    the same line or the next ones."""
    text = _ANSI.sub("", str(error))
    marker = "WeightsUnpickler error:"
    found = text.split(marker, 1)[1] if marker in text else text
    lines = [line.strip() for line in found.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Check the documentation of torch.load")]
    refusals = [line for line in lines if _REFUSAL.search(line)]
    detail = (refusals or lines or [type(error).__name__])[0]
    if marker not in text and not refusals:
        return type(error).__name__  # torch's advice alone says nothing about the file
    return detail.split(". Please use")[0].rstrip(".")


def unwrap_state_dict(loaded: Any, source: str) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` mapping inside ``loaded``: a bare state_dict or a training checkpoint.

    Containers such as ``{"state_dict": ...}`` or ``{"model": ...}`` are opened (EMA weights first:
    ``state_dict_ema``, ``model_ema``, as timm's loader does), and wrapper prefixes added by
    DistributedDataParallel (``module.``) or ``torch.compile`` (``_orig_mod.``) are removed.
    """
    if isinstance(loaded, Mapping):
        for key in _CONTAINER_KEYS:
            inner = loaded.get(key)
            # A state_dict may carry a non-tensor entry or two (a version number): those are dropped.
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise UsageError(f"{source!r} holds no state_dict (expected a mapping of parameter names to tensors)")
    tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UsageError(f"{source!r} holds no tensors; expected a state_dict")
    wrapped = True
    while wrapped:  # torch.compile(DDP(model)) saves "_orig_mod.module.": any order, any number
        wrapped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in tensors):
                tensors = {key[len(prefix) :]: value for key, value in tensors.items()}
                wrapped = True
    return tensors


def check_weights_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path`` if it names a file; otherwise a clear error (missing, or a folder)."""
    file = Path(path)
    if file.is_dir():
        raise UsageError(f"weights file {str(file)!r} is a folder; give the weights file inside it")
    if not file.is_file():
        raise MissingFileError(f"weights file {str(file)!r} does not exist")
    return file


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state_dict, metadata) of a safetensors or PyTorch weights file; metadata is empty for ``.pth``.

    Raises ``FileNotFoundError`` if missing, :class:`UnsafeWeightsError` for a file holding more than
    tensors, ``ValueError`` for anything unreadable.
    """
    file = check_weights_path(path)
    if file.stat().st_size == 0:
        raise UsageError(f"weights file {str(file)!r} is empty (0 bytes): an interrupted copy or download?")
    kind = _kind(file)
    if kind == "safetensors":
        return _read_safetensors(file)
    if kind in ("torch-zip", "torch-pickle"):
        return _read_torch(file), {}
    raise UsageError(
        f"{str(file)!r} is neither a safetensors nor a PyTorch weights file (unrecognised first bytes)"
    )


def write_safetensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write ``tensors`` (moved to CPU, contiguous) and string ``metadata`` to ``path`` atomically."""
    plain = {key: value.detach().contiguous().cpu() for key, value in tensors.items()}
    # save_file writes in place; serialising to bytes (same format) lets the write be atomic.
    payload = save(plain, metadata=dict(metadata))
    save_atomic(path, lambda handle: handle.write(payload))
