"""Key map between torchvision's MobileNet v2/v3 state_dicts and ours.

torchvision stores blocks flat (``features.N``) and unnamed (``conv.0.0``); ours are nested by stage and
named (``blocks.S.I.conv_dw.conv``). The architectures coincide, so the map is one-to-one:

=====================================  ==================================  ==================================
ours                                   torchvision mobilenet_v2             torchvision mobilenet_v3_*
=====================================  ==================================  ==================================
``stem.conv`` / ``stem.bn``            ``features.0.0`` / ``features.0.1``  same
block N (flat, from 1) ``conv_pw``     ``features.N.conv.0.{0,1}``          ``features.N.block.0.{0,1}``
``conv_dw``                            ``features.N.conv.J.{0,1}``          ``features.N.block.J.{0,1}``
``se.fc1`` / ``se.fc2``                —                                    ``features.N.block.J.fc{1,2}``
``conv_pwl.conv`` / ``conv_pwl.bn``    ``features.N.conv.J`` / ``.J+1``     ``features.N.block.J.{0,1}``
``conv_head``                          ``features.last.{0,1}``              same
``pre_logits.fc``                      —                                    ``classifier.0``
``classifier``                         ``classifier.1``                     ``classifier.3``
=====================================  ==================================  ==================================

J counts the parts present in the block (no ``conv_pw`` when the expansion is 1, no SE in most blocks).
"""

from __future__ import annotations

from collections.abc import Collection

from torch import nn

from ..errors import UsageError
from ..layers.inverted_residual import InvertedResidual
from ..models.mobilenet import MobileNet
from .keymap import ModulePairs, block_parts, conv_norm, expand, squeeze_excite


def torchvision_module_map(model: MobileNet, keys: Collection[str] | None = None) -> ModulePairs:
    """(our module prefix, torchvision module prefix) pairs for a MobileNet v2 or v3 built here.

    v2 and v3 name their blocks' layers differently (``features.N.conv`` / ``features.N.block``): told
    by torchvision's state_dict ``keys`` when given, else by our model's v3 head (``pre_logits``), which
    a features_only backbone lacks.
    """
    named_blocks = list(model.iter_blocks())
    if not named_blocks or not all(isinstance(b, InvertedResidual) and b.separable for _, b in named_blocks):
        raise UsageError("torchvision's key layout exists for mobilenet_v2 and mobilenet_v3_* only")
    if keys is not None:
        is_v3 = any(key.startswith("features.1.block.") for key in keys)
    else:
        is_v3 = not isinstance(model.pre_logits, nn.Identity)
    pairs = conv_norm("stem", "features.0.0", "features.0.1")
    for flat, (name, block) in enumerate(named_blocks, start=1):
        parent = f"features.{flat}.{'block' if is_v3 else 'conv'}"
        for part, sub in enumerate(block_parts(block)):
            theirs = f"{parent}.{part}"
            if sub == "se":
                pairs += squeeze_excite(f"{name}.se", f"{theirs}.fc1", f"{theirs}.fc2")
            elif sub == "conv_pwl" and not is_v3:  # v2 writes the projection as a bare conv then a BN
                pairs += conv_norm(f"{name}.conv_pwl", theirs, f"{parent}.{part + 1}")
            else:
                pairs += conv_norm(f"{name}.{sub}", f"{theirs}.0", f"{theirs}.1")
    last = f"features.{len(named_blocks) + 1}"
    pairs += conv_norm("conv_head", f"{last}.0", f"{last}.1")
    if is_v3:
        pairs += [("pre_logits.fc", "classifier.0"), ("classifier", "classifier.3")]
    else:
        pairs += [("classifier", "classifier.1")]
    return pairs


def torchvision_key_map(model: MobileNet, keys: Collection[str] | None = None) -> dict[str, str]:
    """torchvision state_dict key → our state_dict key, for every tensor of ``model`` (``keys``: those of
    the torchvision state_dict, which tell v2 from v3; see :func:`torchvision_module_map`)."""
    return expand(model, torchvision_module_map(model, keys))
