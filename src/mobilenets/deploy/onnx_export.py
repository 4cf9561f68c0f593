"""Export to ONNX with what a runtime needs in the file, and check it in ONNX Runtime.

The graph is exported from the BatchNorm-folded model with ``torch.onnx.export(dynamo=True)``: TF
``SAME`` padding becomes the convs' own pads at the export resolution. The file's metadata carries the
model card (model, build options, classes, preprocessing) plus ``input_name``/``input_layout``, so
``mobilenets eval --onnx`` and other runtimes can feed it without the original weights file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import save_atomic
from ..errors import UsageError, external_step
from ..weights.card import ModelCard
from ..weights.files import utf8_name
from .captured import check_batch, check_not_empty, check_threads
from .fuse import fuse, out_of_place

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
ONNX_FORMAT = "mobilenets-onnx/1"
DEFAULT_OPSET = 20


def deploy_package(name: str, needed_for: str) -> Any:
    """The module ``name`` of the deploy extra, or a ``UsageError`` saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:  # the deploy extra is part of `make install`, not of a plain `pip install`
        raise UsageError(
            f"{needed_for} needs the {name} package of the deploy extra: pip install 'mobilenets[deploy]'"
        ) from None


def _onnx() -> Any:
    return deploy_package("onnx", "reading and writing ONNX files")


def card_metadata(card: ModelCard | None, **extra: str) -> dict[str, str]:
    """The ``metadata_props`` an exported file carries."""
    props = {"format": ONNX_FORMAT, "input_name": INPUT_NAME, "input_layout": "NCHW", **extra}
    if card is not None:
        props["card"] = json.dumps(card.to_metadata(), sort_keys=True)
        props["classes"] = json.dumps(list(card.classes))
        props["preprocess"] = json.dumps(
            {
                "resize_size": card.preprocess.resize_size,
                "crop_size": card.preprocess.crop_size,
                # Our own runs validate images of their data's size unresized: a 32-px CIFAR image
                # resized to 37 and cropped back to 32 would be zoomed, as it never was in training.
                "exact_size_as_is": card.preprocess.exact_size_as_is,
                "interpolation": card.preprocess.interpolation,
                "mean": list(card.mean),
                "std": list(card.std),
                "pixel_range": "[0, 1] after dividing 0..255 pixels by 255",
            }
        )
    return props


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (without loading its weights into memory twice)."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError:
        raise
    except Exception as error:  # protobuf's DecodeError and friends: not an ONNX file
        raise UsageError(f"{str(path)!r} is not a readable ONNX file ({type(error).__name__})") from None
    return {prop.key: prop.value for prop in model.metadata_props}


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The model card stored in an ONNX file we exported; ``ValueError`` if it has none."""
    metadata = read_metadata(path)
    if "card" not in metadata:
        raise UsageError(
            f"{str(path)!r} has no mobilenets model card in its metadata (exported elsewhere?); "
            "evaluate it through the weights it came from"
        )
    return ModelCard.from_metadata(json.loads(metadata["card"]), str(path))


def save_onnx(model_proto: Any, path: str | os.PathLike[str], metadata: dict[str, str]) -> Path:
    """Set ``metadata`` on ``model_proto``, check it with ``onnx.checker`` and write it atomically."""
    onnx = _onnx()
    del model_proto.metadata_props[:]
    for key, value in metadata.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    with external_step(
        "onnx.checker on the exported graph", "re-export with another --opset or use --format torchscript"
    ):
        onnx.checker.check_model(model_proto, full_check=True)
    payload = model_proto.SerializeToString()
    save_atomic(path, lambda handle: handle.write(payload))
    return Path(path)


_DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def name_nodes_by_module(model_proto: Any) -> None:
    """Rename every node after the module that produced it (``blocks.1.0.conv_dw.conv/Conv``).

    The exporter records each node's module path in its metadata; names built from it let users pick
    layers to keep in float (``--keep-float blocks.1.0.conv_dw``) and read per-layer reports. Stack
    traces and FX dumps (which hold local file paths) are dropped from the node metadata.
    """
    taken: set[str] = set()
    for node in model_proto.graph.node:
        props = {prop.key: prop.value for prop in node.metadata_props}
        scopes = [s for s in _literal_list(props.get("pkg.torch.onnx.name_scopes", "[]")) if s]
        module = scopes[-2] if len(scopes) >= 2 else "graph"
        name, suffix = f"{module}/{node.op_type}", 2
        while name in taken:
            name, suffix = f"{module}/{node.op_type}_{suffix}", suffix + 1
        taken.add(name)
        node.name = name
        kept = [prop for prop in node.metadata_props if prop.key not in _DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def _literal_list(text: str) -> list[str]:
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    resolution: int,
    card: ModelCard | None = None,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model`` (BatchNorm folded, eval mode) to ``path`` as a checked ONNX file.

    The input is ``input`` (N, 3, resolution, resolution) float32 NCHW; the output ``logits``.
    ``dynamic_batch`` leaves N free (1..4096), otherwise N is 1.
    """
    onnx = _onnx()
    deploy_package("onnxscript", "ONNX export (torch.onnx.export)")
    fused = out_of_place(fuse(model).float())
    example = torch.zeros(1, 3, resolution, resolution)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with (
        tempfile.TemporaryDirectory() as tmp,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),  # the exporter prints progress even when not verbose
    ):
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not the user's business
        target = Path(tmp) / "model.onnx"
        step = external_step(
            "ONNX export (torch.onnx.export, dynamo)", "try --format torchscript or --format exported-program"
        )
        with step:
            torch.onnx.export(
                fused,
                (example,),
                target,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
        model_proto = onnx.load(str(target))
    name_nodes_by_module(model_proto)
    return save_onnx(model_proto, path, card_metadata(card, resolution=str(resolution)))


def ort_session(path: str | os.PathLike[str], threads: int | None = None, *, spinning: bool = False) -> Any:
    """An ONNX Runtime CPU session with all graph optimizations and ``threads`` intra-op threads.

    Worker threads do not spin between operators unless ``spinning``: spinning buys a little latency
    on an idle machine but, next to PyTorch's threads or other processes, it starves everyone (an
    evaluation slowed more than tenfold on 2 busy cores). ``mobilenets bench`` times ORT's default.
    """
    check_threads(threads)
    ort = deploy_package("onnxruntime", "running an ONNX file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    model: str | bytes = os.fspath(path) if utf8_name(path) else Path(path).read_bytes()  # see utf8_name
    with external_step(f"ONNX Runtime loading {str(path)!r}", "check that it is a complete ONNX file"):
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxClassifier(nn.Module):
    """An ONNX file run by ONNX Runtime, behind the ``nn.Module`` call of a PyTorch classifier.

    It has no parameters; inputs are copied to contiguous NCHW float32 on the CPU.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = ort_session(path, threads)
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        # A file exported without --dynamic-batch takes a fixed batch (1): run bigger batches in pieces.
        self.fixed_batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
        self.resolution = spec.shape[-1] if len(spec.shape) == 4 and isinstance(spec.shape[-1], int) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, self.resolution, f"{self.path}")
        check_not_empty(x, f"{self.path}")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        step = self.fixed_batch or len(array)
        if len(array) % step:
            raise UsageError(f"{self.path} takes batches of {step}; got {len(array)} images")
        hint = "the file's input shape is its card's; `mobilenets eval --onnx` prepares images to fit it"
        with external_step(f"ONNX Runtime running {str(self.path)!r}", hint):
            outputs = [
                self.session.run(None, {self.input_name: array[i : i + step]})[0]
                for i in range(0, len(array), step)
            ]
        return torch.from_numpy(outputs[0] if len(outputs) == 1 else np.concatenate(outputs))


def max_abs_difference(reference: nn.Module, candidate: nn.Module, batches: Iterable[torch.Tensor]) -> float:
    """The largest ``|reference(x) - candidate(x)|`` over all batches (both in eval mode)."""
    worst = 0.0
    reference.eval()
    with torch.inference_mode():
        for images in batches:
            diff = (reference(images).float() - candidate(images).float()).abs().max().item()
            worst = max(worst, diff)
    return worst
