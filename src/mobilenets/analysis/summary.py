"""A model's whole cost report: per-layer rows, totals, shares by layer kind, peak activation memory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..errors import UsageError, WrongTypeError
from ..models import MIN_INPUT_SIZE, check_resolution
from .layers import LAYER_KINDS, LayerCost, layer_costs
from .memory import OpMemory, schedule_memory
from .separable import SeparableComparison, compare_with_standard

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
# The analysis keeps every layer's output of its float32 forward passes alive; past this total (measured
# before anything is allocated) a too large resolution or batch fails with a clear error instead.
ANALYSIS_BUDGET_BYTES = 2 * 1024**3
# RGB inputs up to this many values (one 104×104 image, ten CIFAR ones) skip that measurement (a few
# tenths of a second): even the widest model here, with small_input, stays within the budget on them.
UNCHECKED_INPUT_VALUES = 2**15


@dataclass(frozen=True)
class ModelSummary:
    """Everything ``mobilenets summary`` reports about one model at one input size."""

    model: str
    input_shape: tuple[int, ...]
    dtype: str
    layers: list[LayerCost]
    schedule: list[OpMemory]
    total_params: int
    comparisons: list[SeparableComparison]
    memory_efficient: int | str | None = None
    patches: int = 1  # spatial tiles per side of the patched stem (memory_efficient's ``patches``)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def peak_activation_bytes(self) -> int:
        return max(op.live_bytes for op in self.schedule)

    @property
    def peak_op(self) -> str:
        return max(self.schedule, key=lambda op: op.live_bytes).name

    def share_by_kind(self) -> dict[str, dict[str, float]]:
        """Fraction of mult-adds and parameters in each layer kind (the v1 paper's Table 2)."""
        total_macs, total_params = self.total_macs or 1, self.total_params or 1
        shares = {}
        for kind in LAYER_KINDS:
            rows = [layer for layer in self.layers if layer.kind == kind]
            if rows:
                shares[kind] = {
                    "macs": sum(r.macs for r in rows) / total_macs,
                    "params": sum(r.params for r in rows) / total_params,
                }
        return shares

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: totals, ``peak_activation_bytes``, ``layers`` and the comparisons."""
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_activation_op": self.peak_op,
            "memory_efficient_chunks": self.memory_efficient,
            "memory_efficient_patches": self.patches,
            "share_by_kind": self.share_by_kind(),
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "separable_vs_standard": [
                {
                    **dataclasses.asdict(c),
                    "theoretical_ratio": c.theoretical_ratio,
                    "measured_ratio": c.measured_ratio,
                }
                for c in self.comparisons
            ],
        }


def summarize(
    model: nn.Module,
    *,
    resolution: int = 224,
    batch_size: int = 1,
    dtype: str = "float32",
    name: str = "",
    compare_standard: bool = False,
    scheduled_model: nn.Module | None = None,
    memory_efficient: int | str | None = None,
    patches: int = 1,
) -> ModelSummary:
    """Analyse ``model`` on a ``batch_size × C × resolution × resolution`` input (counts are per batch).

    ``scheduled_model``, when given, is the model whose forward order sets the peak activation memory:
    the same network rescheduled, e.g. chunked (``mobilenets.deploy.memory_efficient``, whose
    ``summarize_memory_efficient`` calls this). Counts stay ``model``'s; ``memory_efficient`` and
    ``patches`` record the chunk and tile settings in the report.
    """
    if not isinstance(model, nn.Module):
        raise WrongTypeError(f"model must be a torch.nn.Module (create_model(NAME)), got {model!r}")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise UsageError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPE_BYTES)}")
    # A MobileNet with strides dropped (small_input) takes inputs down to its total stride.
    check_resolution(resolution, minimum=getattr(model, "min_input_size", MIN_INPUT_SIZE))
    if not _is_int(batch_size) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    in_channels = getattr(model, "in_channels", 3)
    shape = (batch_size, in_channels, resolution, resolution)
    modes = _training_modes(model, scheduled_model)
    model.eval()
    try:
        check_analysis_budget(model, shape)
        # The input takes the model's own dtype and device (a half or bf16 model, one on a GPU): the
        # counts do not depend on them; ``dtype`` sets the bytes the memory figures count per value.
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        if device.type == "meta":  # no storage: every tensor would look like one
            raise UsageError("the model is on the meta device (no memory to follow); materialize it first")
        example = torch.zeros(shape, dtype=_input_dtype(model), device=device)
        per_element = DTYPE_BYTES[dtype]
        layers = layer_costs(model, example, bytes_per_element=per_element)
        scheduled = model if scheduled_model is None else scheduled_model.eval()
        schedule = schedule_memory(scheduled, example, bytes_per_element=per_element)
    finally:
        for module, training in modes:
            module.training = training
    if not schedule:
        raise UsageError(
            f"{type(model).__name__} has no layer the analysis schedules (convolutions, fully-connected "
            "layers, pooling): nothing to report"
        )
    return ModelSummary(
        model=name or type(model).__name__,
        input_shape=tuple(example.shape),
        dtype=dtype,
        layers=layers,
        schedule=schedule,
        total_params=sum(p.numel() for p in model.parameters()),
        comparisons=compare_with_standard(layers) if compare_standard else [],
        memory_efficient=memory_efficient,
        patches=patches,
    )


def _training_modes(*models: nn.Module | None) -> list[tuple[nn.Module, bool]]:
    """Each submodule with its ``training`` flag, to restore as it was (a frozen norm stays frozen)."""
    return [(module, module.training) for model in models if model is not None for module in model.modules()]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s floating-point weights (float32 for a model without any)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def check_analysis_budget(model: nn.Module, shape: tuple[int, int, int, int]) -> None:
    """Refuse, before running anything, an input whose analysis would hold more than
    :data:`ANALYSIS_BUDGET_BYTES` of activations (:func:`estimated_activation_bytes`)."""
    batch_size, _, height, width = shape
    if batch_size * 3 * height * width <= UNCHECKED_INPUT_VALUES:  # as RGB: grey input, same activations
        return
    needed = estimated_activation_bytes(model, shape)
    if needed is not None and needed > ANALYSIS_BUDGET_BYTES:
        raise UsageError(
            f"analysing a {'×'.join(map(str, shape))} input would hold about {needed / 1024**3:,.1f} GiB "
            f"of activations (at most {ANALYSIS_BUDGET_BYTES / 1024**3:g} GiB); lower the resolution "
            "or batch_size"
        )


def estimated_activation_bytes(model: nn.Module, shape: tuple[int, ...]) -> int | None:
    """Bytes of every conv and linear input and output of one float32 forward pass on a ``shape`` input.

    Runs on the meta device (shapes only, nothing allocated); ``None`` when the model cannot run there.
    """
    total = 0

    def count(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        nonlocal total  # the analysis keeps each layer's input with its output (another layer's output)
        for tensor in (*inputs, output):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * 4

    tensors = {name: torch.empty_like(t, device="meta") for name, t in model.named_parameters()}
    tensors.update({name: torch.empty_like(t, device="meta") for name, t in model.named_buffers()})
    handles = [
        m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            functional_call(model, tensors, (torch.empty(shape, dtype=_input_dtype(model), device="meta"),))
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel, or a tensor not registered
        return None
    finally:
        for handle in handles:
            handle.remove()
    return total
