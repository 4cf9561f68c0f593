"""ExecuTorch programs (``.pte``): what Android and iOS apps embed, through the XNNPACK CPU backend.

``torch.export`` captures the BatchNorm-folded model; ``to_edge_transform_and_lower`` hands every
operator XNNPACK supports to its delegate (convolutions, ReLU6, pooling, the classifier) and
``to_executorch`` plans the memory of what is left and serialises the program. int8 goes through the
same torchao PT2E flow as :mod:`~mobilenets.deploy.pt2e`, with XNNPACK's quantizer instead of the x86
one: symmetric per-channel int8 weights, int8 activations, BatchNorm folded by the flow.

The model card travels inside the file as a second method, ``mobilenets_metadata``, returning the
UTF-8 bytes of the same JSON document ``.pt2`` files carry (a ``.pte`` has no other place for text),
so ``mobilenets eval`` and ``predict`` can run a ``.pte`` without the weights it came from.

``delegate=False`` lowers to ExecuTorch's portable kernels instead (weight-only computations folded
into constants): far slower, but every intermediate tensor then lives in the memory planner's arena,
whose size the program states (:func:`planned_arena_bytes`); XNNPACK keeps its own workspace outside
the plan. The chunked models of :mod:`~mobilenets.deploy.memory_efficient` keep their saving there:
MobileNetV2 at 224 plans 9.6 MB plain and 3.0 MB in 16 chunks (``benchmarks/deployed_memory.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import save_atomic
from ..errors import ExternalError, MissingFileError, UsageError, external_step
from ..weights.card import ModelCard
from .captured import ExportedClassifier, check_batch, check_not_empty, check_threads
from .fuse import fuse
from .pt2e import Int8Model, calibrate_pt2e, check_options, describe_int8, in_modules
from .torch_export import card_from_metadata, torch_metadata

EXECUTORCH_REQUIREMENT = "executorch==1.5.1"  # the version this module is tested with
PTE_FORMAT = "mobilenets-executorch/1"
METADATA_METHOD = "mobilenets_metadata"
# A dynamic-batch program plans its arena (and its input's capacity) for this many images. ExecuTorch
# 1.5 clamps larger upper bounds to 15 without saying so; bigger batches run in pieces of this size.
MAX_PTE_BATCH = 8
XNNPACK_INT8 = "xnnpack"  # metadata "int8" of a program quantized with XNNPACK's quantizer
_HINT = "try --format onnx, or keep_float (--keep-float) for the layer the error names"


@dataclass(frozen=True)
class ExecuTorchAPI:
    """The ExecuTorch entry points export and inference need, imported on first use."""

    to_edge_transform_and_lower: Any
    to_edge: Any
    partitioner: Any
    quantizer: Any
    quantization_config: Any
    runtime: Any
    reset_threadpool: Any
    thread_count: Any


def executorch_api() -> ExecuTorchAPI:
    """ExecuTorch's API; a :class:`~mobilenets.errors.UsageError` saying what to install if missing."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from executorch.exir import to_edge, to_edge_transform_and_lower
        from executorch.extension.pybindings.portable_lib import (
            _threadpool_get_thread_count,
            _unsafe_reset_threadpool,
        )
        from executorch.runtime import Runtime
    except ImportError as error:
        raise UsageError(
            f"ExecuTorch export and inference need the executorch package, which could not be imported "
            f"({error}); install it with `pip install {EXECUTORCH_REQUIREMENT}` (or 'mobilenets[deploy]')"
        ) from error
    return ExecuTorchAPI(
        to_edge_transform_and_lower,
        to_edge,
        XnnpackPartitioner,
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
        Runtime,
        _unsafe_reset_threadpool,
        _threadpool_get_thread_count,
    )


def quantize_xnnpack(
    model: nn.Module,
    calibration_batches: Iterable[torch.Tensor],
    *,
    resolution: int,
    keep_float: Sequence[str] = (),
) -> Int8Model:
    """``model`` quantized by XNNPACK's quantizer (torchao PT2E), calibrated on ``calibration_batches``.

    Batches are float (N, 3, ``resolution``, ``resolution``) tensors prepared as the model expects;
    ``keep_float`` names modules left in float. ``model`` is not changed. The result simulates
    XNNPACK's int8 arithmetic in PyTorch; :func:`export_executorch` lowers it to XNNPACK's int8 kernels.
    """
    check_options(model, resolution, keep_float)
    quantizer = xnnpack_quantizer(executorch_api(), keep_float)
    int8 = calibrate_pt2e(model, calibration_batches, resolution=resolution, quantizer=quantizer, hint=_HINT)
    int8.quantization = describe_int8(
        "XNNPACK's quantizer (PT2E), symmetric per-channel", int8.calibration_images, keep_float
    )
    return int8


def annotate_conv_relu6(graph_module: torch.fx.GraphModule, config: Any, keep: Any = None) -> None:
    """Annotate each convolution followed by ReLU6 (``hardtanh``) as one quantized unit.

    XNNPACK's quantizer fuses only ReLU into a convolution; before a ReLU6 it quantizes the
    convolution's raw output, whose range is far wider than the clamped 0..6, and the clamp then
    shares those coarse steps. EfficientNet-Lite0 lost 2.9 points of top-1 that way (1,000 ImageNet
    photos). Annotated like conv + ReLU, only the clamped output is quantized, on its own range, and
    XNNPACK's lowering fuses the clamp into the int8 convolution. ``keep(node)`` False skips a node.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import (
        get_bias_qspec,
        get_input_act_qspec,
        get_output_act_qspec,
        get_weight_qspec,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    clamps = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)
    convs = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)
    for clamp in graph_module.graph.nodes:
        conv = clamp.args[0] if clamp.op == "call_function" and clamp.target in clamps else None
        if not isinstance(conv, torch.fx.Node) or conv.target not in convs or len(conv.users) != 1:
            continue
        weight, bias = conv.args[1], conv.args[2] if len(conv.args) > 2 else None
        nodes = [clamp, conv, weight, *([bias] if isinstance(bias, torch.fx.Node) else [])]
        if any(Q_ANNOTATION_KEY in node.meta for node in nodes) or (keep and not all(map(keep, nodes))):
            continue
        inputs = {conv.args[0]: get_input_act_qspec(config), weight: get_weight_qspec(config)}
        if isinstance(bias, torch.fx.Node):
            inputs[bias] = get_bias_qspec(config)
        conv.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(input_qspec_map=inputs, _annotated=True)
        clamp.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(
            output_qspec=get_output_act_qspec(config), _annotated=True
        )
        for node in nodes[2:]:
            node.meta[Q_ANNOTATION_KEY] = QuantizationAnnotation(_annotated=True)


def xnnpack_quantizer(et: ExecuTorchAPI, keep_float: Sequence[str] = ()) -> Any:
    """XNNPACK's quantizer (symmetric per-channel int8 weights, int8 activations) that also fuses
    conv + ReLU6 (:func:`annotate_conv_relu6`) and leaves the ``keep_float`` modules in float."""
    config = et.quantization_config(is_per_channel=True)

    def keep(node: torch.fx.Node) -> bool:
        return not in_modules(node, keep_float)

    class Quantizer(et.quantizer):  # type: ignore[name-defined]
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            annotate_conv_relu6(model, config, keep)
            annotated: torch.fx.GraphModule = super().annotate(model)
            return annotated

    quantizer = Quantizer().set_global(config)
    return quantizer.set_filter_function(keep) if keep_float else quantizer


@dataclass(frozen=True)
class PteFile:
    """What :func:`export_executorch` wrote: the file, its size and its memory plan."""

    path: Path
    bytes: int
    arena_bytes: int  # the planner's activation arena (non-constant buffers) of ``forward``
    delegated: bool
    int8: bool


def _metadata_tensor(metadata: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(list(json.dumps(metadata, sort_keys=True).encode("utf-8")), dtype=torch.uint8)


def export_executorch(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    resolution: int,
    card: ModelCard | None = None,
    dynamic_batch: bool = False,
    delegate: bool = True,
) -> PteFile:
    """Write ``model`` as an ExecuTorch program (``.pte``) lowered to XNNPACK, atomically.

    ``model`` is a float model (exported BatchNorm-folded, in eval mode) or a :func:`quantize_xnnpack`
    result (exported to XNNPACK's int8 kernels). The program takes one float32 NCHW
    (N, 3, resolution, resolution) tensor, N = 1, or 1 to 8 with ``dynamic_batch`` (the arena is then
    planned for 8). ``delegate=False`` lowers to the portable kernels (see the module notes).
    """
    if Path(path).suffix != ".pte":  # loaders tell a program by its suffix
        raise UsageError(f"an ExecuTorch program file must end in .pte, got {str(path)!r}")
    et = executorch_api()
    int8 = isinstance(model, Int8Model)
    if int8 and not delegate:
        raise UsageError("an int8 program runs on XNNPACK's kernels; lower it with delegate=True")
    module = model.cpu() if int8 else fuse(model).float().cpu().eval()
    example = torch.zeros(2 if dynamic_batch else 1, 3, resolution, resolution)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_PTE_BATCH)},) if dynamic_batch else None
    metadata = torch_metadata(
        card, file_format=PTE_FORMAT, resolution=resolution, dynamic_batch=dynamic_batch, input_name="input"
    )
    metadata["delegate"] = "xnnpack" if delegate else "portable"
    if int8:
        metadata["int8"] = XNNPACK_INT8
        metadata["quantization"] = model.quantization
    constants = {METADATA_METHOD: _metadata_tensor(metadata)}
    with torch.inference_mode(False), torch.no_grad():
        with external_step("torch.export for ExecuTorch", _HINT):
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
            if delegate and not int8:  # weight slices (chunked blocks) become constants XNNPACK takes
                program = _constant_prop(program)
        with external_step("ExecuTorch lowering" + (" to XNNPACK" if delegate else ""), _HINT):
            if delegate:
                edge = et.to_edge_transform_and_lower(
                    program, partitioner=[et.partitioner()], constant_methods=constants
                )
            else:
                edge = et.to_edge(program, constant_methods=constants).transform(_fold_constants())
            manager = edge.to_executorch()
    payload = manager.buffer
    save_atomic(path, lambda handle: handle.write(payload))
    plan = _forward_plan(manager.executorch_program)
    return PteFile(Path(path), len(payload), sum(plan.non_const_buffer_sizes), delegate, int8)


def _constant_prop(program: Any) -> Any:
    """``program`` with operators on weights alone (slices, transposes) computed once, into constants.

    The chunked blocks of :mod:`~mobilenets.deploy.memory_efficient` slice their weights per chunk;
    unfolded, XNNPACK sees convolutions whose weights are computed at run time, declines them, and the
    portable kernels run them, hundreds of times slower.
    """
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    return constant_prop_pass(program)


def _fold_constants() -> Any:
    """A pass manager folding what is computed from weights alone into constants (portable lowering).

    The edge dialect turns ``linear`` into a transpose of its weight and a matrix product; unfolded,
    the portable program computes that transpose on every call into its arena (5.1 MB for
    MobileNetV2's classifier, the arena's largest tensor once blocks are chunked).
    """
    from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult
    from executorch.exir.pass_manager import ExportedProgramPassManager

    class FoldConstants(ExportedProgramPassBase):
        def call(self, exported_program: Any) -> Any:
            return ExportedProgramPassResult(_constant_prop(exported_program), True)

    return ExportedProgramPassManager([FoldConstants()])


def _forward_plan(program: Any) -> Any:
    for plan in program.execution_plan:
        if plan.name == "forward":
            return plan
    raise ExternalError("the ExecuTorch program has no forward method")  # pragma: no cover - lowering bug


def planned_arena_bytes(path: str | os.PathLike[str]) -> int:
    """The memory planner's activation arena of a ``.pte`` file's ``forward``, in bytes.

    For a portable (``delegate=False``) program this is every intermediate tensor's memory; an
    XNNPACK-delegated one plans only the tensors between delegate calls (the delegate has its own).
    """
    from executorch.exir._serialize._program import deserialize_pte_binary

    _load_program(path)  # a clear error for a missing file, or one that is not a program of ours
    pte = deserialize_pte_binary(Path(path).read_bytes())
    return int(sum(_forward_plan(pte.program).non_const_buffer_sizes))


def _load_program(path: str | os.PathLike[str]) -> Any:
    if not Path(path).is_file():
        raise MissingFileError(f"ExecuTorch program {str(path)!r} does not exist or is not a file")
    not_a_program = UsageError(f"{str(path)!r} is not an ExecuTorch program this runtime can load")
    with open(path, "rb") as handle:
        head = handle.read(8)
    # Bytes 4-7 are the flatbuffer's identifier, "ET" and a version (ET12). The runtime logs a wrong
    # identifier through Python as text, and bytes that are not UTF-8 abort the process there.
    if len(head) < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():
        raise not_a_program
    et = executorch_api()
    try:
        program = et.runtime.get().load_program(Path(path))
    except RuntimeError:
        raise not_a_program from None
    if METADATA_METHOD not in program.method_names:
        raise UsageError(
            f"{str(path)!r} carries no {METADATA_METHOD} method (not exported by mobilenets?); run it with "
            "executorch.runtime directly"
        )
    return program


def _metadata(program: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    (raw,) = program.load_method(METADATA_METHOD).execute(())
    try:
        document = json.loads(bytes(raw.tolist()).decode("utf-8"))
    except ValueError:
        raise UsageError(f"{str(path)!r}: its {METADATA_METHOD} is not a JSON document") from None
    if not isinstance(document, dict) or document.get("format") != PTE_FORMAT:
        raise UsageError(f"{str(path)!r}: its {METADATA_METHOD} is not a {PTE_FORMAT} document")
    return document


def read_pte_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata document of a ``.pte`` file written by :func:`export_executorch`."""
    return _metadata(_load_program(path), path)


def read_pte_card(path: str | os.PathLike[str]) -> ModelCard:
    """The model card inside a ``.pte`` file we exported."""
    return card_from_metadata(read_pte_metadata(path), path)


class _Method(nn.Module):
    """An ExecuTorch method as a module: float32 NCHW in, logits out (copied off the runtime's arena)."""

    def __init__(self, method: Any, resolution: int) -> None:
        super().__init__()
        self.method = method
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, self.resolution, "this ExecuTorch program")
        check_not_empty(x, "this ExecuTorch program")
        (out,) = self.method.execute((x.detach().float().contiguous(),))
        return out.clone()  # the output tensor is the program's own memory, reused on the next call


@cache
def _default_threads() -> int:
    """The XNNPACK pool's size as the runtime set it (one per core), read before any reset."""
    return int(executorch_api().thread_count())


def _set_threads(threads: int | None) -> None:
    """Size the process-wide XNNPACK pool: ``threads``, or with None the runtime's own size again (an
    earlier file's ``threads`` would otherwise carry over to every file loaded after it)."""
    check_threads(threads)
    wanted = _default_threads() if threads is None else threads
    et = executorch_api()
    if et.thread_count() != wanted:
        et.reset_threadpool(wanted)


class ExecuTorchClassifier(ExportedClassifier):
    """A ``.pte`` file we exported, run by ExecuTorch's runtime on the CPU, as an inference module.

    ``threads`` sets the XNNPACK thread pool, which is process-wide (default: as the runtime set it,
    one per core, restored if an earlier file set another size). A fixed-batch program runs bigger
    batches one image at a time; a dynamic-batch one in pieces of up to 8. ``metadata`` is the file's
    document (card, resolution, ``int8``).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        program = _load_program(path)
        metadata = _metadata(program, path)
        _set_threads(threads)
        method = program.load_method("forward")
        dynamic = bool(metadata.get("dynamic_batch"))
        resolution = int(metadata["resolution"])
        super().__init__(
            _Method(method, resolution), fixed_batch=None if dynamic else 1, resolution=resolution
        )
        self.program = program  # the method needs the program alive
        self.metadata = metadata
        self.path = Path(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch is None and len(x) > MAX_PTE_BATCH:
            run = super().forward  # (a comprehension has no zero-argument super)
            return torch.cat([run(piece) for piece in x.split(MAX_PTE_BATCH)])
        return super().forward(x)
