"""Shared plumbing of the per-project key maps: a block's parts in order, and module → tensor keys.

Each source (torchvision, timm, EfficientNet-Lite) says which of *its* modules holds each of *our*
modules, as ``(our module, their module)`` pairs; :func:`expand` turns those into a tensor-level
``{their key: our key}`` map. Conv + norm units on our side are one module (``ConvNormAct``: ``.conv``
and ``.bn``); elsewhere they are usually two siblings, hence :func:`conv_norm`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from ..errors import UsageError
from ..layers.conv_norm_act import ConvNormAct
from ..layers.inverted_residual import InvertedResidual
from ..layers.separable import DepthwiseSeparableConv
from ..layers.squeeze_excite import SqueezeExcite
from ..models.mobilenet import MobileNet

ModulePairs = list[tuple[str, str]]


def conv_norm(ours: str, conv: str, norm: str) -> ModulePairs:
    """Our ``ConvNormAct`` at ``ours`` held by a conv module ``conv`` and a norm module ``norm``."""
    return [(f"{ours}.conv", conv), (f"{ours}.bn", norm)]


def squeeze_excite(ours: str, reduce: str, expand: str) -> ModulePairs:
    """Our ``SqueezeExcite`` at ``ours``: its two 1×1 convs held by ``reduce`` and ``expand``."""
    return [(f"{ours}.fc1", reduce), (f"{ours}.fc2", expand)]


def block_parts(block: nn.Module) -> list[str]:
    """The weighted sub-modules of a separable block in forward order (absent parts left out).

    An inverted residual gives ``conv_pw`` (only when it expands), ``conv_dw``, ``se`` (when it has
    one) and ``conv_pwl``; a v1 depthwise-separable block gives ``conv_dw`` and ``conv_pw``.
    """
    if isinstance(block, DepthwiseSeparableConv):
        return ["conv_dw", "conv_pw"]
    if not isinstance(block, InvertedResidual) or not block.separable:
        raise UsageError(
            f"no foreign key layout for {type(block).__name__} blocks; only depthwise-separable blocks "
            "(MobileNet v1/v2/v3, EfficientNet-Lite) have one"
        )
    parts = ["conv_pw"] if isinstance(block.conv_pw, ConvNormAct) else []
    parts.append("conv_dw")
    if isinstance(block.se, SqueezeExcite):
        parts.append("se")
    return [*parts, "conv_pwl"]


def numbered_prefixes(keys: Iterable[str], pattern: str) -> list[str]:
    """Distinct prefixes of ``keys`` matching ``pattern`` (digits in groups), in numeric order.

    ``numbered_prefixes(keys, r"blocks\\.(\\d+)\\.(\\d+)")`` gives ``["blocks.0.0", "blocks.1.0", ...]``.
    """
    regex = re.compile(f"^({pattern})\\.")
    found: dict[str, tuple[int, ...]] = {}
    for key in keys:
        match = regex.match(key)
        if match:
            found[match.group(1)] = tuple(int(g) for g in match.groups()[1:])
    return sorted(found, key=found.__getitem__)


def check_block_count(model: MobileNet, theirs: list[str], source: str) -> None:
    """Refuse weights with another number of blocks; a backbone cut short after the feature levels it
    returns (``features_only``) takes the first blocks of a whole network's."""
    ours = sum(1 for _ in model.iter_blocks())
    if len(theirs) != ours and not (model.features_only and len(theirs) > ours):
        raise UsageError(
            f"the {source} weights have {len(theirs)} blocks, the model has {ours}: they are weights of "
            "another architecture or depth (check --model and --width-mult)"
        )


def expand(model: MobileNet, pairs: ModulePairs) -> dict[str, str]:
    """``{their tensor key: our tensor key}`` for every tensor directly inside the paired modules."""
    ours_keys = list(model.state_dict())
    mapping: dict[str, str] = {}
    for ours, theirs in pairs:
        for key in ours_keys:
            if key.startswith(ours + ".") and key.count(".") == ours.count(".") + 1:
                mapping[theirs + key[len(ours) :]] = key
    return mapping
