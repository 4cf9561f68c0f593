"""Static int8 post-training quantization in PyTorch itself: the PT2E flow of the ``torchao`` package.

``torch.export`` captures the model, torchao's ``X86InductorQuantizer`` annotates it (per-channel
int8 weights, uint8 activations from histogram observers; BatchNorm is folded into the convolutions
by the flow itself), calibration batches set the activation ranges and ``convert_pt2e`` leaves a
graph of quantize / dequantize ops around float convolutions. Run as it is, that graph simulates
int8 and is slower than fp32; :func:`compile_int8` lets Inductor (with ``freezing``) replace the
patterns by oneDNN int8 kernels, the fast form.

Activations default to 7-bit ranges (``reduce_range``). On x86 CPUs without VNNI the int8 kernels
sum pairs of u8×s8 products in 16 bits, which saturate for full 8-bit activations (255 · 127 · 2
> 32767) but not for 7-bit ones. Measured (``benchmarks/int8_pt2e.py``, 1,000 ImageNet photos, an
AVX2 CPU without VNNI), compiled, MobileNetV2 lost 5.6 points with 8-bit activations and 0.3 with
7-bit ones; EfficientNet-Lite0 0.9 and none. The simulated (uncompiled) graph does not show the
saturation (0.3 and none). Keeping the stem and classifier in float (``keep_float``) also avoids it
(MobileNetV2: 0.2 with 8-bit activations).

torchao's x86 quantizer leaves a convolution in float when an explicit pad feeds it: with TF ``SAME``
padding (``padding="tf_same"``, e.g. EfficientNet-Lite0's EfficientNet-PyTorch weights) that is every
stride-2 conv.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UsageError, WrongTypeError, external_step
from ..layers.activations import ReLU6, keep_relu6_outputs
from ..layers.depthwise import DepthwiseConv2d, fast_depthwise_gradients
from ..models import check_resolution
from .captured import MAX_BATCH, ExportedClassifier

TORCHAO_REQUIREMENT = "torchao==0.18.0"  # the version this module is tested with
_INT8_HINT = (
    "try keep_float (--keep-float) for the layer named in the error, or ONNX int8 (--format onnx --int8)"
)


@dataclass(frozen=True)
class TorchaoAPI:
    """The few torchao entry points the flow needs, imported on first use."""

    prepare_pt2e: Any
    prepare_qat_pt2e: Any
    convert_pt2e: Any
    move_to_eval: Any
    quantizer: Any
    default_config: Any


def torchao_api() -> TorchaoAPI:
    """torchao's PT2E API; ``ValueError`` saying what to install when torchao is missing or too old."""
    # torchao registers an Enum with torch's pytree at import, which torch 2.14 logs as deprecated: noise
    # on every command that quantizes or loads an int8 program, and nothing a user can act on.
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    except ImportError as error:
        raise UsageError(
            f"PT2E int8 quantization needs the torchao package, which could not be imported ({error}); "
            f"install it with `pip install {TORCHAO_REQUIREMENT}`"
        ) from error
    finally:
        pytree_log.setLevel(level)
    return TorchaoAPI(
        prepare_pt2e,
        prepare_qat_pt2e,
        convert_pt2e,
        move_exported_model_to_eval,
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )


def torchao_ops() -> None:
    """Import torchao's PT2E module, which registers the quantize / dequantize ops int8 graphs call."""
    torchao_api()


def check_batch(batch: object, index: int, resolution: int, what: str = "calibration") -> torch.Tensor:
    """``batch`` as float32 if it is a float (N, 3, resolution, resolution) tensor, else a clear error."""
    if not isinstance(batch, torch.Tensor):
        raise WrongTypeError(f"{what} batch {index} is a {type(batch).__name__}, not a tensor")
    expected = (3, resolution, resolution)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or not 0 < len(batch) <= MAX_BATCH:
        raise UsageError(
            f"{what} batch {index} must be a (N, 3, {resolution}, {resolution}) batch with N from 1 "
            f"to {MAX_BATCH}, got shape {tuple(batch.shape)}"
        )
    if not batch.is_floating_point():
        raise UsageError(f"{what} batch {index} must hold float images, got {batch.dtype}")
    if not bool(batch.isfinite().all()):
        raise UsageError(f"{what} batch {index} holds NaN or infinite values")
    return batch.float()


X86_QUANTIZER = "torchao's x86 quantizer (PT2E)"


def describe_int8(quantizer: str, images: int, keep_float: Sequence[str], *, how: str = "calibrated") -> str:
    """What an int8 file records of its making (metadata ``quantization``, as ONNX's files carry):
    e.g. ``"NNCF, calibrated on 300 images, float modules: stem"``."""
    said = f"{quantizer}, {how} on {images} images"
    return f"{said}, float modules: {', '.join(keep_float)}" if keep_float else said


def check_options(model: nn.Module, resolution: int, keep_float: Sequence[str]) -> None:
    """A clear error for a resolution out of range or a ``keep_float`` module ``model`` lacks."""
    check_resolution(resolution)
    if isinstance(keep_float, str):
        raise WrongTypeError(
            f"keep_float must be a sequence of module names, e.g. [{keep_float!r}], not a string"
        )
    modules = {name: module for name, module in model.named_modules() if name}
    for name in keep_float:
        if name not in modules:
            children = ", ".join(name for name, _ in model.named_children())
            raise UsageError(
                f"keep_float (--keep-float): the model has no module {name!r}; its top-level modules are "
                f"{children}"
            )
        if _inert(modules[name]):  # kept float, it would leave the quantized conv before it as it was
            raise no_operation_error(name)


def no_operation_error(name: str) -> UsageError:
    """The refusal of a ``keep_float`` module with nothing to keep float: it would silently stay int8."""
    return UsageError(
        f"keep_float (--keep-float): module {name!r} has no operation of its own in the exported graph (a "
        "BatchNorm is folded into the conv before it, a dropout does nothing at inference); name the conv "
        "or the block to keep float"
    )


_INERT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Identity)


def _inert(module: nn.Module) -> bool:
    """Whether ``module`` is made only of layers that vanish from an inference graph whose BatchNorm is
    folded: BatchNorm, dropout, identity."""
    return all(isinstance(leaf, _INERT) for leaf in module.modules() if not list(leaf.children()))


def in_modules(node: torch.fx.Node, names: Sequence[str]) -> bool:
    """Whether ``node`` was traced inside one of the modules ``names`` (or their submodules)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [str(path) for path, _ in stack.values()]
    return any(path == name or path.startswith(f"{name}.") for path in paths for name in names)


def x86_quantizer(ao: TorchaoAPI, *, reduce_range: bool, keep_float: Sequence[str], qat: bool = False) -> Any:
    """torchao's x86 quantizer: per-channel int8 weights, uint8 activations; ``keep_float`` left alone."""
    quantizer = ao.quantizer().set_global(ao.default_config(is_qat=qat, reduce_range=reduce_range))
    for name in keep_float:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def capture(model: nn.Module, resolution: int, *, train: bool) -> torch.fx.GraphModule:
    """``torch.export`` of ``model`` in train or eval mode, batch 1 to 4096; ``model``'s mode is restored.

    A model whose layers were swapped for training (:func:`~mobilenets.layers.keep_relu6_outputs`,
    :func:`~mobilenets.layers.fast_depthwise_gradients`) is captured from a copy with torch's back.
    """
    if any(isinstance(module, (ReLU6, DepthwiseConv2d)) for module in model.modules()):
        model = copy.deepcopy(model)  # torchao matches conv-BatchNorm-ReLU6 by torch's module types
        keep_relu6_outputs(model, enabled=False)
        fast_depthwise_gradients(model, enabled=False)
    example = torch.zeros(2, 3, resolution, resolution)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    was_training = model.training
    model.train(train)
    try:
        with torch.inference_mode(False), external_step("torch.export capture for int8", _INT8_HINT):
            return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes).module()
    finally:
        model.train(was_training)


class Int8Model(ExportedClassifier):
    """The graph :func:`quantize_pt2e` converts, as an inference-only module.

    ``graph_module`` is torchao's converted ``torch.fx.GraphModule`` (quantize / dequantize ops around
    float ops), captured in eval mode. torchao makes its ``train()``/``eval()`` raise; here ``eval()``
    works (and returns the module, so ``evaluate`` and ``.eval()`` chains do), ``train()`` refuses.
    """

    def __init__(self, graph_module: torch.fx.GraphModule, *, calibration_images: int = 0) -> None:
        super().__init__(graph_module)
        self.calibration_images = calibration_images
        self.quantization = ""  # how it was made (describe_int8), for the metadata of its exported file

    @property
    def graph_module(self) -> torch.fx.GraphModule:
        inner = self.inner
        if not isinstance(inner, torch.fx.GraphModule):  # internal invariant: set in __init__
            raise WrongTypeError(f"Int8Model wraps a GraphModule, not a {type(inner).__name__}")
        return inner


def quantize_pt2e(
    model: nn.Module,
    calibration_batches: Iterable[torch.Tensor],
    *,
    resolution: int,
    reduce_range: bool = True,
    keep_float: Sequence[str] = (),
) -> Int8Model:
    """``model`` quantized to int8 by torchao's PT2E flow, calibrated on ``calibration_batches``.

    Each batch is a float (N, 3, ``resolution``, ``resolution``) tensor prepared as the model expects
    (its preset); a few hundred images in batches of ~50 are enough. ``reduce_range`` keeps
    activations to 7 bits (see the module notes); ``keep_float`` names modules (e.g. ``stem``) left
    in float. ``model`` is not changed. The result takes any batch of 1 to 4096 NCHW float images at
    ``resolution``. Run it as it is to check accuracy, or through :func:`compile_int8` for speed.
    """
    check_options(model, resolution, keep_float)
    quantizer = x86_quantizer(torchao_api(), reduce_range=reduce_range, keep_float=keep_float)
    int8 = calibrate_pt2e(model, calibration_batches, resolution=resolution, quantizer=quantizer)
    int8.quantization = describe_int8(X86_QUANTIZER, int8.calibration_images, keep_float)
    return int8


def calibrate_pt2e(
    model: nn.Module,
    calibration_batches: Iterable[torch.Tensor],
    *,
    resolution: int,
    quantizer: Any,
    hint: str = _INT8_HINT,
) -> Int8Model:
    """torchao's PT2E flow with ``quantizer``: capture ``model``, observe the batches, convert.

    Shared by the x86 (:func:`quantize_pt2e`) and XNNPACK quantizers; ``hint`` is what an error in
    torchao's steps suggests trying.
    """
    if isinstance(calibration_batches, torch.Tensor):
        raise WrongTypeError(
            "calibration_batches must be an iterable of (N, 3, H, W) batches, not one tensor; "
            "pass e.g. images.split(50)"
        )
    ao = torchao_api()
    batches = iter(calibration_batches)
    first = next(batches, None)
    if first is None:
        raise UsageError("no calibration batch was given; activation ranges need real images")
    first = check_batch(first, 0, resolution)
    with torch.inference_mode(False), torch.no_grad():
        captured = capture(model, resolution, train=False)
        with external_step("torchao's prepare_pt2e", hint):
            prepared = ao.prepare_pt2e(captured, quantizer)
        prepared(first)
        images = len(first)
        for index, batch in enumerate(batches, start=1):
            batch = check_batch(batch, index, resolution)
            prepared(batch)
            images += len(batch)
        with external_step("torchao's convert_pt2e", hint):
            converted = ao.convert_pt2e(prepared)
    drop_unused_tensors(converted)
    return Int8Model(converted, calibration_images=images)


def drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """Delete the float weights ``convert_pt2e`` replaced by int8 constants but left as attributes.

    The graph no longer reads them; kept, they would double the memory and every exported file.
    """
    used = {str(node.target) for node in graph_module.graph.nodes if node.op == "get_attr"}
    named = [*graph_module.named_parameters(), *graph_module.named_buffers()]
    for name in [name for name, _ in named if name not in used]:
        owner, _, leaf = name.rpartition(".")
        delattr(graph_module.get_submodule(owner), leaf)


class _FrozenCompiled(nn.Module):
    """Calls ``torch.compile(module)`` with Inductor's ``freezing`` on, under ``torch.no_grad``.

    Freezing (weights as constants) is what lets Inductor fold the quantize / dequantize patterns into
    prepacked oneDNN int8 kernels; without it they are not used (compiled accuracy then equals the
    simulated graph's, and compiling took 4× longer here). It is switched on only
    while this module runs (``torch.compile(options={"freezing": True})`` fails on these graphs in
    torch 2.14), so other compiled modules of the process are unaffected.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch._inductor import config as inductor_config

        with inductor_config.patch(freezing=True), torch.no_grad():
            out: torch.Tensor = self.compiled(x)
        return out


def compile_int8(model: nn.Module) -> nn.Module:
    """The fast form of a :func:`quantize_pt2e` result: Inductor-compiled with frozen weights.

    Compiles on the first call (10–15 s for MobileNetV2 at 224 on 2 cores) and again for each new
    input shape. Inference only: the weights are captured when it compiles. On CPUs without VNNI
    keep ``reduce_range`` on when quantizing (see the module notes).
    """
    return _FrozenCompiled(model)
