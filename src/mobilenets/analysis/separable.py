"""Depthwise separable layers against the standard convolutions they replace."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .layers import LayerCost


@dataclass(frozen=True)
class SeparableComparison:
    """One depthwise + pointwise pair beside a standard K×K conv with the same input, output and stride.

    Parameters count the convolutions' weights on both sides, as the v1 paper compares them (norms and
    biases left out), so their ratio is ``1/C_out + 1/K²`` too. A pair run pointwise first
    (``depthwise_first=False``: the depthwise conv filters the widened channels) saves
    ``1/C_in + 1/K²`` instead.
    """

    depthwise: str
    pointwise: str
    in_channels: int
    out_channels: int
    kernel_size: int
    separable_macs: int
    standard_macs: int
    separable_params: int
    standard_params: int
    depthwise_first: bool = True

    @property
    def theoretical_ratio(self) -> float:
        """The v1 paper's eq. 5: ``1/C_out + 1/K²`` (``1/C_in + 1/K²`` for a pair run pointwise first)."""
        mixed = self.out_channels if self.depthwise_first else self.in_channels
        return 1 / mixed + 1 / self.kernel_size**2

    @property
    def measured_ratio(self) -> float:
        """Mult-adds of the pair over those counted on a real standard conv by ``FlopCounterMode``."""
        return self.separable_macs / self.standard_macs


def separable_pairs(costs: list[LayerCost]) -> list[tuple[LayerCost, LayerCost]]:
    """(depthwise, pointwise) pairs: each depthwise layer with the pointwise layer that follows it
    (squeeze-excite in between skipped), or, where none follows, the pointwise layer right before it
    that feeds it (a block run pointwise first, such as ``cifar_separable_dwlast``'s)."""
    pairs = []
    for index, layer in enumerate(costs):
        if layer.kind != "depthwise":
            continue
        following = (c for c in costs[index + 1 :] if c.kind != "se")
        nxt = next(following, None)
        before = costs[index - 1] if index > 0 else None
        if nxt is not None and nxt.kind == "pointwise":
            pairs.append((layer, nxt))
        elif before is not None and before.kind == "pointwise" and before.out_channels == layer.in_channels:
            pairs.append((layer, before))
    return pairs


def compare_with_standard(costs: list[LayerCost]) -> list[SeparableComparison]:
    """Count a standard conv twin for every depthwise separable pair in ``costs``: a K×K conv from the
    pair's input to its output at the depthwise conv's stride."""
    comparisons = []
    position = {id(cost): index for index, cost in enumerate(costs)}
    for dw, pw in separable_pairs(costs):
        first, second = (dw, pw) if position[id(dw)] < position[id(pw)] else (pw, dw)
        twin = nn.Conv2d(
            first.in_channels, second.out_channels, dw.kernel_size, dw.stride, dw.kernel_size // 2, bias=False
        )
        with torch.device("meta"):
            example = torch.empty(first.input_shape)
        with FlopCounterMode(display=False) as counter:
            twin.to("meta")(example)
        comparisons.append(
            SeparableComparison(
                depthwise=dw.name,
                pointwise=pw.name,
                in_channels=first.in_channels,
                out_channels=second.out_channels,
                kernel_size=dw.kernel_size,
                separable_macs=dw.macs + pw.macs,
                standard_macs=counter.get_total_flops() // 2,
                separable_params=dw.in_channels * dw.kernel_size**2 + pw.in_channels * pw.out_channels,
                standard_params=twin.weight.numel(),
                depthwise_first=first is dw,
            )
        )
    return comparisons
