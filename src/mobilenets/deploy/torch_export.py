"""Export to TorchScript (``.pt``) or a torch.export program (``.pt2``), each carrying the model card.

Both are built from the BatchNorm-folded model in eval mode and written atomically. The card travels
inside the file as the extra file ``mobilenets.json`` (the ONNX metadata's fields, JSON-decoded), so a
deployment can preprocess, run and label images without the original weights file.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import save_atomic
from ..errors import UsageError, external_step
from ..weights.card import ModelCard
from .captured import MAX_BATCH, ExportedClassifier
from .fuse import fuse
from .onnx_export import INPUT_NAME, card_metadata

METADATA_FILE = "mobilenets.json"
TORCHSCRIPT_FORMAT = "mobilenets-torchscript/1"
EXPORTED_PROGRAM_FORMAT = "mobilenets-exported-program/1"
PT2E_INT8 = "pt2e"  # metadata "int8" of a quantized program: its ops are torchao's
_JSON_FIELDS = ("card", "classes", "preprocess")


def torch_metadata(
    card: ModelCard | None, *, file_format: str, resolution: int, dynamic_batch: bool, input_name: str
) -> dict[str, Any]:
    """The ``mobilenets.json`` document: the ONNX metadata (card, classes, preprocessing) plus shapes."""
    props = card_metadata(card, format=file_format)
    document: dict[str, Any] = {
        key: json.loads(value) if key in _JSON_FIELDS else value for key, value in props.items()
    }
    document.update(
        input_name=input_name,
        input_shape=["N" if dynamic_batch else 1, 3, resolution, resolution],
        resolution=resolution,
        dynamic_batch=dynamic_batch,
    )
    return document


class _InputCheck(nn.Module):
    """Refuses inputs other than (N, 3, R, R): the trace baked in spatial sizes (TF ``SAME`` pads)."""

    def __init__(self, inner: nn.Module, resolution: int) -> None:
        super().__init__()
        self.inner = inner
        self.resolution = resolution

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        size = self.resolution
        if input.dim() != 4 or input.size(1) != 3 or input.size(2) != size or input.size(3) != size:
            raise UsageError(
                f"this model takes a float32 NCHW batch of shape (N, 3, {size}, {size}); "
                f"got {list(input.shape)}"
            )
        return self.inner(input)


def export_torchscript(
    model: nn.Module, path: str | os.PathLike[str], *, resolution: int, card: ModelCard | None = None
) -> Path:
    """Write ``model`` (BatchNorm folded, eval mode, on the CPU) as a traced, frozen TorchScript file.

    The module takes ``input`` (N, 3, resolution, resolution) float32 NCHW of any batch size N (a trace
    records the batch dimension symbolically) and refuses other spatial sizes with a ``ValueError``.
    Load it with ``torch.jit.load``; the card is the extra file ``mobilenets.json``.
    """
    fused = fuse(model).float().cpu()
    example = torch.zeros(2, 3, resolution, resolution)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # spatial sizes: the input check covers
        with external_step("TorchScript tracing and freezing", "try --format exported-program or onnx"):
            traced = torch.jit.trace(fused, example, check_trace=False)
            frozen = torch.jit.freeze(torch.jit.script(_InputCheck(traced, resolution)).eval())
        metadata = torch_metadata(
            card,
            file_format=TORCHSCRIPT_FORMAT,
            resolution=resolution,
            dynamic_batch=True,
            input_name=INPUT_NAME,
        )
        extra = {METADATA_FILE: json.dumps(metadata, sort_keys=True)}
        save_atomic(path, lambda handle: torch.jit.save(frozen, handle, _extra_files=extra))
    return Path(path)


def export_program(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    resolution: int,
    card: ModelCard | None = None,
    dynamic_batch: bool = False,
) -> Path:
    """Write ``torch.export.export`` of ``model`` (BatchNorm folded, eval mode, CPU) as a ``.pt2`` file.

    The program takes one (N, 3, resolution, resolution) float32 NCHW tensor; ``dynamic_batch`` leaves
    N free (1..4096), otherwise N is 1 (the program's guards refuse other shapes). Load it with
    ``torch.export.load``; the card is the extra file ``mobilenets.json``. A
    :func:`~mobilenets.deploy.pt2e.quantize_pt2e` result is exported as it is and marked int8 in the
    metadata (loading it needs torchao, which :func:`load_exported` imports).
    """
    from .pt2e import Int8Model

    int8 = isinstance(model, Int8Model)
    fused = model.cpu() if int8 else fuse(model).float().cpu()
    # An example batch of 2: export specializes dimensions whose example size is 1.
    example = torch.zeros(2 if dynamic_batch else 1, 3, resolution, resolution)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic_batch else None
    with torch.inference_mode(False), external_step("torch.export", "try --format torchscript or onnx"):
        program = torch.export.export(fused, (example,), dynamic_shapes=dynamic_shapes)
    metadata = torch_metadata(
        card,
        file_format=EXPORTED_PROGRAM_FORMAT,
        resolution=resolution,
        dynamic_batch=dynamic_batch,
        input_name=program.graph_signature.user_inputs[0],
    )
    if int8:
        metadata["int8"] = PT2E_INT8
        metadata["quantization"] = model.quantization
    extra = {METADATA_FILE: json.dumps(metadata, sort_keys=True)}
    save_atomic(path, lambda handle: torch.export.save(program, handle, extra_files=extra))
    return Path(path)


def read_torch_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``mobilenets.json`` of a file written by :func:`export_torchscript` or :func:`export_program`.

    Read straight from the zip archive, without loading the weights; ``ValueError`` if it has none.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith(f"/extra/{METADATA_FILE}")]
            text = archive.read(names[0]) if names else b""
    except (zipfile.BadZipFile, IsADirectoryError):
        raise UsageError(f"{str(path)!r} is not a TorchScript or torch.export file (not a zip)") from None
    if not text:
        raise UsageError(
            f"{str(path)!r} carries no {METADATA_FILE} (not exported by mobilenets?); load it with "
            "torch.jit.load or torch.export.load"
        )
    try:
        document = json.loads(text)
    except ValueError:
        raise UsageError(f"{str(path)!r}: its {METADATA_FILE} is not valid JSON") from None
    if not isinstance(document, dict):
        raise UsageError(f"{str(path)!r}: its {METADATA_FILE} is not a JSON object")
    return document


def card_from_metadata(metadata: dict[str, Any], path: str | os.PathLike[str]) -> ModelCard:
    """The model card in the metadata document of a file we exported (``.pt``, ``.pt2``, ``.pte``, IR).

    A :class:`~mobilenets.errors.UsageError` if the file was exported without one.
    """
    if "card" not in metadata:
        raise UsageError(
            f"{str(path)!r} has no mobilenets model card in its metadata (exported without one); "
            "evaluate it through the weights it came from"
        )
    return ModelCard.from_metadata(metadata["card"], str(path))


def read_torch_card(path: str | os.PathLike[str]) -> ModelCard:
    """The model card stored in a TorchScript or torch.export file we exported; ``ValueError`` if none."""
    return card_from_metadata(read_torch_metadata(path), path)


def load_exported(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """A runnable CPU module and the metadata of a ``.pt`` (TorchScript) or ``.pt2`` file we exported.

    TorchScript files come back as ``torch.jit.load`` gives them, programs as
    ``torch.export.load(path).module()``.
    """
    metadata = read_torch_metadata(path)
    file_format = metadata.get("format")
    if file_format == TORCHSCRIPT_FORMAT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            with external_step(f"torch.jit.load of {str(path)!r}", "re-export it with this torch"):
                return torch.jit.load(str(path), map_location="cpu"), metadata
    if file_format == EXPORTED_PROGRAM_FORMAT:
        if metadata.get("int8") == PT2E_INT8:
            from .pt2e import torchao_ops

            torchao_ops()  # registers the quantize / dequantize ops the program calls
        with external_step(f"torch.export.load of {str(path)!r}", "re-export it with this torch"):
            return torch.export.load(str(path)).module(), metadata
    raise UsageError(
        f"{str(path)!r} has metadata format {file_format!r}; expected {TORCHSCRIPT_FORMAT!r} or "
        f"{EXPORTED_PROGRAM_FORMAT!r}"
    )


def load_for_inference(path: str | os.PathLike[str]) -> tuple[ExportedClassifier, dict[str, Any]]:
    """A ``.pt`` / ``.pt2`` file we exported, ready to evaluate, and its metadata.

    A PT2E int8 program is compiled (:func:`~mobilenets.deploy.pt2e.compile_int8`: its first call per
    batch size takes seconds), so it runs, and is scored, with the int8 kernels a deployment uses;
    run as it is, the graph only simulates int8 and can differ (see ``mobilenets.deploy.pt2e``).
    A program exported with a fixed batch size takes any multiple of it, run in pieces.
    """
    module, metadata = load_exported(path)
    if metadata.get("int8") == PT2E_INT8:
        from .pt2e import compile_int8

        module = compile_int8(module)
    fixed = None if metadata.get("dynamic_batch", True) else int(metadata["input_shape"][0])
    resolution = int(metadata["resolution"]) if metadata.get("resolution") else None
    return ExportedClassifier(module, fixed_batch=fixed, resolution=resolution), metadata
