"""Load any model file ``mobilenets export`` wrote, ready for inference, with the card inside it."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

from torch import nn

from ..errors import MissingFileError
from ..weights.card import ModelCard
from .onnx_export import OnnxClassifier, read_card, read_metadata
from .torch_export import load_for_inference, read_torch_card

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pt", ".pt2")


def is_torch_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is taken for a TorchScript / torch.export file rather than an ONNX one.

    By suffix (``.pt``, ``.pt2`` or ``.onnx``); any other suffix by content, since both torch
    formats are zip archives and ONNX files are not.
    """
    suffix = Path(path).suffix.lower()
    if suffix in TORCH_SUFFIXES or suffix in ONNX_SUFFIXES:
        return suffix in TORCH_SUFFIXES
    return zipfile.is_zipfile(path)


def load_deployed(path: str | os.PathLike[str], *, threads: int | None = None) -> tuple[nn.Module, ModelCard]:
    """The exported model file ``path`` as a CPU classifier in eval mode, and its model card.

    ONNX files run in ONNX Runtime (:class:`OnnxClassifier`, ``threads`` intra-op threads; default all
    cores); TorchScript (``.pt``) and torch.export (``.pt2``) files in PyTorch, a PT2E int8 program
    compiled to its int8 kernels (PyTorch's threads: ``torch.set_num_threads``). Either takes float
    (N, 3, R, R) NCHW images prepared as ``card.preprocess`` says, R being the size the file was
    exported at (``card.img_size``); a file exported with a fixed batch size runs any batch in pieces.
    A file without a mobilenets card is a :class:`~mobilenets.errors.UsageError`.
    """
    if not Path(path).is_file():
        raise MissingFileError(f"exported model file {str(path)!r} does not exist or is not a file")
    module: nn.Module
    if is_torch_file(path):
        card = read_torch_card(path)
        module, metadata = load_for_inference(path)
        resolution = metadata.get("resolution")
    else:
        card = read_card(path)
        resolution = read_metadata(path).get("resolution")
        module = OnnxClassifier(path, threads=threads)
    if resolution:  # the size the file was exported at, which its graph bakes in
        card = dataclasses.replace(card, img_size=int(resolution))
    return module.eval(), card
