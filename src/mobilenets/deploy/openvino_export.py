"""OpenVINO IR files (``.xml`` + ``.bin``): the fastest CPU runtime on x86 servers and PCs.

``openvino.convert_model`` converts the BatchNorm-folded model; the IR keeps float32 weights
(``compress_to_fp16=False``: the file is what was verified). Precision is the runtime's choice, not
the file's: OpenVINO computes in bf16 by default on CPUs with bf16 instructions (AVX512-BF16, AMX)
and in float32 elsewhere; :class:`OpenVINOClassifier` takes ``precision`` ``"fp32"``, ``"bf16"`` or
``"default"`` (OpenVINO's own choice). int8 is NNCF's post-training quantization of the IR
(``nncf.quantize``: per-channel int8 weights, activation ranges from the calibration images, fast
bias correction), computed by OpenVINO's int8 kernels.

The model card travels in the IR's ``rt_info`` under ``mobilenets/metadata`` (the JSON document
``.pt2`` files carry), so ``mobilenets eval`` and ``predict`` run the file without the weights. Beside
it the ``.xml`` records the ``.bin``'s SHA-256: an IR read beside the weights of another export is
refused, not run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import _fsync_dir, save_atomic
from ..digest import file_sha256
from ..errors import MissingFileError, UsageError, external_step
from ..weights.card import ModelCard
from .captured import MAX_BATCH, ExportedClassifier, check_batch, check_not_empty, check_threads
from .fuse import fuse, out_of_place
from .openvino_input import InputQuantization, input_quantization, take_quantized_input
from .openvino_kernels import check_kernels, prefer_kernels, tune_kernels
from .pt2e import check_options, describe_int8, in_modules, no_operation_error
from .torch_export import card_from_metadata, torch_metadata

OPENVINO_REQUIREMENT = "openvino==2026.4.1 nncf==3.4.0"  # the versions this module is tested with
OPENVINO_FORMAT = "mobilenets-openvino/1"
METADATA_PATH = ["mobilenets", "metadata"]
WEIGHTS_DIGEST_PATH = ["mobilenets", "weights_sha256"]  # the .bin's SHA-256, checked when the IR is read
PRECISIONS = ("fp32", "bf16", "default")
NNCF_INT8 = "nncf"  # metadata "int8" of an IR quantized by NNCF
_HINT = "try --format onnx, or keep_float (--keep-float) for the layer the error names"
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def openvino_api() -> Any:
    """The ``openvino`` module; a :class:`~mobilenets.errors.UsageError` saying what to install."""
    try:
        import openvino
    except ImportError as error:
        raise UsageError(
            f"OpenVINO export and inference need the openvino package, which could not be imported "
            f"({error}); install it with `pip install {OPENVINO_REQUIREMENT}` (or 'mobilenets[deploy]')"
        ) from error
    return openvino


def supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 on this machine (AVX512-BF16 or AMX)."""
    core = openvino_api().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_precision(precision: str) -> str:
    """``precision`` if OpenVINO can run it here; a ``UsageError`` naming the choices otherwise."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not supports_bf16():
        raise UsageError(
            "precision bf16: this CPU has no bf16 instructions OpenVINO uses (AVX512-BF16 or AMX); use fp32"
        )
    return precision


def convert(model: nn.Module, resolution: int, *, dynamic_batch: bool = True) -> tuple[Any, Any]:
    """``model`` (BatchNorm folded, eval mode) as an OpenVINO model taking (N, 3, R, R), N free or 1,
    and the ``torch.export`` program it was converted from (its nodes name OpenVINO's operations).

    Converted from a ``torch.export`` program (not OpenVINO's default TorchScript trace, which
    ``torch.jit`` deprecates). The converter leaves every input dimension free (``[?,3,?,?]``) unless
    told, so the input shape is given: ``[?,3,R,R]`` or, for a fixed batch, ``[1,3,R,R]``, which spares
    OpenVINO's shape inference at every inference. Except on GroupNorm networks: with a fixed shape
    OpenVINO's compiler crashes on them in fp32 (a segmentation fault, openvino 2026.4.1), so they keep
    the free shape and run as before.
    """
    ov = openvino_api()
    fused = out_of_place(fuse(model).float().cpu().eval())
    example = torch.zeros(2 if dynamic_batch else 1, 3, resolution, resolution)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic_batch else None
    with torch.inference_mode(False), torch.no_grad(), external_step("openvino.convert_model", _HINT):
        program = _as_openvino_decomposes(
            torch.export.export(fused, (example,), dynamic_shapes=dynamic_shapes)
        )
        if dynamic_batch:
            shape = ov.PartialShape([-1, 3, resolution, resolution])
        elif any(isinstance(module, nn.GroupNorm) for module in fused.modules()):
            shape = None  # the converter's free shape: a fixed one crashes the fp32 compiler (see above)
        else:  # fixed, as the file says: a free shape costs shape inference at every inference
            shape = ov.PartialShape([1, 3, resolution, resolution])
        ov_model = ov.convert_model(program) if shape is None else ov.convert_model(program, input=[shape])
    return ov_model, program


def _as_openvino_decomposes(program: Any) -> Any:
    """``program`` decomposed as OpenVINO's converter decomposes it (which it then leaves unchanged), so
    that its nodes are those OpenVINO names its operations after (``conv2d`` becomes ``convolution``)."""
    from openvino.frontend.pytorch.torchdynamo.export_decompositions import ops_to_not_decompose
    from torch.export.decomp_utils import CustomDecompTable

    table = CustomDecompTable()
    for op in ops_to_not_decompose():
        table.pop(op, None)
    return program.run_decompositions(table)


def keep_float_patterns(program: Any, keep_float: Sequence[str]) -> list[str]:
    """NNCF ignored-scope patterns for the operations traced inside the modules ``keep_float``.

    OpenVINO names each operation converted from a ``torch.export`` node ``NODE/aten.OP/KIND``, without
    the module path, so the modules are found in the program's own record of them.
    """
    nodes = [node for node in program.graph.nodes if node.op == "call_function"]
    for name in keep_float:  # as ONNX's int8 refuses it: a module that would silently stay int8
        if not any(in_modules(node, [name]) for node in nodes):
            raise no_operation_error(name)
    return [rf"{re.escape(node.name)}/.*" for node in nodes if in_modules(node, keep_float)]


def quantize_nncf(
    ov_model: Any, calibration: torch.Tensor, *, ignored_patterns: Sequence[str] = (), batch: int = 1
) -> Any:
    """``ov_model`` quantized to int8 by NNCF, calibrated on every image of ``calibration``.

    Operations whose names match ``ignored_patterns`` (:func:`keep_float_patterns`) stay float. NNCF's
    progress bars and notes are silenced.
    """
    try:
        import nncf
    except ImportError as error:
        raise UsageError(
            f"OpenVINO int8 needs the nncf package ({error}); install it with `pip install nncf==3.4.0`"
        ) from error
    nncf.set_log_level(logging.ERROR)
    items = [piece.numpy() for piece in calibration.float().split(batch)]
    kwargs: dict[str, Any] = {"subset_size": len(items)}
    if ignored_patterns:  # not validated: a pattern may match only operations NNCF would not quantize
        kwargs["ignored_scope"] = nncf.IgnoredScope(patterns=list(ignored_patterns), validate=False)
    # NNCF draws rich progress bars on standard output, which `--json` keeps for its one document.
    step = external_step("NNCF's nncf.quantize of the OpenVINO model", _HINT)
    with step, contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(ov_model, nncf.Dataset(items), **kwargs)


@dataclass(frozen=True)
class IrFile:
    """What :func:`export_openvino` wrote: the ``.xml`` graph and the ``.bin`` weights beside it."""

    path: Path
    weights_path: Path
    bytes: int  # both files together
    int8: bool
    kernels: str = "default"  # "jit": the convolutions prefer OpenVINO's direct kernels (openvino_kernels)
    kernel_ratio: float | None = None  # kernels="tune": the preference's time over the default order's


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    resolution: int,
    card: ModelCard | None = None,
    dynamic_batch: bool = False,
    calibration: torch.Tensor | None = None,
    keep_float: Sequence[str] = (),
    kernels: str = "default",
    uint8_input: bool = False,
) -> IrFile:
    """Write ``model`` as OpenVINO IR: ``path`` (``.xml``) and its weights (``.bin`` beside it).

    With ``calibration`` (float (N, 3, R, R) images prepared as the model expects) the IR is int8,
    quantized by :func:`quantize_nncf`. The IR takes float32 NCHW (N, 3, R, R); N is 1 unless
    ``dynamic_batch``. ``kernels``: ``"default"`` (OpenVINO's own choice), ``"jit"`` (the
    convolutions prefer OpenVINO's direct kernels) or ``"tune"`` (that preference only if it runs
    faster on this machine, timed at export; see :mod:`~mobilenets.deploy.openvino_kernels`).
    ``uint8_input`` (int8 only): the IR takes its input already quantized, uint8 (N, R, R, 3), which
    saves the input's quantize and reorder (:mod:`~mobilenets.deploy.openvino_input`). Both files are
    written to temporary names and renamed, ``.bin`` first.
    """
    ov = openvino_api()
    path = Path(path)
    if path.suffix != ".xml":
        raise UsageError(f"an OpenVINO IR file must end in .xml, got {str(path)!r}")
    check_kernels(kernels)
    if uint8_input and calibration is None:
        raise UsageError("uint8_input (--uint8-input): only for an int8 IR (--int8): its input is quantized")
    check_options(model, resolution, keep_float)
    for target in (path, path.with_suffix(".bin")):  # found before the .bin is renamed into place
        if target.is_dir():
            raise UsageError(f"cannot write {str(target)!r} for the OpenVINO IR: it is a folder")
    ov_model, program = convert(model, resolution, dynamic_batch=dynamic_batch)
    if calibration is not None:
        patterns = keep_float_patterns(program, keep_float)
        ov_model = quantize_nncf(ov_model, calibration, ignored_patterns=patterns)
        if uint8_input:
            ov_model, _ = take_quantized_input(ov_model)
    metadata = torch_metadata(
        card, file_format=OPENVINO_FORMAT, resolution=resolution, dynamic_batch=dynamic_batch, input_name="x"
    )
    if calibration is not None:
        metadata["int8"] = NNCF_INT8
        metadata["quantization"] = describe_int8("NNCF", len(calibration), keep_float) + (
            ", uint8 NHWC input" if uint8_input else ""
        )
    ov_model.set_rt_info(json.dumps(metadata, sort_keys=True), METADATA_PATH)
    with staged_ir(path) as staged:
        with external_step("openvino.save_model", _HINT):
            ov.save_model(ov_model, staged, compress_to_fp16=False)
        # Timed as OpenVINO runs it by default: its own threads and precision.
        timing = (
            tune_kernels(staged, ov.Core(), compile_config(None, "default"), resolution=resolution)
            if kernels == "tune"
            else None
        )
        if kernels == "jit":
            prefer_kernels(staged)
        preferred = kernels == "jit" or (timing is not None and timing.preferred)
        record_weights_digest(staged)
    weights = path.with_suffix(".bin")
    return IrFile(
        path,
        weights,
        path.stat().st_size + weights.stat().st_size,
        calibration is not None,
        kernels="jit" if preferred else "default",
        kernel_ratio=None if timing is None else round(timing.ratio, 4),
    )


@contextlib.contextmanager
def staged_ir(path: Path) -> Iterator[Path]:
    """A scratch ``.xml`` path beside ``path`` to write an IR to; when the block ends without error its
    ``.bin`` and then the ``.xml`` are renamed to ``path``'s, so an interrupted write leaves no IR that
    a later run would take for a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        staged = Path(scratch) / "model.xml"
        yield staged
        for written in (staged.with_suffix(".bin"), staged):  # on disk before the names point at them
            with open(written, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    _fsync_dir(path.parent)


def record_weights_digest(xml_path: Path) -> None:
    """Write the SHA-256 of the IR's ``.bin`` into its ``.xml`` (``rt_info``, :data:`WEIGHTS_DIGEST_PATH`).

    The two files are renamed into place one after the other, and users copy them one at a time: with
    the digest, an ``.xml`` beside a ``.bin`` of another export (same layer sizes, other weights, which
    OpenVINO would run without a word) is refused when read.
    """
    tree = ET.parse(xml_path)
    rt_info = tree.getroot().find("rt_info")
    if rt_info is None:
        rt_info = ET.SubElement(tree.getroot(), "rt_info")
    node = rt_info
    for name in WEIGHTS_DIGEST_PATH[:-1]:
        child = node.find(name)
        node = ET.SubElement(node, name) if child is None else child
    for old in node.findall(WEIGHTS_DIGEST_PATH[-1]):
        node.remove(old)
    ET.SubElement(node, WEIGHTS_DIGEST_PATH[-1], value=file_sha256(xml_path.with_suffix(".bin")))
    save_atomic(xml_path, lambda handle: tree.write(handle, encoding="utf-8", xml_declaration=True))


def _check_weights_digest(ov_model: Any, path: Path, weights: Path) -> None:
    if not ov_model.has_rt_info(WEIGHTS_DIGEST_PATH):  # IRs written before the digest: not checked
        return
    if ov_model.get_rt_info(WEIGHTS_DIGEST_PATH).astype(str) != file_sha256(weights):
        raise UsageError(
            f"OpenVINO IR {str(path)!r}: its weights file {str(weights)!r} is not the one it was exported "
            "with (its SHA-256 differs from the one the .xml records: a .bin of another export, or a copy "
            "or write that did not finish); copy the .xml and its .bin together, or export again"
        )


def _read_model(path: str | os.PathLike[str]) -> Any:
    if not Path(path).is_file():
        raise MissingFileError(f"OpenVINO IR {str(path)!r} does not exist or is not a file")
    weights = Path(path).with_suffix(".bin")
    if not weights.is_file():  # copying the .xml alone is the usual mistake
        raise MissingFileError(
            f"OpenVINO IR {str(path)!r} has no weights file beside it: {str(weights)!r} does not exist "
            "(an IR is the .xml and its .bin; copy both)"
        )
    core = openvino_api().Core()
    try:
        ov_model = core.read_model(str(path))
    except RuntimeError as error:
        if "Incorrect weights in bin file" in str(error):
            raise UsageError(
                f"OpenVINO IR {str(path)!r}: its weights file {str(weights)!r} is shorter than the .xml "
                "needs (cut short, or the .bin of another export); copy the .xml and its .bin together, "
                "or export again"
            ) from None
        # OpenVINO's first line is the C++ source location; the reason comes after it.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reasons = [line for line in lines if not line.startswith("Exception from ")]
        reason = (reasons or lines or [type(error).__name__])[0]
        raise UsageError(f"{str(path)!r} is not an OpenVINO IR this runtime can read ({reason})") from None
    _check_weights_digest(ov_model, Path(path), weights)
    return core, ov_model


def _metadata(ov_model: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    if not ov_model.has_rt_info(METADATA_PATH):
        raise UsageError(
            f"{str(path)!r} carries no mobilenets metadata in its rt_info (not exported by mobilenets?); "
            "run it with openvino directly"
        )
    try:
        document = json.loads(ov_model.get_rt_info(METADATA_PATH).astype(str))
    except ValueError:
        raise UsageError(f"{str(path)!r}: its mobilenets metadata is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != OPENVINO_FORMAT:
        raise UsageError(f"{str(path)!r}: its mobilenets metadata is not a {OPENVINO_FORMAT} document")
    return document


def read_openvino_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata document of an IR written by :func:`export_openvino`."""
    _, ov_model = _read_model(path)
    return _metadata(ov_model, path)


def read_openvino_card(path: str | os.PathLike[str]) -> ModelCard:
    """The model card inside an IR we exported."""
    return card_from_metadata(read_openvino_metadata(path), path)


def compile_config(threads: int | None, precision: str) -> dict[str, Any]:
    """The CPU plugin's settings: latency mode, ``threads`` inference threads, the precision hint."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    check_threads(threads)
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = _OV_PRECISION[precision]
    return config


class _Request(nn.Module):
    """A compiled OpenVINO model's infer request as a module: float32 NCHW tensor in, logits out. An IR
    taking uint8 NHWC (``quantization``) gets the batch quantized as its input expects."""

    def __init__(self, compiled: Any, resolution: int, quantization: InputQuantization | None) -> None:
        super().__init__()
        self.request = compiled.create_infer_request()
        self.resolution = resolution
        self.quantization = quantization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, self.resolution, "this OpenVINO model")
        check_not_empty(x, "this OpenVINO model")
        batch = np.ascontiguousarray(x.detach().float().numpy())
        if self.quantization is not None:
            batch = self.quantization.quantize(batch)
        out = self.request.infer({0: batch})[0]
        return torch.from_numpy(np.array(out, dtype=np.float32))


class OpenVINOClassifier(ExportedClassifier):
    """An IR we exported, compiled by OpenVINO for this CPU, as an inference module.

    ``precision``: ``"fp32"`` (default: what was verified), ``"bf16"`` (needs a CPU with bf16
    instructions) or ``"default"`` (OpenVINO's choice: bf16 where the CPU has it). ``threads``: the
    plugin's inference threads (default: OpenVINO's choice, the physical cores). A fixed-batch IR runs
    bigger batches one image at a time. ``metadata`` is the file's document (card, resolution, int8).
    An IR taking uint8 NHWC (``input_quantization``, see :mod:`~mobilenets.deploy.openvino_input`) is
    called like the others, with float NCHW images: they are quantized here as its input expects.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int | None = None, precision: str = "fp32"
    ) -> None:
        check_precision(precision)
        core, ov_model = _read_model(path)
        metadata = _metadata(ov_model, path)
        with external_step(f"OpenVINO compile of {str(path)!r}", "re-export it with this openvino"):
            compiled = core.compile_model(ov_model, "CPU", compile_config(threads, precision))
        dynamic = bool(metadata.get("dynamic_batch"))
        resolution = int(metadata["resolution"])
        quantization = input_quantization(ov_model)
        super().__init__(
            _Request(compiled, resolution, quantization),
            fixed_batch=None if dynamic else 1,
            resolution=resolution,
        )
        self.input_quantization = quantization
        self.metadata = metadata
        self.precision = precision
        self.path = Path(path)
