"""Exact per-layer costs: parameters, mult-adds, activation bytes and arithmetic intensity.

Counts are analytical (from module attributes and the shapes seen in one forward pass), so they are
exact; tests cross-check them against ``torch.utils.flop_counter.FlopCounterMode``. As in the papers,
mult-adds count convolutions and fully-connected layers; norms, activations, pooling and additions are
cheap elementwise work and are not counted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .trace import record_calls

LAYER_KINDS = ("standard", "depthwise", "pointwise", "se", "linear", "classifier")


@dataclass(frozen=True)
class LayerCost:
    """The cost of one convolution or fully-connected layer (its norm's parameters included)."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernel_size: int
    stride: int
    groups: int
    params: int
    macs: int
    activation_bytes: int
    arithmetic_intensity: float

    @property
    def in_channels(self) -> int:
        return self.input_shape[1]

    @property
    def out_channels(self) -> int:
        return self.output_shape[1]


_NORMS = nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm


def _norm_owner(model: nn.Module, calls: list[Any]) -> dict[str, str]:
    """Map each norm layer's name to the conv/linear layer it follows, so its parameters are counted there:
    the one that ran last before it (``calls``, in the order of the forward pass: a block may register
    its layers in another order than it runs them), else, for a norm not run, the one registered before it."""
    owner: dict[str, str] = {}
    last_compute: str | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            last_compute = name
        elif isinstance(module, _NORMS) and last_compute is not None:
            owner[name] = last_compute
    last_compute = None
    ran: set[str] = set()
    for call in calls:
        if not isinstance(call.module, _NORMS):
            last_compute = call.name
        elif last_compute is not None and call.name not in ran:  # a norm run twice: its first call
            ran.add(call.name)
            owner[call.name] = last_compute
    return owner


def _kind(name: str, module: nn.Module, se_names: set[str], classifier: nn.Module | None) -> str:
    if isinstance(module, nn.Linear):
        return "classifier" if module is classifier else "linear"
    assert isinstance(module, nn.Conv2d)
    if any(name.startswith(prefix + ".") for prefix in se_names):
        return "se"
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    kh, kw = module.kernel_size
    return "pointwise" if kh == kw == 1 else "standard"


def _attention_flops(
    query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return int(sdpa_flop_count(query, key, value))


def layer_costs(model: nn.Module, example: torch.Tensor, *, bytes_per_element: int = 4) -> list[LayerCost]:
    """Run ``model`` once on ``example`` and return the cost of every conv and linear layer, in order.

    Shapes are those of ``example`` (MACs and bytes scale with its batch size); activation bytes are those
    of each layer's output at ``bytes_per_element`` bytes per value.
    """
    from ..layers.squeeze_excite import SqueezeExcite

    se_names = {name for name, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    classifier: nn.Module | None = linears[-1] if linears else None
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):  # ours and timm's say which layer it is (none after num_classes=0)
        head = get_classifier()
        classifier = next((m for m in linears if m is head), None)
    # torch's counter knows the GPU attention kernels only; the CPU one counts as they do.
    attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    with FlopCounterMode(display=False, custom_mapping=attention) as flops:
        calls = record_calls(
            model, example, lambda _, module: isinstance(module, nn.Conv2d | nn.Linear | _NORMS)
        )
    owner = _norm_owner(model, calls)
    calls = [call for call in calls if not isinstance(call.module, _NORMS)]
    norm_params: dict[str, int] = {}
    modules = dict(model.named_modules())
    for norm_name, layer_name in owner.items():
        norm_params[layer_name] = norm_params.get(layer_name, 0) + sum(
            p.numel() for p in modules[norm_name].parameters()
        )
    costs = []
    counted: set[int] = set()  # a module called twice has its parameters counted at its first call
    for call in calls:
        name, module = call.name, call.module
        in_shape, out_shape = tuple(call.inputs[0].shape), tuple(call.output.shape)
        params = 0
        if id(module) not in counted:
            counted.add(id(module))
            params = sum(p.numel() for p in module.parameters(recurse=False)) + norm_params.get(name, 0)
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            out_numel = int(torch.Size(out_shape).numel())
            macs = out_numel * (module.in_channels // module.groups) * kh * kw
            kernel, stride, groups = kh, module.stride[0], module.groups
        else:
            assert isinstance(module, nn.Linear)  # the norms' calls were taken out above
            macs = int(torch.Size(out_shape).numel()) * module.in_features
            kernel, stride, groups = 1, 1, 1
        weight_bytes = sum(p.numel() for p in module.parameters(recurse=False)) * bytes_per_element
        in_bytes = int(torch.Size(in_shape).numel()) * bytes_per_element
        out_bytes = int(torch.Size(out_shape).numel()) * bytes_per_element
        costs.append(
            LayerCost(
                name=name,
                kind=_kind(name, module, se_names, classifier),
                input_shape=in_shape,
                output_shape=out_shape,
                kernel_size=kernel,
                stride=stride,
                groups=groups,
                params=params,
                macs=macs,
                activation_bytes=out_bytes,
                arithmetic_intensity=2 * macs / (in_bytes + out_bytes + weight_bytes),
            )
        )
    uncounted = flops.get_total_flops() // 2 - sum(cost.macs for cost in costs)
    if uncounted > 0:
        warnings.warn(
            f"{uncounted:,} mult-adds of {type(model).__name__} are in operations other than nn.Conv2d and "
            "nn.Linear modules (functional, transposed, 1-D or 3-D convolutions, matrix products): they are "
            "not in the per-layer costs or the totals",
            stacklevel=2,
        )
    return costs
