"""Load any model file ``mobilenets export`` wrote, ready for inference, with the card inside it."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import MissingFileError, UsageError
from ..weights.card import ModelCard
from .captured import check_threads
from .onnx_export import OnnxClassifier, read_card, read_metadata
from .torch_export import card_from_metadata, load_for_inference, read_torch_card, read_torch_metadata

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pt", ".pt2")
EXECUTORCH_SUFFIX = ".pte"
OPENVINO_SUFFIX = ".xml"
PRECISIONS = ("fp32", "bf16")


def is_torch_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is taken for a TorchScript / torch.export file rather than an ONNX one.

    By suffix (``.pt``, ``.pt2`` or ``.onnx``); any other suffix by content, since both torch
    formats are zip archives and ONNX files are not.
    """
    suffix = Path(path).suffix.lower()
    if suffix in TORCH_SUFFIXES or suffix in ONNX_SUFFIXES:
        return suffix in TORCH_SUFFIXES
    return zipfile.is_zipfile(path)


def load_deployed(
    path: str | os.PathLike[str], *, threads: int | None = None, precision: str = "fp32"
) -> tuple[nn.Module, ModelCard]:
    """The exported model file ``path`` as a CPU classifier in eval mode, and its model card.

    By suffix: ``.onnx`` runs in ONNX Runtime (:class:`OnnxClassifier`), ``.pte`` in ExecuTorch's
    runtime (XNNPACK), ``.xml`` in OpenVINO, TorchScript (``.pt``) and torch.export (``.pt2``) files
    in PyTorch, a PT2E int8 program compiled to its int8 kernels; another suffix by content (zip:
    PyTorch, else ONNX). ``threads``: the runtime's threads (default all cores; PyTorch's are
    ``torch.set_num_threads``'s). ``precision`` ``"bf16"`` lets OpenVINO compute in bf16 (the other
    runtimes refuse it). Each takes float (N, 3, R, R) NCHW images prepared as ``card.preprocess`` says,
    R being the size the file was exported at (``card.img_size``); a file exported with a fixed batch
    size runs any batch in pieces. A file without a mobilenets card is a
    :class:`~mobilenets.errors.UsageError`.
    """
    if not Path(path).is_file():
        raise MissingFileError(f"exported model file {str(path)!r} does not exist or is not a file")
    if Path(path).stat().st_size == 0:
        raise UsageError(f"exported model file {str(path)!r} is empty (0 bytes): an interrupted copy?")
    check_threads(threads)  # every runtime's, PyTorch's too (which this call leaves as it is)
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    suffix = Path(path).suffix.lower()
    if precision != "fp32" and suffix != OPENVINO_SUFFIX:
        raise UsageError(
            f"precision {precision}: only OpenVINO files (.xml) run in bf16 here; {str(path)!r} runs in "
            "fp32 (export --format openvino, or evaluate the weights with bf16)"
        )
    module: nn.Module
    if suffix == EXECUTORCH_SUFFIX:
        from .executorch_export import ExecuTorchClassifier

        program = ExecuTorchClassifier(path, threads=threads)
        card = card_from_metadata(program.metadata, path)
        module, resolution = program, program.metadata.get("resolution")
    elif suffix == OPENVINO_SUFFIX:
        from .openvino_export import OpenVINOClassifier

        ir = OpenVINOClassifier(path, threads=threads, precision=precision)
        card = card_from_metadata(ir.metadata, path)
        module, resolution = ir, ir.metadata.get("resolution")
    elif is_torch_file(path):
        card = read_torch_card(path)
        module, metadata = load_for_inference(path)
        resolution = metadata.get("resolution")
    else:
        card = read_card(path)
        resolution = read_metadata(path).get("resolution")
        module = OnnxClassifier(path, threads=threads)
    if resolution:  # the size the file was exported at, which its graph bakes in
        card = card.at_resolution(int(resolution))
    return module.eval(), card


def _metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mobilenets metadata the exported file ``path`` carries, whatever its format."""
    suffix = Path(path).suffix.lower()
    if suffix == EXECUTORCH_SUFFIX:
        from .executorch_export import read_pte_metadata

        return dict(read_pte_metadata(path))
    if suffix == OPENVINO_SUFFIX:
        from .openvino_export import read_openvino_metadata

        return dict(read_openvino_metadata(path))
    if is_torch_file(path):
        return dict(read_torch_metadata(path))
    return dict(read_metadata(path))  # ONNX's


def deployed_int8(path: str | os.PathLike[str]) -> str | None:
    """Whose int8 the exported file ``path`` computes (``"onnxruntime"``, ``"xnnpack"``, ``"nncf"``,
    ``"pt2e"``), or None for a float file: what a report of its scores says beside its precision."""
    metadata = _metadata(path)
    if "int8" not in metadata and "quantization" in metadata:  # ONNX Runtime's QDQ files say only this
        return "onnxruntime"
    kind = metadata.get("int8")
    return str(kind) if kind else None


def deployed_quantization(path: str | os.PathLike[str]) -> str | None:
    """How the int8 file ``path`` was made (its quantizer, calibration images, float modules), as its
    metadata records it; None for a float file or one exported before files recorded it."""
    said = _metadata(path).get("quantization")
    return str(said) if said else None
