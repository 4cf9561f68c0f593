"""Patch-based inference (MCUNetV2, Lin et al. 2021): a network's high-resolution start, tile by tile.

A MobileNet's largest activations sit in its first layers (MobileNetV2 at 224×224: 96 expanded
channels at 112×112). :class:`PatchedStem` runs the stem and the first blocks on one spatial tile of
their output at a time, from just the input region that tile needs (its receptive field), so only a
tile's worth of those activations is ever alive; the tiles' outputs are joined into the full feature map
and the rest of the network runs as usual, or in channel chunks
(:func:`~mobilenets.deploy.memory_efficient.memory_efficient` combines both).

Neighbouring tiles overlap in their receptive fields, and the overlap is computed once per tile: the
latency cost grows with the number of tiles and the depth of the patched part. Outputs equal the plain
model's to float rounding: every conv runs unpadded on its tile's region, and zeros are added only
where the full feature map's own padding would be.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..layers.conv_norm_act import ConvNormAct
from ..layers.inverted_residual import InvertedResidual
from ..layers.padding import Conv2dSame, tf_same_pads
from ..layers.separable import DepthwiseSeparableConv
from ..models.mobilenet import MobileNet
from .fuse import folded_parameters

Interval = tuple[int, int]  # [start, stop) along one spatial axis
PATCH_STRIDE = 4  # default: tile the stem and the blocks up to output stride 4 (MobileNetV2: 56×56 at 224)


class _TileConv(nn.Module):
    """One folded conv-act unit, run without padding on a region of its input."""

    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        if not isinstance(unit, ConvNormAct) or not isinstance(unit.conv, nn.Conv2d):
            raise UsageError(f"patch-based inference runs conv units, got {type(unit).__name__}")
        conv = unit.conv
        self.weight, self.bias = folded_parameters(unit, "patch-based inference")
        if conv.dilation != (1, 1):
            raise UsageError("patch-based inference does not support dilated convs (output_stride < 32)")
        self.kernel = conv.kernel_size
        self.stride = conv.stride
        self.groups = conv.groups
        self.same = isinstance(conv, Conv2dSame)
        padding = (0, 0) if self.same or conv.padding == "valid" else conv.padding
        if not isinstance(padding, tuple):
            raise UsageError(f"patch-based inference needs numeric conv padding, got {conv.padding!r}")
        self.padding: tuple[int, ...] = padding
        self.act = unit.act

    def geometry(self, size: int, axis: int) -> tuple[int, int]:
        """(padding before, output size) of this conv along ``axis`` for an input of ``size``."""
        kernel, stride = self.kernel[axis], self.stride[axis]
        if self.same:
            return tf_same_pads(size, kernel, stride, 1)[0], -(-size // stride)
        pad = self.padding[axis]
        return pad, (size + 2 * pad - kernel) // stride + 1

    def needed(self, out: Interval, pad: int, axis: int) -> Interval:
        """The input interval (possibly beyond the map, where the padding is) that ``out`` reads."""
        stride = self.stride[axis]
        return out[0] * stride - pad, (out[1] - 1) * stride - pad + self.kernel[axis]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups))


class _TileBlock(nn.Module):
    """A stem or block as its sequence of conv units, plus whether its input is added to its output."""

    def __init__(self, units: list[nn.Module], residual: bool) -> None:
        super().__init__()
        self.units = [_TileConv(unit) for unit in units]
        self.convs = nn.ModuleList(self.units)  # registers the units' weights
        self.residual = residual


def _tile_block(module: nn.Module, name: str) -> _TileBlock:
    if isinstance(module, ConvNormAct):
        return _TileBlock([module], residual=False)
    if isinstance(module, DepthwiseSeparableConv):
        return _TileBlock([module.conv_dw, module.conv_pw], residual=False)
    if (
        isinstance(module, InvertedResidual)
        and module.separable
        and isinstance(module.se, nn.Identity)
        and module.shortcut != "expansion"
    ):
        units: list[nn.Module] = [module.conv_pw] if isinstance(module.conv_pw, ConvNormAct) else []
        return _TileBlock([*units, module.conv_dw, module.conv_pwl], residual=module.has_residual)
    raise UsageError(
        f"{name} ({type(module).__name__}) cannot run patch by patch: only conv units, depthwise "
        "separable blocks and inverted residuals without squeeze-excite or expansion shortcuts can"
    )


def check_patches(patches: int, stride: int = PATCH_STRIDE) -> None:
    """A clear error unless ``patches`` (tiles per side) and ``stride`` are positive integers."""
    if type(patches) is not int or patches < 1:
        raise UsageError(f"patches must be a positive integer (tiles per side), got {patches!r}")
    if type(stride) is not int or stride < 1:
        raise UsageError(f"patch stride must be a positive integer, got {stride!r}")


def _split(size: int, parts: int) -> list[Interval]:
    edges = [round(i * size / parts) for i in range(parts + 1)]
    return [(start, stop) for start, stop in itertools.pairwise(edges) if stop > start]


def _clip(interval: Interval, size: int) -> Interval:
    return max(interval[0], 0), min(interval[1], size)


class PatchedStem(nn.Module):
    """The stem and the first blocks of a network, run on ``patches × patches`` tiles of their output.

    ``modules`` are the stem and blocks in order (BatchNorm folded; see :func:`_tile_block` for the
    kinds accepted). The module replaces the network's stem; the blocks it took over become Identity.
    """

    def __init__(self, modules: list[tuple[str, nn.Module]], patches: int) -> None:
        super().__init__()
        check_patches(patches)
        if not modules:
            raise UsageError("patch-based inference needs at least the stem to patch")
        self.patches = patches
        self.names = [name for name, _ in modules]  # what the tiles run, as the network named it
        self.blocks = [_tile_block(module, name) for name, module in modules]
        self.parts = nn.ModuleList(self.blocks)  # registers the weights under parts.I.convs.J
        self._convs = [conv for block in self.blocks for conv in block.units]

    def _plan(self, size: int, out: Interval, axis: int) -> list[tuple[Interval, Interval]]:
        """Per conv, in order: (the input interval it reads, the output interval it makes) for ``out``."""
        sizes = [size]
        pads = []
        for conv in self._convs:
            pad, out_size = conv.geometry(sizes[-1], axis)
            pads.append(pad)
            sizes.append(out_size)
        plan: list[tuple[Interval, Interval]] = []
        wanted = out
        for index in range(len(self._convs) - 1, -1, -1):
            reads = self._convs[index].needed(wanted, pads[index], axis)
            plan.append((reads, wanted))
            wanted = _clip(reads, sizes[index])
        return plan[::-1]

    def output_size(self, size: int, axis: int) -> int:
        for conv in self._convs:
            size = conv.geometry(size, axis)[1]
        return size

    def _tile(self, x: torch.Tensor, rows: Interval, cols: Interval, live: list[int] | None) -> torch.Tensor:
        """The output over ``rows`` × ``cols`` from the input region it needs (``live``: element counts)."""
        height, width = x.shape[-2:]
        row_plan = self._plan(height, rows, 0)
        col_plan = self._plan(width, cols, 1)
        (row_reads, _), (col_reads, _) = row_plan[0], col_plan[0]
        (r0, r1), (c0, c1) = _clip(row_reads, height), _clip(col_reads, width)
        tensor = x[:, :, r0:r1, c0:c1]
        have = ((r0, r1), (c0, c1))
        steps = iter(zip(row_plan, col_plan, strict=True))
        for part in self.blocks:
            block_input, block_have = tensor, have
            for conv in part.units:
                (row_in, row_out), (col_in, col_out) = next(steps)
                # Zeros only where this tile's region leaves the feature map: the map's own padding.
                (rows_have, cols_have), previous = have, tensor
                pads = (
                    cols_have[0] - col_in[0],
                    col_in[1] - cols_have[1],
                    rows_have[0] - row_in[0],
                    row_in[1] - rows_have[1],
                )
                padded = F.pad(tensor, pads) if any(pads) else tensor
                tensor, have = conv(padded), (row_out, col_out)
                if live is not None:  # this conv's input (before and after padding) and output
                    alive = {id(t): t.numel() for t in (previous, padded, tensor)}
                    if part.residual:  # and the block's input, waiting for the addition
                        alive[id(block_input)] = block_input.numel()
                    live.append(sum(alive.values()))
            if part.residual:
                top, left = have[0][0] - block_have[0][0], have[1][0] - block_have[1][0]
                rows_out, cols_out = tensor.shape[-2:]
                tensor = tensor + block_input[:, :, top : top + rows_out, left : left + cols_out]
        return tensor

    def _run(self, x: torch.Tensor, live: list[int] | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        row_tiles = _split(self.output_size(height, 0), self.patches)
        col_tiles = _split(self.output_size(width, 1), self.patches)
        rows: list[torch.Tensor] = []
        done = 0  # elements of finished tiles and rows, alive until the last concatenation
        for row in row_tiles:
            tiles: list[torch.Tensor] = []
            for col in col_tiles:
                before = len(live) if live is not None else 0
                tiles.append(self._tile(x, row, col, live))
                if live is not None:
                    live[before:] = [count + done for count in live[before:]]
                    done += tiles[-1].numel()
            rows.append(torch.cat(tiles, dim=3) if len(tiles) > 1 else tiles[0])
            if live is not None and len(tiles) > 1:  # the row's tiles and their concatenation
                live.append(done + rows[-1].numel())
        return torch.cat(rows, dim=2) if len(rows) > 1 else rows[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def scratch_bytes(self, x: torch.Tensor, bytes_per_element: int = 4) -> int:
        """Bytes alive inside besides the input and the output: the busiest moment of any tile,
        counting the tiles already made (they are joined at the end)."""
        live: list[int] = []
        with torch.no_grad():
            self._run(torch.zeros_like(x), live)
        return max(live, default=0) * bytes_per_element


def _output_strides(model: MobileNet) -> list[int]:
    """The output strides the stem and blocks reach (the network's feature levels' reductions)."""
    return sorted({level.reduction for level in model.feature_info})


def probe_image(model: MobileNet, size: int) -> torch.Tensor:
    """A zero image of ``size`` in the dtype and on the device of ``model``'s weights."""
    weight = next(model.parameters(), torch.zeros(()))
    return torch.zeros(1, model.in_channels, size, size, dtype=weight.dtype, device=weight.device)


def patch_stem(
    model: MobileNet, patches: int, *, stride: int = PATCH_STRIDE, resolution: int | None = None
) -> int:
    """Replace ``model``'s stem and the blocks whose output stride is at most ``stride`` by one
    :class:`PatchedStem` of ``patches × patches`` tiles, in place (BatchNorm must be folded first).

    Returns how many blocks the patched stem took over (they become Identity, so block names keep
    their places). ``resolution`` (default: the model's) sets where each block's stride is read.
    """
    check_patches(patches, stride)
    _tile_block(model.stem, "stem")  # a stem that cannot be tiled is the first thing to say
    strides = _output_strides(model)
    if stride not in strides:  # 3 would act as 2 and 1000 as the network's own: say so instead
        raise UsageError(
            f"patch stride {stride}: the tiles end after the last block at that output stride, and this "
            f"network's blocks reach {', '.join(map(str, strides))}"
        )
    size = resolution or model.default_resolution
    # A map at output stride s has ceil(size / s) pixels ("same" padding); any later stride, fewer.
    smallest = -(-size // stride)
    x = probe_image(model, size)
    taken: list[tuple[str, nn.Module]] = [("stem", model.stem)]
    with torch.no_grad():
        x = model.stem(x)
        if x.shape[-1] < smallest:
            raise UsageError(f"the stem alone reduces the input by more than the patch stride {stride}")
        tiled = tuple(x.shape[-2:])  # the map the tiles divide: the last taken module's output
        for name, block in model.iter_blocks():
            x = block(x)
            if x.shape[-1] < smallest:
                break
            taken.append((name, block))
            tiled = tuple(x.shape[-2:])
    if patches > min(tiled):  # more tiles than pixels: fewer would be made than asked for
        raise UsageError(
            f"patches={patches}: the tiles divide a {tiled[0]}×{tiled[1]} map (output stride {stride} at "
            f"{size} px), so at most {min(tiled)} tiles per side"
        )
    model.stem = PatchedStem(taken, patches)
    for name, _ in taken[1:]:
        stage, position = name.split(".")[1:]
        stage_module = model.blocks[int(stage)]
        assert isinstance(stage_module, nn.Sequential)  # internal invariant: blocks.S is a stage
        stage_module[int(position)] = nn.Identity()
    return len(taken) - 1
