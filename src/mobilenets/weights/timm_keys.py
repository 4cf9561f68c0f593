"""Key map between timm's MobileNet / EfficientNet state_dicts and ours.

timm names the parts of a block the way we do, but keeps conv and norm as siblings (``conv_pw`` +
``bn1``) and groups blocks into its own stages (``blocks.S.I``; its v1 has 5 stages, ours 9), so blocks
are paired in flat order:

=========================  =====================================  =====================================
ours                       timm inverted residual                 timm depthwise-separable (no expansion)
=========================  =====================================  =====================================
``stem``                   ``conv_stem`` + ``bn1``                same
``conv_pw``                ``conv_pw`` + ``bn1``                  —
``conv_dw``                ``conv_dw`` + ``bn2``                  ``conv_dw`` + ``bn1``
``se.fc1`` / ``se.fc2``    ``se.conv_reduce`` / ``se.conv_expand``  same
``conv_pwl`` (v1 conv_pw)  ``conv_pwl`` + ``bn3``                 ``conv_pw`` + ``bn2``
``conv_head``              ``conv_head`` + ``bn2``                (v3: a last block ``conv`` + ``bn1``)
``pre_logits.fc`` (v3)     ``conv_head`` (a 1×1 conv with bias, reshaped)
``classifier``             ``classifier``
=========================  =====================================  =====================================
"""

from __future__ import annotations

from collections.abc import Collection

from torch import nn

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

# our part → (timm conv, timm norm): an expanding inverted residual, and timm's DepthwiseSeparableConv
# (no expansion), whose pointwise conv is our projection (or a v1 block's conv_pw).
_EXPANDED = {"conv_pw": ("conv_pw", "bn1"), "conv_dw": ("conv_dw", "bn2"), "conv_pwl": ("conv_pwl", "bn3")}
_SEPARABLE = {"conv_dw": ("conv_dw", "bn1"), "conv_pw": ("conv_pw", "bn2"), "conv_pwl": ("conv_pw", "bn2")}


def timm_module_map(model: MobileNet, keys: Collection[str]) -> ModulePairs:
    """(our module, timm module) pairs, with timm's block names read from its state_dict ``keys``."""
    theirs = numbered_prefixes(keys, r"blocks\.(\d+)\.(\d+)")
    # v3's last timm "block" is its head conv (a ConvBnAct: ``.conv``), our conv_head: told by the keys,
    # not by our model, whose head a features_only backbone lacks.
    head_block = theirs[-1] if theirs and f"{theirs[-1]}.conv.weight" in keys else None
    check_block_count(model, theirs[:-1] if head_block else theirs, "timm")
    pairs = conv_norm("stem", "conv_stem", "bn1")
    for (name, block), prefix in zip(model.iter_blocks(), theirs, strict=False):
        parts = block_parts(block)
        names = _EXPANDED if parts[0] == "conv_pw" and "conv_pwl" in parts else _SEPARABLE
        for part in parts:
            if part == "se":
                pairs += squeeze_excite(f"{name}.se", f"{prefix}.se.conv_reduce", f"{prefix}.se.conv_expand")
            else:
                conv, norm = names[part]
                pairs += conv_norm(f"{name}.{part}", f"{prefix}.{conv}", f"{prefix}.{norm}")
    if head_block:
        pairs += conv_norm("conv_head", f"{head_block}.conv", f"{head_block}.bn1")
        pairs += [("pre_logits.fc", "conv_head")]
    elif not isinstance(model.conv_head, nn.Identity):
        pairs += conv_norm("conv_head", "conv_head", "bn2")
    pairs += [("classifier", "classifier")]
    return pairs


def timm_key_map(model: MobileNet, keys: Collection[str]) -> dict[str, str]:
    """timm state_dict key → our state_dict key."""
    return expand(model, timm_module_map(model, keys))
