"""The one network class every MobileNet-family builder returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import UsageError, WrongTypeError
from ..layers.inverted_residual import ExpansionShortcutStage
from ..layers.whitening import PatchWhitening
from .data_config import data_config
from .features import FeatureInfo, FeatureLevel, Indices, take_indices

# Smallest input side: every model reduces its input 32× (before ``small_input``), so 32 leaves 1×1.
# A network with strides dropped (``small_input``, ``output_stride``) takes down to its own total
# stride (``MobileNet.min_input_size``), the size progressive resizing trains small images at.
MIN_INPUT_SIZE = 32
# Largest input side that analysis (``summarize``) and training accept: beyond it the activations of
# one image alone run into gigabytes, and an absurd value must fail clearly, not try to allocate them.
MAX_INPUT_SIZE = 4096
# Largest classifier: ImageNet-21k has 21,841 classes; 100,000 × 1,280 features is already 0.5 GB.
MAX_NUM_CLASSES = 100_000


def check_resolution(value: object, *, name: str = "resolution", minimum: int = MIN_INPUT_SIZE) -> int:
    """``value`` if it is an input side (pixels) the models take, else a ``UsageError`` naming ``name``.

    The one rule for every resolution option (training, data, analysis, export, benchmarks): an integer
    from :data:`MIN_INPUT_SIZE` (or ``minimum``: a network's own ``min_input_size``) to
    :data:`MAX_INPUT_SIZE`. Callers pass their own option name (a flag such as ``--resolution``, or a
    field such as ``img_size``) so the message names what the user typed.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INPUT_SIZE:
        raise UsageError(
            f"{name} must be an integer from {minimum} to {MAX_INPUT_SIZE} pixels, got {value!r}"
        )
    return value


def check_num_classes(num_classes: object) -> None:
    """``ValueError`` unless ``num_classes`` is an integer in [0, MAX_NUM_CLASSES] (0: no classifier)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise UsageError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    if num_classes > MAX_NUM_CLASSES:
        raise UsageError(f"num_classes={num_classes} is absurdly large; expected at most {MAX_NUM_CLASSES:,}")


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta)
        return False


M = TypeVar("M", bound=nn.Module)


class MobileNet(nn.Module):
    """stem → blocks (stages of blocks) → conv_head → pooling → pre_logits → dropout → classifier.

    Every model in the package is this class, built from an architecture table by
    :func:`mobilenets.models.builder.build_mobilenet`. The interface follows timm's:

    - ``forward_features(x)``: the final spatial feature map (after ``conv_head``).
    - ``forward_head(features, pre_logits=False)``: pooled logits, or the classifier's input.
    - ``forward_intermediates(x, indices=None, ...)``: the feature maps at ``feature_info``'s levels
      (reductions 2..32), for detection and segmentation backbones, with timm's keywords and return
      forms; ``features_only=True`` makes ``forward`` return them; ``prune_intermediate_layers``.
    - ``feature_info``: a :class:`~mobilenets.models.features.FeatureInfo` (``.channels()``, ...).
    - ``get_classifier()``, ``reset_classifier(num_classes)``.
    - ``pretrained_cfg`` (alias ``default_cfg``): the input the model expects, which
      ``timm.data.resolve_data_config(model=m)`` reads.

    Input checks are skipped under tracing (``torch.jit.trace``, ``torch.fx``), so
    ``torch.fx.symbolic_trace`` and torchvision's ``create_feature_extractor`` work.
    """

    # Python-side records that TorchScript neither needs nor can type (dicts of mixed values).
    __jit_ignored_attributes__ = ("card", "pretrained_cfg", "feature_info")
    __constants__ = ("features_only",)
    __jit_unused_properties__ = ("default_cfg", "total_stride", "min_input_size")

    def __init__(
        self,
        *,
        stem: nn.Module,
        blocks: nn.Sequential,
        conv_head: nn.Module,
        pre_logits: nn.Module,
        num_features: int,
        head_hidden_size: int,
        num_classes: int,
        dropout: float,
        in_channels: int,
        feature_info: list[FeatureLevel],
        features_only: bool = False,
        out_indices: tuple[int, ...] | None = None,
        default_resolution: int = 224,
        architecture: str = "",
        torch_init: bool = False,
    ) -> None:
        super().__init__()
        self.torch_init = torch_init
        self.in_channels = in_channels
        self.default_resolution = default_resolution
        self.num_features = num_features
        self.head_hidden_size = head_hidden_size
        # What the weights were trained on: set by mobilenets.weights when it loads pretrained weights.
        self.card: Any = None
        self.stem = stem
        self.blocks = blocks
        self.conv_head = conv_head
        self.global_pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.pre_logits = pre_logits
        self.dropout = nn.Dropout(dropout)
        self.num_classes = num_classes
        self.classifier: nn.Module = (
            nn.Linear(head_hidden_size, num_classes) if num_classes else nn.Identity()
        )
        self.features_only = features_only
        self._set_feature_levels(feature_info, self._check_out_indices(out_indices, len(feature_info)))
        self.pretrained_cfg: dict[str, Any] = data_config(
            architecture=architecture,
            resolution=default_resolution,
            num_classes=num_classes,
            in_channels=in_channels,
            total_stride=self.total_stride,
        )
        if not torch_init:
            init_weights(self)

    @staticmethod
    def _check_out_indices(out_indices: tuple[int, ...] | None, levels: int) -> tuple[int, ...]:
        if out_indices is None:
            return tuple(range(levels))
        if not isinstance(out_indices, tuple | list):
            raise UsageError(
                f"out_indices must be a tuple of indices into the {levels} feature levels, "
                f"got {out_indices!r}"
            )
        indices = tuple(out_indices)
        bad = [i for i in indices if type(i) is not int or not -levels <= i < levels]
        if bad or not indices:
            raise UsageError(f"out_indices {out_indices!r} must be indices into the {levels} feature levels")
        levels_named = sorted(i % levels for i in indices)
        if len(set(levels_named)) != len(levels_named):  # forward returns each level once
            raise UsageError(f"out_indices {out_indices!r} name a feature level twice (of {levels})")
        return tuple(levels_named)

    def _set_feature_levels(self, levels: list[FeatureLevel], out_indices: tuple[int, ...]) -> None:
        sequence_names = ["stem"] + [name for name, _ in self.iter_blocks()]
        unknown = [level.module for level in levels if level.module not in sequence_names]
        if unknown:
            raise UsageError(f"feature_info names modules outside stem/blocks: {unknown}")
        self.feature_info = FeatureInfo(levels, out_indices)
        self.out_indices = self.feature_info.out_indices
        self._total_stride = max(level.reduction for level in levels)
        self._level_positions = [sequence_names.index(level.module) for level in levels]

    @property
    def total_stride(self) -> int:
        """How much smaller than the input the final feature map is (32 for the papers' networks)."""
        return self._total_stride

    @property
    def min_input_size(self) -> int:
        """The smallest input side this network takes: its total stride (32 for the papers' networks,
        less with strides dropped), which leaves a 1×1 final map, never more than 32; plus what an
        unpadded stem trims (a k×k whitening stem: k - 1 pixels)."""
        trimmed = self.stem.kernel_size - 1 if isinstance(self.stem, PatchWhitening) else 0
        return min(MIN_INPUT_SIZE, self.total_stride) + trimmed

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name for :attr:`pretrained_cfg`."""
        return self.pretrained_cfg

    @torch.jit.unused
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming what was expected unless ``x`` is a floating-point tensor of shape
        (N, in_channels, H, W), H and W at least :attr:`min_input_size` (32 unless strides were dropped),
        in the dtype of the model's parameters (any, under autocast)."""
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing: no values to check
            return
        if not isinstance(x, torch.Tensor):
            raise WrongTypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise UsageError(
                f"expected a floating-point input (e.g. images scaled and normalised as float32), "
                f"got dtype {x.dtype}"
            )
        weight = next(self.parameters(), None)
        if (
            weight is not None
            and weight.is_floating_point()
            and x.dtype != weight.dtype
            and not _autocast_enabled(x.device.type)
        ):
            raise UsageError(
                f"input dtype {x.dtype} does not match the model's {weight.dtype}; convert one of them "
                f"(x.to({weight.dtype}) or model.to({x.dtype})) or run under torch.autocast"
            )
        if x.dim() != 4:
            raise UsageError(
                f"expected a 4-D input of shape (N, {self.in_channels}, H, W), got {x.dim()}-D shape "
                f"{tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise UsageError(
                f"expected {self.in_channels} input channels, shape (N, {self.in_channels}, H, W); got "
                f"shape {tuple(x.shape)}"
            )
        minimum = self.min_input_size
        if x.shape[2] < minimum or x.shape[3] < minimum:
            raise UsageError(
                f"input is {x.shape[2]}×{x.shape[3]}; this MobileNet needs at least {minimum}×{minimum} "
                + ("(its total stride)" if minimum == self.total_stride else "(its total stride and stem)")
            )

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """Every block with its name (``blocks.STAGE.INDEX``), in execution order."""
        for stage_index, stage in enumerate(self.blocks.children()):
            for block_index, block in enumerate(stage.children()):
                yield f"blocks.{stage_index}.{block_index}", block

    def _sequence(self) -> list[nn.Module]:
        """Stem and every block in execution order: the positions ``feature_info`` refers to.

        Run one by one, the blocks of a ``shortcut="expansion"`` stage would lose the shortcuts their
        stage adds between them, so such a network has no per-block features (as the builder says of
        ``features_only``)."""
        if any(isinstance(stage, ExpansionShortcutStage) for stage in self.blocks.children()):
            raise UsageError(
                "shortcut='expansion' (an ablation arm) has no per-block features: its shortcuts join "
                "blocks inside each stage; use forward_features or a model with shortcut='bottleneck'"
            )
        return [self.stem, *(block for _, block in self.iter_blocks())]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature maps at the levels ``indices`` selects, with timm's keywords and return forms.

        ``indices``: ``None`` for every level of ``feature_info``, an int ``n`` for the last ``n``, or a
        sequence of level indices. Returns ``(final, intermediates)``: ``final`` is the output of
        ``conv_head`` when every block ran, else of the last block run (``stop_early=True`` stops after
        the deepest level asked for). ``intermediates_only=True`` returns the list alone. ``norm`` is
        accepted for timm's signature: these networks have no norm outside their blocks and head.
        Only ``output_fmt="NCHW"`` exists.
        """
        if output_fmt != "NCHW":
            raise UsageError(f"output_fmt {output_fmt!r} is not supported; these models give 'NCHW' maps")
        if not torch.jit.is_tracing():
            self.check_input(x)
        wanted = [self._level_positions[i] for i in take_indices(len(self.feature_info), indices)]
        sequence = self._sequence()
        last = wanted[-1] if stop_early or intermediates_only else len(sequence) - 1
        last = max(last, *wanted)
        intermediates: list[torch.Tensor] = []
        for position, module in enumerate(sequence[: last + 1]):
            x = module(x)
            if position in wanted:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if last == len(sequence) - 1:
            x = self.conv_head(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: Indices = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop what the feature levels ``indices`` do not need; return their absolute indices (timm's API).

        Blocks after the deepest level asked for are removed, with ``conv_head``, pooling's classifier
        (``prune_head``) and ``pre_logits``; ``feature_info`` keeps the levels up to that one, so the
        returned indices work in :meth:`forward_intermediates`. ``prune_norm`` is accepted for timm's
        signature (no separate norm here).
        """
        taken = take_indices(len(self.feature_info), indices)
        deepest = max(taken)
        keep = self._level_positions[deepest]  # blocks to keep: the level's position in stem + blocks
        truncated = keep < len(self._sequence()) - 1
        stages = []
        position = 0
        for stage in self.blocks.children():
            if position >= keep:
                break
            count = min(len(stage), keep - position)  # type: ignore[arg-type]
            stages.append(stage[:count])  # type: ignore[index]
            position += count
        self.blocks = nn.Sequential(*stages)
        channels = self.feature_info[deepest].num_chs
        if prune_head or prune_norm or truncated:
            self.conv_head = nn.Identity()
            self.pre_logits = nn.Identity()
            self.num_features = self.head_hidden_size = channels
            if not self.features_only:  # (a backbone has no classifier to remove)
                self.reset_classifier(0)
        levels = list(self.feature_info)[: deepest + 1]
        self._set_feature_levels(levels, tuple(i for i in self.out_indices if i <= deepest) or (deepest,))
        return taken

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final spatial feature map, (N, num_features, H/32, W/32) at the default output stride."""
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():  # a trace would warn
            self.check_input(x)
        if torch.jit.is_scripting():  # noqa: SIM114 (alone, so TorchScript compiles this branch only)
            x = self.blocks(self.stem(x))
        elif self.blocks._forward_hooks or self.blocks._forward_pre_hooks:  # hooks on the whole: call it
            x = self.blocks(self.stem(x))
        else:
            # One stage at a time in this frame, not ``blocks(stem(x))``: a Python call keeps its argument
            # alive until it returns, and the stem's output stayed in memory through every block (fused
            # mobilenet_v2 at 224: 8.73 MB allocated at the peak, 7.13 MB this way; 6.02 MB analysed).
            x = self.stem(x)
            for stage in self.blocks:
                x = stage(x)
        return self.conv_head(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the feature map and classify; ``pre_logits=True`` returns the classifier's input."""
        x = self.pre_logits(self.global_pool(x))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)  # type: ignore[return-value]
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final classifier (``nn.Identity`` when there is none)."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0 removes it).

        ``global_pool`` follows timm: ``"avg"`` pools (the default), ``""`` keeps the spatial map.
        """
        if self.features_only:
            raise UsageError(
                "a features_only model returns feature maps and has no classifier to reset; build it "
                "without features_only to classify"
            )
        check_num_classes(num_classes)
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise UsageError(f"global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
            if not global_pool and not isinstance(self.pre_logits, nn.Identity):
                raise UsageError(
                    "global_pool='' keeps the spatial map, but this model's pre_logits layer (Linear) "
                    "needs pooled features; keep global_pool='avg'"
                )
        pooled = (
            bool(global_pool) if global_pool is not None else not isinstance(self.global_pool, nn.Identity)
        )
        if num_classes and not pooled:
            raise UsageError(
                f"a {num_classes}-class classifier (Linear) needs pooled features, but global_pool='' keeps "
                "the spatial map; pass global_pool='avg', or num_classes=0 to keep the map"
            )
        if global_pool is not None:
            pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            self.global_pool = pool if global_pool else nn.Identity()
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}
        self.num_classes = num_classes
        if num_classes:
            classifier = nn.Linear(self.head_hidden_size, num_classes)
            self.classifier = classifier if self.torch_init else init_weights(classifier)
        else:
            self.classifier = nn.Identity()


def init_weights(model: M) -> M:
    """The builders' initialisation (torchvision's): He-normal (fan-out) convs, unit norms, N(0, 0.01)
    classifiers, zero biases; returns ``model``. Frozen convs (fitted to data, such as a whitening stem)
    keep their weights. Tables with ``torch_init`` keep the layers' own defaults instead."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.weight.requires_grad:
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
    return model
