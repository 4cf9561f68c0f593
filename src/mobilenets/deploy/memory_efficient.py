"""Memory-efficient inference for inverted residual blocks (MobileNetV2 paper, §5.1).

A block computes ``F(x) = A(N(B(x)))``: ``B`` expands to t·C channels (1×1 conv + activation), ``N`` is
the per-channel depthwise conv + activation, ``A`` the linear 1×1 projection. ``B`` and ``N`` act on
each expanded channel separately and ``A`` is linear, so splitting the expanded channels into k chunks
gives ``F(x) = Σᵢ (Aᵢ ∘ N ∘ Bᵢ)(x)``: only one chunk of the expanded tensor ever exists. (A projection
with an activation, the ablations' non-linear bottleneck, applies it to the finished sum.) Each partial
projection is accumulated in place (``addmm_`` on the channels_last output), so no second
output-sized tensor appears either. As in the paper's Table 3 footnote, the stem conv and the first
(t = 1) block are treated the same way, the stem playing ``B``; otherwise their 112×112 tensors would
stay the peak. Blocks with squeeze-excite (whose gate needs every channel) and blocks whose shortcut
joins expanded layers (``shortcut="expansion"``) run unchanged.

Works on a BatchNorm-folded copy; outputs equal the plain model's to float rounding.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis.memory import schedule_memory
from ..analysis.summary import ModelSummary, check_analysis_budget, summarize
from ..errors import UsageError
from ..layers.conv_norm_act import ConvNormAct
from ..layers.inverted_residual import ExpansionShortcutStage, InvertedResidual
from ..layers.padding import Conv2dSame, tf_same_pads
from ..models import MIN_INPUT_SIZE, check_resolution
from ..models.mobilenet import MobileNet
from .fuse import folded_parameters, fuse
from .patch_inference import PATCH_STRIDE, check_patches, patch_stem, probe_image

Chunks = int | Literal["channel"]


def _inplace_activation(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module``'s activation applied in place where PyTorch has an in-place form (no extra tensor)."""
    if isinstance(module, nn.ReLU6):
        return lambda t: F.hardtanh_(t, 0.0, 6.0)
    if isinstance(module, nn.ReLU):
        return F.relu_
    if isinstance(module, nn.Hardswish):
        return lambda t: F.hardswish(t, inplace=True)
    if isinstance(module, nn.Identity):
        return lambda t: t
    return module


class _ConvPart(nn.Module):
    """One folded conv (weight, bias, geometry) of a block, applied to a slice of its output channels."""

    def __init__(self, unit: ConvNormAct) -> None:
        super().__init__()
        self.weight, self.bias = folded_parameters(unit, "memory-efficient blocks")
        conv = unit.conv
        self.stride = conv.stride
        self.dilation = conv.dilation
        self.padding = conv.padding
        self.same = isinstance(conv, Conv2dSame)
        self.depthwise = conv.groups == conv.in_channels and conv.groups > 1
        self.activation = _inplace_activation(unit.act)
        # A 1×1, stride-1 dense conv on a channels_last tensor is one matrix product over its pixels:
        # ``addmm`` on a column slice of (C_in, C_out) beats a oneDNN conv call on a small batch-1 chunk.
        pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
        self.matrix: torch.Tensor | None = None
        if pointwise and (self.same or conv.padding in ((0, 0), "valid")):
            self.matrix = nn.Parameter(self.weight[:, :, 0, 0].t().contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Output channels ``start:stop`` (a depthwise conv takes just those input channels)."""
        if self.matrix is not None and not torch.compiler.is_exporting():
            n, _, h, w = x.shape
            rows = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n * h * w, -1)
            out = torch.addmm(self.bias[start:stop], rows, self.matrix[:, start:stop])
            return self.activation(out.view(n, h, w, stop - start).permute(0, 3, 1, 2))
        weight, bias = self.weight[start:stop], self.bias[start:stop]
        if self.same:
            (kh, kw), (sh, sw), (dh, dw) = weight.shape[-2:], self.stride, self.dilation
            top, bottom = tf_same_pads(x.shape[-2], kh, sh, dh)
            left, right = tf_same_pads(x.shape[-1], kw, sw, dw)
            x = F.pad(x, (left, right, top, bottom))
            padding: tuple[int, ...] | str | int = 0
        else:
            padding = self.padding
        groups = stop - start if self.depthwise else 1
        out = F.conv2d(x, weight, bias, self.stride, padding, self.dilation, groups)
        return self.activation(out)


def _padded_pixels(part: _ConvPart, h: int, w: int) -> int:
    """Pixels of the zero-padded copy of an ``h``×``w`` input that ``part`` makes (0: it pads in the conv)."""
    if not part.same or part.matrix is not None:
        return 0
    (kh, kw), (sh, sw), (dh, dw) = part.weight.shape[-2:], part.stride, part.dilation
    return (h + sum(tf_same_pads(h, kh, sh, dh))) * (w + sum(tf_same_pads(w, kw, sw, dw)))


def check_chunks(chunks: Chunks) -> None:
    """A clear error unless ``chunks`` is a positive integer or ``"channel"``."""
    if chunks != "channel" and (isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1):
        raise UsageError(f"chunks must be a positive integer or 'channel', got {chunks!r}")


class ChunkedInvertedResidual(nn.Module):
    """An inverted residual (optionally with the stem as its expansion) evaluated in channel chunks.

    ``expand`` is the expansion unit (a block's ``conv_pw`` or the network's stem), or None when the
    block does not expand (its depthwise conv then reads input channel slices directly).
    """

    def __init__(self, block: InvertedResidual, chunks: Chunks, expand: ConvNormAct | None = None) -> None:
        super().__init__()
        if expand is None and isinstance(block.conv_pw, ConvNormAct):
            expand = block.conv_pw
        self.expand = _ConvPart(expand) if expand is not None else None
        if not isinstance(block.conv_dw, ConvNormAct) or not isinstance(block.conv_pwl, ConvNormAct):
            raise UsageError("only depthwise-separable inverted residual blocks can be chunked")
        self.depthwise = _ConvPart(block.conv_dw)
        pwl = _ConvPart(block.conv_pwl)
        self.project_weight = nn.Parameter(pwl.weight[:, :, 0, 0].t().contiguous(), requires_grad=False)
        self.project_bias = pwl.bias
        self.project_act = block.conv_pwl.act  # nn.Identity but for a non-linear bottleneck
        self.project_activation = pwl.activation  # the same, in place
        self.has_residual = block.has_residual
        self.hidden = block.hidden_channels
        self.out_channels = block.out_channels
        check_chunks(chunks)
        count = min(self.hidden if chunks == "channel" else int(chunks), self.hidden)
        edges = [round(i * self.hidden / count) for i in range(count + 1)]
        self.bounds = list(itertools.pairwise(edges))

    def scratch_bytes(self, x: torch.Tensor, bytes_per_element: int = 4) -> int:
        """Bytes alive inside the block besides its input and output: the largest chunk's two tensors,
        with TensorFlow "same" padding the zero-padded copy a conv reads beside them, and the
        channels_last copies :meth:`forward` makes of an input that is not channels_last."""
        n, channels, h, w = x.shape
        laid_out = x.is_contiguous(memory_format=torch.channels_last)
        spatial = self._expands_spatially()
        relaid = 0 if laid_out or spatial else n * channels * h * w  # the whole input, copied once
        stride_b = self.expand.stride[0] if self.expand is not None else 1
        h_b, w_b = -(-h // stride_b), -(-w // stride_b)
        stride_n = self.depthwise.stride[0]
        h_n, w_n = -(-h_b // stride_n), -(-w_b // stride_n)
        widest = max(stop - start for start, stop in self.bounds)
        expanded = widest * h_b * w_b if self.expand is not None else 0
        padded_input = channels * _padded_pixels(self.expand, h, w) if self.expand is not None else 0
        # The stem's conv on an NCHW image writes each chunk twice (oneDNN's layout, then NCHW) while
        # its padded copy is alive; the chunk is then copied to channels_last, the NCHW one freed.
        chunk_copy = expanded if spatial and not laid_out else 0
        expanding = expanded + padded_input + chunk_copy
        mixing = expanded + widest * (_padded_pixels(self.depthwise, h_b, w_b) + h_n * w_n)
        return (n * max(expanding, mixing) + relaid) * bytes_per_element

    def _expands_spatially(self) -> bool:
        """Whether the expansion is the network's stem (a strided K×K conv) rather than a 1×1 matrix."""
        return self.expand is not None and self.expand.matrix is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return self._exportable(x)
        spatial = self._expands_spatially()
        if not spatial:  # the 1×1 convs are matrix products over a channels_last tensor's pixels
            x = x.contiguous(memory_format=torch.channels_last)
        out: torch.Tensor | None = None
        flat: torch.Tensor | None = None
        for start, stop in self.bounds:
            hidden = self.expand(x, start, stop) if self.expand is not None else x[:, start:stop]
            if spatial:  # the stem reads the image as it is: each chunk it makes is laid out instead
                hidden = hidden.contiguous(memory_format=torch.channels_last)
            mixed = self.depthwise(hidden, start, stop).contiguous(memory_format=torch.channels_last)
            del hidden
            n, c, h, w = mixed.shape
            rows = mixed.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view of the channels_last tensor
            if flat is None:
                flat = torch.addmm(self.project_bias, rows, self.project_weight[start:stop])
                out = flat.view(n, h, w, self.out_channels).permute(0, 3, 1, 2)
            else:  # in place, so outside autocast's reach: in the accumulator's dtype
                flat.addmm_(rows.to(flat.dtype), self.project_weight[start:stop].to(flat.dtype))
            del mixed, rows
        assert out is not None  # internal invariant: there is at least one chunk
        out = self.project_activation(out)
        if self.has_residual:
            out.add_(x)
        return out

    def _exportable(self, x: torch.Tensor) -> torch.Tensor:
        """The same chunks as plain NCHW convolutions and sums, for ``torch.export``.

        The eager path's channels_last views and in-place matrix products are what PyTorch runs fast;
        an exported graph needs neither, and runtimes with one memory layout per program (ExecuTorch's
        portable kernels) refuse the permutes. The runtime's memory planner frees each chunk once the
        projection has consumed it, so the plan keeps the eager saving.
        """
        out: torch.Tensor | None = None
        weight = self.project_weight.t()[:, :, None, None]  # (C_out, C_hidden, 1, 1)
        for start, stop in self.bounds:
            hidden = self.expand(x, start, stop) if self.expand is not None else x[:, start:stop]
            # contiguous: the export folds this slice into a constant, which ExecuTorch wants dense
            part = F.conv2d(self.depthwise(hidden, start, stop), weight[:, start:stop].contiguous())
            out = part + self.project_bias[:, None, None] if out is None else out + part
        assert out is not None  # internal invariant: there is at least one chunk
        out = self.project_act(out)
        return out + x if self.has_residual else out


def _chunk_all(fused: MobileNet, chunks: Chunks) -> dict[str, tuple[nn.Module, nn.Module]]:
    """Replace every chunkable block of ``fused`` in place; ``{block name: (plain, chunked)}``."""
    replaced: dict[str, tuple[nn.Module, nn.Module]] = {}
    for index, (name, block) in enumerate(list(fused.iter_blocks())):
        if (
            not isinstance(block, InvertedResidual)
            or not block.separable
            or not isinstance(block.se, nn.Identity)
            or isinstance(fused.blocks[int(name.split(".")[1])], ExpansionShortcutStage)
        ):
            continue
        expand: ConvNormAct | None = None
        first_fits = index == 0 and not block.has_residual and not isinstance(block.conv_pw, ConvNormAct)
        if first_fits and isinstance(fused.stem, ConvNormAct):
            expand = fused.stem
            fused.stem = nn.Identity()
        chunked = ChunkedInvertedResidual(block, chunks, expand)
        _set_block(fused, name, chunked)
        replaced[name] = (block, chunked)
    return replaced


def _set_block(model: MobileNet, name: str, module: nn.Module) -> None:
    stage, position = name.split(".")[1:]
    stage_module = model.blocks[int(stage)]
    assert isinstance(stage_module, nn.Sequential)  # internal invariant: blocks.S is a stage
    stage_module[int(position)] = module


def memory_efficient(
    model: MobileNet,
    chunks: Chunks = 4,
    *,
    patches: int = 1,
    patch_stride: int = PATCH_STRIDE,
    resolution: int | None = None,
    only_where_needed: bool = True,
) -> MobileNet:
    """A copy of ``model`` whose inverted residual blocks run in ``chunks`` chunks (or one per channel).

    A block with fewer expanded channels than ``chunks`` runs one chunk per channel (a chunk cannot be
    smaller than a channel).

    BatchNorm is folded; blocks with squeeze-excite are kept as they are. When the first block does
    not expand and has neither squeeze-excite nor a residual (MobileNetV2, EfficientNet-Lite), the
    stem becomes its expansion, so the stem's full-resolution output is chunked too.

    ``only_where_needed`` (default) then relaxes every block that does not need ``chunks`` chunks to
    stay under the chunked network's peak at ``resolution`` (default: the model's): it runs as one
    chunk (its 1×1 convs as matrix products, faster than conv calls at small batches) where that
    fits under the peak, else in its plain form. Chunking the small late blocks would cost time and
    save nothing at the analysed peak.

    ``patches`` > 1 adds spatial tiles (MCUNetV2): the stem and the blocks whose output stride is at
    most ``patch_stride`` (default 4) run on ``patches × patches`` tiles of their output
    (:class:`~mobilenets.deploy.patch_inference.PatchedStem`), and channel chunks apply to the blocks
    after them. The tiles' overlapping receptive fields are computed once per tile: a latency cost.
    """
    check_chunks(chunks)
    check_patches(patches, patch_stride)
    if resolution is not None:
        check_resolution(resolution, minimum=getattr(model, "min_input_size", MIN_INPUT_SIZE))
    fused = fuse(copy.deepcopy(model))
    if not list(fused.iter_blocks()):
        raise UsageError("the model has no blocks to chunk")
    if patches != 1 and fused.features_only:
        raise UsageError(
            "patches apply to classifiers, not features_only models: the patched stem takes over the "
            "first blocks, whose outputs are feature levels; use channel chunks alone (patches=1)"
        )
    size = resolution or fused.default_resolution
    if patches != 1:
        patch_stem(fused, patches, stride=patch_stride, resolution=size)
    replaced = _chunk_all(fused, chunks)
    if not replaced and patches == 1:  # mobilenet_v1, the conv twins, expansion shortcuts: said so
        warnings.warn(
            "memory_efficient: the model has no block to chunk (one that expands and projects, without "
            "squeeze-excite or a shortcut between expansions); it runs as it is, BatchNorm folded",
            UserWarning,
            stacklevel=2,
        )
    if not only_where_needed or not replaced:
        return fused
    # The relaxation runs the schedule at full resolution, several times: refuse a size too big first.
    check_analysis_budget(model, (1, getattr(model, "in_channels", 3), size, size))
    example = probe_image(fused, size)
    live_plain = _block_peaks(fuse(copy.deepcopy(model)), example)
    # Never above the plain schedule's peak either (one chunk keeps a block's input beside its expansion).
    reached = _peak(fused, example)
    peak = min(reached, max(live_plain.values()))
    one_chunk = fuse(copy.deepcopy(model))
    single = {name: chunked for name, (_, chunked) in _chunk_all(one_chunk, 1).items()}
    live_one = _block_peaks(one_chunk, example)
    first = next(iter(replaced))
    names = [name for name, _ in fused.iter_blocks()]
    before = dict(zip(names[1:], names, strict=False))  # each block's predecessor
    made_plain: set[str] = set()
    for name, (plain, chunked) in replaced.items():
        keeps_stem = chunked.expand is not None and name == first and isinstance(fused.stem, nn.Identity)
        if keeps_stem:  # the stem is this block's expansion now; the block cannot go back to plain
            continue
        for live, relaxed in ((live_one, single[name]), (live_plain, plain)):
            if live.get(name, peak + 1) > peak:
                continue
            _set_block(fused, name, relaxed)
            # A block's own peak is the whole story only where the layouts around it are those its
            # estimate assumed. A block made plain can leave NCHW output, which a chunked block after
            # it then copies to channels_last (MobileNetV3's first block), and a block after one made
            # plain may copy its input so: there the whole schedule's peak decides (it must not rise).
            if relaxed is plain or before.get(name) in made_plain:
                after = _peak(fused, example)
                if after > max(peak, reached):
                    _set_block(fused, name, chunked)
                    continue
                reached = after
            if relaxed is plain:
                made_plain.add(name)
            break
    return fused


def _peak(model: MobileNet, example: torch.Tensor) -> int:
    return max(op.live_bytes for op in schedule_memory(model, example))


def _block_peaks(model: MobileNet, example: torch.Tensor) -> dict[str, int]:
    """The most bytes alive during each block (``blocks.S.I``) of ``model``'s schedule on ``example``."""
    peaks: dict[str, int] = {}
    for op in schedule_memory(model, example):
        block = ".".join(op.name.split(".")[:3])
        peaks[block] = max(peaks.get(block, 0), op.live_bytes)
    return peaks


def summarize_memory_efficient(
    model: MobileNet,
    chunks: Chunks = 4,
    *,
    patches: int = 1,
    patch_stride: int = PATCH_STRIDE,
    resolution: int = 224,
    **options: Any,
) -> ModelSummary:
    """:func:`~mobilenets.analysis.summary.summarize` of ``model`` with its peak activation memory taken
    under the chunked (and patched) schedule of :func:`memory_efficient` (``options`` go to
    ``summarize``)."""
    chunked = memory_efficient(
        model, chunks, patches=patches, patch_stride=patch_stride, resolution=resolution
    )
    return summarize(
        model,
        resolution=resolution,
        scheduled_model=chunked,
        memory_efficient=chunks,
        patches=patches,
        **options,
    )
