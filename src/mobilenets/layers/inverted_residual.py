"""The inverted residual block with a linear bottleneck (MobileNet v2, v3 and EfficientNet-Lite)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..errors import UsageError
from .activations import check_activation
from .channels import check_positive_ints, is_positive_int, is_real
from .conv_norm_act import ConvNormAct
from .drop_path import DropPath
from .norm import NormConfig
from .squeeze_excite import SqueezeExcite

# Where an inverted residual's shortcut sits: between bottlenecks (the paper's), between the expanded
# layers of consecutive blocks (a classic residual's place), or nowhere.
SHORTCUTS = ("bottleneck", "expansion", "none")


class InvertedResidual(nn.Module):
    """1×1 expand → K×K depthwise → [squeeze-excite] → 1×1 linear projection, plus a skip when shapes allow.

    Sub-modules, in order: ``conv_pw`` (expansion to ``hidden_channels``; ``nn.Identity`` when there is
    nothing to expand), ``conv_dw``, ``se`` (``nn.Identity`` without squeeze-excite), ``conv_pwl`` (the
    projection: a norm but *no* activation, since a ReLU on the narrow bottleneck destroys information,
    v2 paper §3.2) and ``drop_path`` (stochastic depth on the residual branch).

    The residual is added iff ``stride == 1`` and ``in_channels == out_channels`` (``has_residual``).

    Two ablation switches test the v2 paper's claims with everything else equal (``mobilenets ablate``):
    ``projection_activation`` puts an activation after the projection (the paper's Figure 6a: a
    non-linear bottleneck), and ``shortcut="none"`` drops the residual (Figure 6b). The third arm,
    shortcuts between the expanded layers, spans consecutive blocks: see
    :class:`ExpansionShortcutStage`, which runs blocks built with ``shortcut="expansion"``.

    With ``separable=False`` the depthwise K×K and the 1×1 projection are replaced by one dense K×K conv
    from ``hidden_channels`` to ``out_channels`` (named ``conv_full``; no ``conv_dw``, ``se`` or
    ``conv_pwl``): the standard-convolution twin used to measure what depthwise separability saves, as
    the v1 paper's Table 4 does for MobileNet v1.
    """

    # Constants to TorchScript, which then compiles only the branches a block takes (no conv_full
    # in a separable block, no addition without a residual).
    __constants__ = ("separable", "has_residual")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        hidden_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        activation: str = "relu6",
        se_channels: int = 0,
        se_gate: str = "hardsigmoid",
        norm: NormConfig | None = None,
        padding: str = "symmetric",
        drop_path_rate: float = 0.0,
        separable: bool = True,
        projection_activation: str | None = None,
        shortcut: str = "bottleneck",
    ) -> None:
        super().__init__()
        check_positive_ints(
            in_channels=in_channels, out_channels=out_channels, hidden_channels=hidden_channels
        )
        if not (is_positive_int(se_channels) or (type(se_channels) is int and se_channels == 0)):
            raise UsageError(
                f"se_channels must be a non-negative integer (0: no squeeze-excite), got {se_channels!r}"
            )
        if not is_real(drop_path_rate) or not 0.0 <= drop_path_rate < 1.0:
            raise UsageError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        if not isinstance(separable, bool):
            raise UsageError(f"separable must be True or False, got {separable!r}")
        check_activation(se_gate)
        check_activation(projection_activation)
        if shortcut not in SHORTCUTS:
            raise UsageError(f"unknown shortcut {shortcut!r}; expected one of {', '.join(SHORTCUTS)}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.stride = stride
        self.shortcut = shortcut
        self.has_residual = shortcut == "bottleneck" and stride == 1 and in_channels == out_channels

        self.conv_pw: nn.Module
        if hidden_channels != in_channels:
            self.conv_pw = ConvNormAct(
                in_channels, hidden_channels, 1, activation=activation, norm=norm, padding=padding
            )
        else:
            self.conv_pw = nn.Identity()
        self.conv_dw: nn.Module
        self.conv_pwl: nn.Module
        self.conv_full: nn.Module
        if separable:
            self.conv_dw = ConvNormAct(
                hidden_channels,
                hidden_channels,
                kernel_size,
                stride=stride,
                dilation=dilation,
                groups=hidden_channels,
                activation=activation,
                norm=norm,
                padding=padding,
            )
            self.se = (
                SqueezeExcite(hidden_channels, se_channels, gate=se_gate) if se_channels else nn.Identity()
            )
            self.conv_pwl = ConvNormAct(
                hidden_channels, out_channels, 1, activation=projection_activation, norm=norm, padding=padding
            )
        else:
            if se_channels:
                raise UsageError("the standard-convolution twin (separable=False) has no squeeze-excite")
            self.conv_full = ConvNormAct(
                hidden_channels,
                out_channels,
                kernel_size,
                stride=stride,
                dilation=dilation,
                activation=projection_activation,
                norm=norm,
                padding=padding,
            )
        self.separable = separable
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Zero the residual branch's last scale (the projection's norm weight; with no norm, the
        projection itself), so the branch adds nothing at first and the block starts as the identity."""
        last = self.conv_pwl if self.separable else self.conv_full
        if not isinstance(last, ConvNormAct):
            raise UsageError(f"the residual branch must end in a ConvNormAct, got {type(last).__name__}")
        if isinstance(last.bn, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.zeros_(last.bn.weight)
        else:
            nn.init.zeros_(last.conv.weight)
            if last.conv.bias is not None:
                nn.init.zeros_(last.conv.bias)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """The block after its expansion: depthwise (+ squeeze-excite) and projection, or the dense twin."""
        if self.separable:
            return self.conv_pwl(self.se(self.conv_dw(hidden)))
        return self.conv_full(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_pw(x))
        if self.has_residual:
            out = x + self.drop_path(out)
        return out


class ExpansionShortcutStage(nn.Sequential):
    """A stage of inverted residuals whose shortcuts join the *expanded* layers instead of the bottlenecks.

    The v2 paper's Figure 6b compares shortcuts between bottlenecks (ours, :class:`InvertedResidual`)
    with shortcuts between expansion layers, as a classic residual network would place them. Here block
    ``i + 1``'s expansion adds block ``i``'s expansion when the two have the same shape (block ``i`` at
    stride 1, same hidden width): the same layers and mult-adds as the default, the skips moved, and
    one fewer per stage (see :attr:`skips`). Blocks keep their names (``blocks.S.I``), so weights and
    analysis see the same network.
    """

    @property
    def skips(self) -> int:
        """How many shortcuts the stage has: one per pair of consecutive blocks whose expansions match.

        A stage's first block changes width or stride, so n blocks give n - 2 such pairs where the
        bottleneck shortcuts give n - 1: fewer skips, not only moved ones (a one-block stage has none).
        """
        blocks = list(self)
        return sum(
            isinstance(block, InvertedResidual)
            and isinstance(following, InvertedResidual)
            and block.stride == 1
            and following.hidden_channels == block.hidden_channels
            for block, following in itertools.pairwise(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = [block for block in self if isinstance(block, InvertedResidual)]
        if len(blocks) != len(self):
            raise UsageError("ExpansionShortcutStage holds InvertedResidual blocks only")
        hidden = blocks[0].conv_pw(x)
        out = x
        for index, block in enumerate(blocks):
            out = block.project(hidden)
            if index + 1 < len(blocks):
                following = blocks[index + 1]
                expanded = following.conv_pw(out)
                if block.stride == 1 and following.hidden_channels == block.hidden_channels:
                    expanded = hidden + block.drop_path(expanded)
                hidden = expanded
        return out
