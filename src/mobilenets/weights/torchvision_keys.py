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

from torch import nn

from ..layers.conv_norm_act import ConvNormAct
from ..layers.inverted_residual import InvertedResidual
from ..layers.squeeze_excite import SqueezeExcite
from ..models.mobilenet import MobileNet


def _conv_norm(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.conv", f"{theirs}.0"), (f"{ours}.bn", f"{theirs}.1")]


def torchvision_module_map(model: MobileNet) -> list[tuple[str, str]]:
    """(our module prefix, torchvision module prefix) pairs for a MobileNet v2 or v3 built here."""
    named_blocks = list(model.iter_blocks())
    blocks = [block for _, block in named_blocks]
    if not blocks or not all(isinstance(b, InvertedResidual) and b.separable for b in blocks):
        raise ValueError("torchvision's key layout exists for mobilenet_v2 and mobilenet_v3_* only")
    is_v3 = not isinstance(model.pre_logits, nn.Identity)
    pairs = _conv_norm("stem", "features.0")
    for flat, (name, block) in enumerate(named_blocks, start=1):
        parent = f"features.{flat}.{'block' if is_v3 else 'conv'}"
        part = 0
        for sub in ("conv_pw", "conv_dw", "se", "conv_pwl"):
            module = getattr(block, sub)
            if isinstance(module, SqueezeExcite):
                pairs += [
                    (f"{name}.se.fc1", f"{parent}.{part}.fc1"),
                    (f"{name}.se.fc2", f"{parent}.{part}.fc2"),
                ]
            elif isinstance(module, ConvNormAct):
                if sub == "conv_pwl" and not is_v3:  # v2 writes the projection as a bare conv then a BN
                    pairs += [
                        (f"{name}.conv_pwl.conv", f"{parent}.{part}"),
                        (f"{name}.conv_pwl.bn", f"{parent}.{part + 1}"),
                    ]
                else:
                    pairs += _conv_norm(f"{name}.{sub}", f"{parent}.{part}")
            else:
                continue
            part += 1
    pairs += _conv_norm("conv_head", f"features.{len(blocks) + 1}")
    if is_v3:
        pairs += [("pre_logits.fc", "classifier.0"), ("classifier", "classifier.3")]
    else:
        pairs += [("classifier", "classifier.1")]
    return pairs


def torchvision_key_map(model: MobileNet) -> dict[str, str]:
    """torchvision state_dict key → our state_dict key, for every tensor of ``model``."""
    ours_keys = list(model.state_dict())
    mapping: dict[str, str] = {}
    for ours, theirs in torchvision_module_map(model):
        for key in ours_keys:
            if key.startswith(ours + ".") and key.count(".") == ours.count(".") + 1:
                mapping[theirs + key[len(ours) :]] = key
    return mapping
