"""One builder turns an architecture table (:class:`ArchSpec`) and the user's knobs into a model."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import torch
from torch import nn

from ..errors import UsageError, WrongTypeError
from ..layers.activations import check_activation, create_activation
from ..layers.channels import is_real, make_divisible
from ..layers.conv_norm_act import ConvNormAct
from ..layers.inverted_residual import SHORTCUTS, ExpansionShortcutStage, InvertedResidual
from ..layers.norm import NormConfig
from ..layers.padding import PADDING_MODES
from ..layers.whitening import PatchWhitening
from .blocks import make_block
from .config import ArchSpec, check_rate
from .features import FeatureLevel
from .mobilenet import MobileNet, check_num_classes

OUTPUT_STRIDES = (8, 16, 32)
MAX_WIDTH_MULT = 10.0
# small_input drops at most the stem's and the first block's stride: beyond that, CIFAR-sized maps cost
# more than they give (a 32×32 image already ends at 4×4).
MAX_SMALL_INPUT_STRIDES = 2
# Hyperspectral images have a few hundred bands; more input channels than this is a mistake.
MAX_IN_CHANNELS = 1024


def check_width_mult(width_mult: object, *, limit: float = MAX_WIDTH_MULT) -> None:
    """Raise ``ValueError`` unless ``width_mult`` is a number in (0, ``limit``]."""
    if not is_real(width_mult) or not width_mult > 0:
        raise UsageError(f"width_mult must be a positive number, got {width_mult!r}")
    if width_mult > limit:
        raise UsageError(
            f"width_mult={width_mult!r} is absurdly large; expected at most {limit:g} (usually 0.25–2.0)"
        )


def small_input_strides(small_input: bool | int) -> int:
    """How many leading stride-2 layers ``small_input`` runs at stride 1: False → 0, True → 2, or 0, 1, 2."""
    if small_input is True or small_input is False:
        return 2 if small_input else 0
    if isinstance(small_input, int) and 0 <= small_input <= MAX_SMALL_INPUT_STRIDES:
        return small_input
    raise UsageError(
        f"small_input must be True, False or the number of early strides to drop (0, 1 or 2), "
        f"got {small_input!r}"
    )


def _norm_config(norm: NormConfig | str | None, norm_eps: float | None, default: NormConfig) -> NormConfig:
    """``norm`` (a config, a kind name, or None for ``default``) with ``norm_eps`` applied; validated."""
    if norm is None:
        config = default
    elif isinstance(norm, NormConfig):
        config = norm
    elif isinstance(norm, str):
        config = dataclasses.replace(default, kind=norm)  # NormConfig checks the kind
    else:
        raise WrongTypeError(
            f"norm must be a NormConfig, a norm kind name or None, got {type(norm).__name__}"
        )
    if norm_eps is None:
        return config
    if not is_real(norm_eps) or not math.isfinite(norm_eps) or not norm_eps > 0:
        raise UsageError(f"norm_eps must be a positive number, got {norm_eps!r} (finite: 1e-5, 1e-3, ...)")
    return dataclasses.replace(config, eps=float(norm_eps))


def check_build_options(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float | None = None,
    drop_path_rate: float = 0.0,
    output_stride: int = 32,
    dilate: bool = True,
    keep_last_wide: bool | None = None,
    fix_stem: bool | None = None,
    norm: NormConfig | str | None = None,
    norm_eps: float | None = None,
    activation: str | None = None,
    padding: str = "symmetric",
    small_input: bool | int = False,
    features_only: bool = False,
    separable: bool = True,
    projection_activation: str | None = None,
    shortcut: str = "bottleneck",
    zero_init_residual: bool = False,
) -> None:
    """Raise ``UsageError`` for a build option :func:`build_mobilenet` rejects, without building anything.

    The one owner of these rules: :func:`build_mobilenet` calls it, and so does configuration that
    carries build options to fail before any slow work (``TrainConfig`` via
    :func:`~mobilenets.models.registry.check_model_options`). ``width_mult`` is checked apart, by
    :func:`check_width_mult`, because its limit depends on the model. What depends on the architecture
    (``keep_last_wide`` on a network without a last layer, ``out_indices``) is checked while building.
    """
    check_num_classes(num_classes)
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels <= 0:
        raise UsageError(f"in_channels must be a positive integer, got {in_channels!r}")
    if in_channels > MAX_IN_CHANNELS:
        raise UsageError(f"in_channels={in_channels} is absurdly large; expected at most {MAX_IN_CHANNELS}")
    if dropout is not None:
        check_rate("dropout", dropout)
    check_rate("drop_path_rate", drop_path_rate)
    if type(output_stride) is not int or output_stride not in OUTPUT_STRIDES:
        raise UsageError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if not isinstance(dilate, bool):
        raise UsageError(f"dilate must be True or False, got {dilate!r}")
    for name, flag in (("keep_last_wide", keep_last_wide), ("fix_stem", fix_stem)):
        if flag is not None and not isinstance(flag, bool):
            raise UsageError(f"{name} must be True, False or None, got {flag!r}")
    _norm_config(norm, norm_eps, NormConfig())
    check_activation(activation)
    if padding not in PADDING_MODES:
        raise UsageError(f"unknown padding {padding!r}; expected one of {', '.join(PADDING_MODES)}")
    small_input_strides(small_input)
    if not isinstance(features_only, bool):
        raise UsageError(f"features_only must be True or False, got {features_only!r}")
    if not isinstance(separable, bool):
        raise UsageError(f"separable must be True or False, got {separable!r}")
    check_activation(projection_activation)
    if shortcut not in SHORTCUTS:
        raise UsageError(f"unknown shortcut {shortcut!r}; expected one of {', '.join(SHORTCUTS)}")
    if not isinstance(zero_init_residual, bool):
        raise UsageError(f"zero_init_residual must be True or False, got {zero_init_residual!r}")
    if shortcut == "expansion" and features_only:
        raise UsageError(
            "shortcut='expansion' (an ablation arm) has no per-block features; use features_only=False"
        )


def build_mobilenet(
    arch: ArchSpec,
    *,
    width_mult: float = 1.0,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float | None = None,
    drop_path_rate: float = 0.0,
    output_stride: int = 32,
    dilate: bool = True,
    keep_last_wide: bool | None = None,
    fix_stem: bool | None = None,
    norm: NormConfig | str | None = None,
    norm_eps: float | None = None,
    activation: str | None = None,
    padding: str = "symmetric",
    small_input: bool | int = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    separable: bool = True,
    projection_activation: str | None = None,
    shortcut: str = "bottleneck",
    zero_init_residual: bool = False,
    pretrained: bool | str = False,
) -> MobileNet:
    """Build ``arch`` scaled by ``width_mult``.

    Channels of every layer are ``make_divisible(channels × width_mult)``. ``output_stride`` 8 or 16 turns
    the later stride-2 blocks into stride 1 and dilates the blocks after them, keeping the receptive field
    (segmentation backbones); ``dilate=False`` only drops those strides, as CIFAR variants that keep a
    4×4 final map do (and trains faster on CPUs, where a dilated depthwise convolution's backward takes
    a slow path: ``benchmarks/train_profile.py``). ``keep_last_wide`` (default: the architecture's
    choice) keeps the last layer at its full width when ``width_mult < 1``, as the v2 paper does;
    ``fix_stem`` (default: the architecture's choice) keeps the stem at its table width at every
    ``width_mult``, as timm's MobileNetV3 does below width 0.75 and Keras's at any width.
    ``activation`` replaces the activation of every stem, block and head layer (squeeze-excite keeps
    its own); ``norm`` replaces its normalization
    ("batchnorm", "groupnorm", "none" or a :class:`NormConfig`); ``norm_eps`` overrides its epsilon
    alone (timm's PyTorch-trained ports of TF models use 1e-5 where the TF originals use 1e-3).
    ``padding="tf_same"`` reproduces TensorFlow's SAME padding for checkpoints trained there. Stochastic
    depth grows linearly to ``drop_path_rate`` over the blocks. ``zero_init_residual`` starts the scale
    of the last norm of every residual branch at zero, so each residual block begins as the identity
    (torchvision's ResNet option of that name; timm's ``zero_init_last``; Goyal et al. 2017).

    ``small_input`` adapts the network to tiny images such as CIFAR's 32×32, as the CIFAR variants of
    MobileNet do, by running its first stride-2 layers at stride 1. ``True`` (or 2) does so for the stem
    and the first downsampling block: the network reduces its input 8× instead of 32×, so a 32×32 image
    ends at 4×4, not 1×1 (10–15× the mult-adds). ``1`` does so for the stem alone: 16×, ending at 2×2,
    at about a quarter of that cost. Weights are unchanged in shape either way.

    Ablation switches, each undoing one design choice of the seed with everything else equal
    (``mobilenets ablate``): ``separable=False`` builds the standard-convolution twin
    (:func:`standard_conv_twin`); ``projection_activation`` puts an activation on the inverted
    residuals' projection (a non-linear bottleneck); ``shortcut`` moves their skips between the
    expanded layers (``"expansion"``, within each stage) or removes them (``"none"``).
    """
    if pretrained is not False and pretrained is not None:
        raise UsageError(
            f"build_mobilenet builds {arch.name} from its table; pretrained weights load through the "
            f"registered builder or create_model({arch.name!r}, pretrained=True)"
        )
    dropout = arch.dropout if dropout is None else dropout
    check_width_mult(width_mult)
    check_build_options(
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        drop_path_rate=drop_path_rate,
        output_stride=output_stride,
        dilate=dilate,
        keep_last_wide=keep_last_wide,
        fix_stem=fix_stem,
        norm=norm,
        norm_eps=norm_eps,
        activation=activation,
        padding=padding,
        small_input=small_input,
        features_only=features_only,
        separable=separable,
        projection_activation=projection_activation,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
    )
    has_ir = any(spec.kind == "ir" for spec in arch.blocks)
    ir_only = projection_activation is not None or shortcut != "bottleneck" or zero_init_residual
    if not has_ir and (ir_only or drop_path_rate):
        raise UsageError(
            f"{arch.name} has no inverted residual blocks, so projection_activation, shortcut, "
            "zero_init_residual and drop_path_rate (stochastic depth on residual branches) do not apply"
        )
    if zero_init_residual and shortcut != "bottleneck":  # it would zero nothing, without a word
        raise UsageError(
            f"zero_init_residual starts each bottleneck shortcut's branch at zero; shortcut={shortcut!r} "
            "has none (use it with shortcut='bottleneck')"
        )
    if zero_init_residual and projection_activation is not None:
        at_zero = create_activation(projection_activation)(torch.zeros(1))
        if at_zero.item() != 0:  # sigmoid's 0.5: the branch would not start at zero
            raise UsageError(
                f"zero_init_residual starts each residual branch at zero, but projection_activation="
                f"{projection_activation!r} maps zero to {at_zero.item():g}; drop one of the two"
            )
    if drop_path_rate and shortcut == "none":
        raise UsageError("drop_path_rate drops residual branches; shortcut='none' has none")
    if not separable:
        arch = standard_conv_twin(arch)
    strides_to_drop = small_input_strides(small_input)
    has_last_layer = any(
        value is not None for value in (arch.head_channels, arch.head_ratio, arch.pre_logits_features)
    )
    if keep_last_wide is False and has_last_layer and not arch.scale_last:  # given, not the default
        raise UsageError(
            f"{arch.name}'s last layer keeps its width at every width_mult (the architecture's), so "
            "keep_last_wide=False cannot apply"
        )
    keep_last_wide = arch.keep_last_wide if keep_last_wide is None else keep_last_wide
    if fix_stem is False and not arch.scale_stem:  # given, not the default
        raise UsageError(
            f"{arch.name}'s stem keeps its width at every width_mult (the architecture's), so "
            "fix_stem=False cannot apply"
        )
    scale_stem = arch.scale_stem if fix_stem is None else not fix_stem
    if keep_last_wide and not has_last_layer:
        raise UsageError(f"{arch.name} has no separate last layer, so keep_last_wide cannot apply")
    norm_config = _norm_config(norm, norm_eps, arch.norm)

    def act(name: str) -> str:
        return activation if activation is not None else name

    def scale(channels: int) -> int:
        return make_divisible(channels * width_mult)

    def scale_last(channels: int) -> int:
        if not arch.scale_last:
            return channels
        return make_divisible(channels * (max(1.0, width_mult) if keep_last_wide else width_mult))

    # small_input: the first `strides_to_drop` stride-2 positions (stem first) keep full resolution.
    def table_stride(stride: int) -> int:
        nonlocal strides_to_drop
        if stride > 1 and strides_to_drop > 0:
            strides_to_drop -= 1
            return 1
        return stride

    stem_stride = table_stride(arch.stem_stride)
    stem: nn.Module
    if arch.stem_whitening:  # fitted to the data, so its width is the data's: 2 × in_channels × k²
        stem = PatchWhitening(in_channels, arch.stem_kernel_size, activation=act(arch.stem_activation))
        stem_channels = stem.out_channels
    else:
        stem_channels = scale(arch.stem_channels) if scale_stem else arch.stem_channels
        stem = ConvNormAct(
            in_channels,
            stem_channels,
            arch.stem_kernel_size,
            stride=stem_stride,
            activation=act(arch.stem_activation),
            norm=norm_config,
            padding=padding,
        )

    total_blocks = sum(spec.repeats for spec in arch.blocks)
    raw_strides = [stem_stride]  # stride of each position (stem, then blocks) before dilation
    reductions = [stem_stride]  # stride to the input after each position, after dilation
    names = ["stem"]
    current_stride, dilation, block_index = stem_stride, 1, 0
    channels = stem_channels
    stages: list[nn.Sequential] = []
    for stage_index, spec in enumerate(arch.blocks):
        out_channels = scale(spec.out_channels)
        stage: list[nn.Module] = []
        for repeat in range(spec.repeats):
            stride = table_stride(spec.stride) if repeat == 0 else 1
            raw_strides.append(stride)
            block_dilation = dilation
            if stride > 1:
                if current_stride * stride > output_stride:
                    dilation *= stride if dilate else 1
                    stride = 1
                else:
                    current_stride *= stride
            stage.append(
                make_block(
                    spec,
                    channels,
                    out_channels,
                    stride=stride,
                    dilation=block_dilation,
                    activation=act(spec.activation),
                    se_gate=arch.se_gate,
                    norm=norm_config,
                    padding=padding,
                    drop_path_rate=drop_path_rate * block_index / total_blocks,
                    projection_activation=projection_activation,
                    shortcut=shortcut,
                )
            )
            reductions.append(current_stride)
            names.append(f"blocks.{stage_index}.{repeat}")
            channels = out_channels
            block_index += 1
        grouped = shortcut == "expansion" and all(isinstance(block, InvertedResidual) for block in stage)
        stages.append(ExpansionShortcutStage(*stage) if grouped else nn.Sequential(*stage))
    if shortcut == "expansion" and not any(
        isinstance(stage, ExpansionShortcutStage) and stage.skips for stage in stages
    ):
        raise UsageError(
            f"shortcut='expansion' on {arch.name}: no two consecutive blocks of a stage have matching "
            "expansions, so the network would have no shortcut at all (shortcut='none' builds that); "
            "choose another model"
        )

    position_channels = [stem_channels] + [
        scale(spec.out_channels) for spec in arch.blocks for _ in range(spec.repeats)
    ]
    feature_info = [
        FeatureLevel(module=names[p], num_chs=position_channels[p], reduction=reductions[p])
        for p in range(len(names))
        if p == len(names) - 1 or raw_strides[p + 1] > 1
    ]

    conv_head: nn.Module = nn.Identity()
    pre_logits: nn.Module = nn.Identity()
    num_features = channels
    if not features_only:
        has_pre_logits = arch.pre_logits_features is not None
        if arch.head_ratio is not None or arch.head_channels is not None:
            if arch.head_ratio is not None:
                head_channels = arch.head_ratio * channels
            elif has_pre_logits:
                head_channels = scale(arch.head_channels or 0)
            else:
                head_channels = scale_last(arch.head_channels or 0)
            conv_head = ConvNormAct(
                channels,
                head_channels,
                1,
                activation=act(arch.head_activation),
                norm=norm_config,
                padding=padding,
            )
            num_features = head_channels
        head_hidden_size = num_features
        if arch.pre_logits_features is not None:
            head_hidden_size = scale_last(arch.pre_logits_features)
            pre_logits = nn.Sequential(
                OrderedDict(
                    fc=nn.Linear(num_features, head_hidden_size),
                    act=create_activation(act(arch.pre_logits_activation)),
                )
            )
    else:
        num_classes, head_hidden_size = 0, channels

    model = MobileNet(
        stem=stem,
        blocks=nn.Sequential(*stages),
        conv_head=conv_head,
        pre_logits=pre_logits,
        num_features=num_features,
        head_hidden_size=head_hidden_size,
        num_classes=num_classes,
        dropout=dropout,
        in_channels=in_channels,
        feature_info=feature_info,
        features_only=features_only,
        out_indices=out_indices,
        default_resolution=arch.default_resolution,
        architecture=arch.name,
        torch_init=arch.torch_init,
    )
    if features_only and max(model.out_indices) < len(model.feature_info) - 1:
        # Blocks after the deepest level returned would never run: dropped, not kept as dead weights
        # (no gradient, which DDP refuses, and counted in the parameters). feature_info ends there too.
        model.prune_intermediate_layers(list(model.out_indices))
    if zero_init_residual:
        for block in model.modules():
            if isinstance(block, InvertedResidual) and block.has_residual:
                block.zero_init_last()
    return model


def standard_conv_twin(arch: ArchSpec) -> ArchSpec:
    """The same network with every depthwise separable pair replaced by one dense K×K conv.

    MobileNet v1: each depthwise + pointwise pair becomes a full K×K conv (the v1 paper's Table 4
    "Conv MobileNet"). Inverted residuals: the depthwise K×K + 1×1 projection pair (itself a depthwise
    separable conv) becomes one dense K×K conv from the expanded width to the output, linear as the
    projection was; the expansion and the residual stay. Squeeze-excite, which sits inside that pair, is
    dropped; a pooled separable block's gate, on its output, stays. The twin isolates exactly what
    depthwise separability saves.
    """
    twin_blocks = tuple(
        dataclasses.replace(spec, kind="conv")
        if spec.kind == "ds"
        else dataclasses.replace(
            spec, separable=False, se=spec.se and spec.kind == "sep", depthwise_last=False
        )
        if spec.kind in ("ir", "sep")
        else spec
        for spec in arch.blocks
    )
    return dataclasses.replace(arch, name=f"conv_{arch.name}", blocks=twin_blocks)
