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
    biases left out), so their ratio is ``1/C_out + 1/K²`` too.
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

    @property
    def theoretical_ratio(self) -> float:
        """The v1 paper's eq. 5: ``1/C_out + 1/K²``."""
        return 1 / self.out_channels + 1 / self.kernel_size**2

    @property
    def measured_ratio(self) -> float:
        """Mult-adds of the pair over those counted on a real standard conv by ``FlopCounterMode``."""
        return self.separable_macs / self.standard_macs


def separable_pairs(costs: list[LayerCost]) -> list[tuple[LayerCost, LayerCost]]:
    """Each depthwise layer with the pointwise layer that follows it (squeeze-excite in between skipped)."""
    pairs = []
    for index, layer in enumerate(costs):
        if layer.kind != "depthwise":
            continue
        following = (c for c in costs[index + 1 :] if c.kind != "se")
        nxt = next(following, None)
        if nxt is not None and nxt.kind == "pointwise":
            pairs.append((layer, nxt))
    return pairs


def compare_with_standard(costs: list[LayerCost]) -> list[SeparableComparison]:
    """Count a standard conv twin for every depthwise separable pair in ``costs``."""
    comparisons = []
    for dw, pw in separable_pairs(costs):
        twin = nn.Conv2d(
            dw.in_channels, pw.out_channels, dw.kernel_size, dw.stride, dw.kernel_size // 2, bias=False
        )
        with torch.device("meta"):
            example = torch.empty(dw.input_shape)
        with FlopCounterMode(display=False) as counter:
            twin.to("meta")(example)
        comparisons.append(
            SeparableComparison(
                depthwise=dw.name,
                pointwise=pw.name,
                in_channels=dw.in_channels,
                out_channels=pw.out_channels,
                kernel_size=dw.kernel_size,
                separable_macs=dw.macs + pw.macs,
                standard_macs=counter.get_total_flops() // 2,
                separable_params=dw.in_channels * dw.kernel_size**2 + pw.in_channels * pw.out_channels,
                standard_params=twin.weight.numel(),
            )
        )
    return comparisons
