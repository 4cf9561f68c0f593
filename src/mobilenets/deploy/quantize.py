"""Static int8 post-training quantization of an exported ONNX model with ONNX Runtime's QDQ quantizer.

Weights are quantized per output channel (a depthwise filter's range varies by orders of magnitude
from channel to channel, which per-tensor scales cannot represent); activations are uint8 with ranges
calibrated on real images: min-max, percentile or entropy (KL) observers. ``exclude`` keeps the
named modules (``stem``, ``blocks.1.0.conv_dw``, ``classifier``) in float.

Weights default to ``int7``: int8 storage holding 7-bit values (ONNX Runtime's ``reduce_range``). On
x86 CPUs without VNNI, ONNX Runtime multiplies uint8 activations by int8 weights with ``vpmaddubsw``,
whose 16-bit sums of two products saturate for full 8-bit weights (255 · 127 · 2 > 32767) but not
for 7-bit ones (255 · 64 · 2 < 32767). Measured (``benchmarks/int8_accuracy.py``, 1,000 ImageNet
photos, percentile calibration): MobileNetV2 lost 1.8 points with ``int8`` weights and none with
``int7``; EfficientNet-Lite0 3.1 and 0.5. ``int7`` keeps the fast u8×s8 kernels; ``uint8`` weights
are also accurate but run on ONNX Runtime's slower u8×u8 path. ``int8`` suits CPUs with VNNI and ARM.

So the default depends on the CPU that exports (:func:`default_weight_dtype`): ``int8`` where it has
VNNI (whose int8 dot products sum in 32 bits, no saturation), ``int7`` elsewhere. On a VNNI CPU
7-bit weights cost accuracy for nothing: MobileNetV2 lost 2.2 points with them on 1,000 full-size
ImageNet photos, 0.5 with 8-bit ones (issue 21). A file meant for another machine should name
``weight_dtype`` for that machine's CPU.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError, external_step
from .onnx_export import read_metadata, save_onnx
from .parallel_histograms import parallel_histograms

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
CALIBRATION_BATCH = 10
WEIGHT_DTYPES = ("int7", "int8", "uint8")


def default_weight_dtype() -> str:
    """``"int8"`` on a CPU with VNNI (x86 int8 dot products without saturation), else ``"int7"``."""
    return "int8" if torch.cpu._is_vnni_supported() else "int7"


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a tensor of preprocessed images, in bounded groups.

    The quantizer runs with ``CalibStridedMinMax`` = 1: it calls ``set_range(i, i + 1)`` for each of
    ``len(reader)`` groups and folds each group's activations into its histograms, so calibration
    memory stays at one group (``CALIBRATION_BATCH`` images) instead of all of them (about 60 MB an
    image for MobileNetV2 at 224: 18 GB for 300 images). A group is fed in pieces of the file's batch
    size: a file exported without a dynamic batch takes only its fixed batch (1), and ONNX Runtime
    refuses any other. The histograms then see the same values in the same order as with one
    ``CALIBRATION_BATCH`` piece, so both kinds of file calibrate alike.
    """

    def __init__(self, images: torch.Tensor, input_name: str, *, fixed_batch: int | None) -> None:
        piece = fixed_batch or CALIBRATION_BATCH
        group = max(piece, CALIBRATION_BATCH // piece * piece)
        self._groups = [
            [
                {input_name: images[j : j + piece].contiguous().numpy()}
                for j in range(start, min(start + group, len(images)), piece)
            ]
            for start in range(0, len(images), group)
        ]
        self._pending: Iterator[dict[str, Any]] = iter(())
        self.set_range(0, len(self._groups))

    def __len__(self) -> int:
        return len(self._groups)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = (batch for group in self._groups[start_index:end_index] for batch in group)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._pending, None)


def graph_input(model_proto: Any) -> tuple[str, int | None]:
    """The name of a model's image input and its fixed batch size (None when the batch is free).

    The input is the graph's first input that is not an initializer (older exporters list weights as
    inputs too); a batch dimension given as a number is fixed, a named or missing one is free.
    """
    initializers = {tensor.name for tensor in model_proto.graph.initializer}
    inputs = [value for value in model_proto.graph.input if value.name not in initializers]
    if not inputs:
        raise UsageError("the ONNX file has no graph input to feed calibration images to")
    dims = inputs[0].type.tensor_type.shape.dim
    fixed = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    return inputs[0].name, fixed if fixed > 0 else None


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def check_quantize_values(*, method: str | None = None, weight_dtype: str | None = None) -> None:
    """A :class:`UsageError` for a calibration method or weight dtype :func:`quantize_onnx` lacks.

    ``None`` is not given (the caller's default applies) and passes.
    """
    if method is not None and method not in CALIBRATION_METHODS:
        raise UsageError(
            f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    if weight_dtype is not None and weight_dtype not in WEIGHT_DTYPES:
        raise UsageError(f"unknown weight dtype {weight_dtype!r}; expected one of {', '.join(WEIGHT_DTYPES)}")


def nodes_in_modules(model_proto: Any, modules: Sequence[str]) -> list[str]:
    """Names of the nodes that belong to any of ``modules`` (a module path or a parent of it).

    Node names are ``<module path>/<op>`` (see ``name_nodes_by_module``). A module that matches no
    node raises ``ValueError`` listing some valid names, so a typo cannot silently quantize a layer.
    """
    names = [node.name for node in model_proto.graph.node]
    selected: list[str] = []
    for module in modules:
        matched = [name for name in names if name.split("/")[0] == module or name.startswith(module + ".")]
        if not matched:
            paths = sorted({name.split("/")[0].rsplit(".", 1)[0] for name in names})
            raise UsageError(
                f"no layer of the model is in module {module!r}; modules include {', '.join(paths[:8])}"
            )
        selected += matched
    return selected


def name_inlined_nodes(original: Any, prepared: Any) -> None:
    """Give the nodes of ``prepared`` that ONNX Runtime's pre-processing made without a name the module
    path of the ``original`` node they came from, so that :func:`nodes_in_modules` finds them.

    The pre-processing inlines ONNX functions: HardSwish (MobileNet v3) becomes an unnamed HardSigmoid
    and Mul, which ``--keep-float stem`` would otherwise leave int8 (and ``stem.act`` would match
    nothing). The node that writes the function's output takes its name; the ones inside it take the
    name of the node their output feeds.
    """
    producer = {output: node.name for node in original.graph.node for output in node.output}
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for node in prepared.graph.node:
        for name in node.input:
            consumers[name].append(node)
    taken = {node.name for node in prepared.graph.node}
    unnamed = [node for node in reversed(prepared.graph.node) if not node.name]  # consumers first
    for node in unnamed:
        source = next((producer[out] for out in node.output if out in producer), None)
        if source is None:
            source = next((user.name for out in node.output for user in consumers[out] if user.name), None)
        if source is None:
            continue
        module = source.split("/")[0]
        name, index = f"{module}/{node.op_type}", 1
        while name in taken:
            name, index = f"{module}/{node.op_type}_{index}", index + 1
        node.name = name
        taken.add(name)


def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: torch.Tensor,
    *,
    method: str = "percentile",
    percentile: float = 99.999,
    exclude: Sequence[str] = (),
    weight_dtype: str | None = None,
) -> Path:
    """Quantize ``fp32_path`` to 8 bits (QDQ) at ``out_path``, calibrated on ``calibration`` images.

    ``calibration`` is a float (N, 3, H, W) batch prepared as the model expects (its preset); a file
    with a fixed batch size (exported without a dynamic batch) is calibrated in batches of that size.
    ``exclude`` lists module paths whose nodes stay float; ``weight_dtype`` is one of
    :data:`WEIGHT_DTYPES`, default :func:`default_weight_dtype` (see the module notes). The fp32
    file's metadata is carried over, with the settings added.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_quantize_values(method=method, weight_dtype=weight_dtype)
    weight_dtype = weight_dtype or default_weight_dtype()
    if calibration.ndim != 4 or calibration.shape[1] != 3 or len(calibration) == 0:
        raise UsageError(
            f"calibration images must be a non-empty (N, 3, H, W) batch, got shape {tuple(calibration.shape)}"
        )
    metadata = read_metadata(fp32_path)
    input_name, fixed_batch = graph_input(onnx.load(str(fp32_path), load_external_data=False))
    if fixed_batch is not None and len(calibration) % fixed_batch:
        raise UsageError(
            f"{len(calibration)} calibration images do not fill batches of {fixed_batch}, the fixed batch "
            f"of {str(fp32_path)!r}; give a multiple of {fixed_batch} images"
        )
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True, "CalibStridedMinMax": 1}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        prepared_proto = onnx.load(str(prepared))
        name_inlined_nodes(onnx.load(str(fp32_path), load_external_data=False), prepared_proto)
        onnx.save(prepared_proto, str(prepared))
        # ORT prints calibration progress on stdout and warns through the root logger; keep both quiet
        # so stdout stays the caller's (e.g. one JSON object). Bias overflow warnings are expected:
        # ORT widens those channels' weight scales to fit the bias, as intended.
        step = external_step(
            "ONNX Runtime's int8 quantizer", "try --calib-method minmax, or --keep-float stem,classifier"
        )
        with step, contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger(), parallel_histograms():
            quantize_static(
                str(prepared),
                str(quantized),
                _Reader(calibration.float(), input_name, fixed_batch=fixed_batch),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=weight_dtype == "int7",
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QUInt8 if weight_dtype == "uint8" else QuantType.QInt8,
                calibrate_method=calibrate,
                nodes_to_exclude=nodes_in_modules(prepared_proto, exclude),
                extra_options=extra,
            )
        model_proto = onnx.load(str(quantized))
    settings = (
        f"QDQ, per-channel {weight_dtype} weights, uint8 activations, "
        f"{method} calibration on {len(calibration)} images"
    )
    if exclude:
        settings += f", float modules: {', '.join(exclude)}"
    return save_onnx(model_proto, out_path, {**metadata, "quantization": settings})
