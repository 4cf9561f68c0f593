"""``pretrained=`` for the builders: the models layer asks, the weights layer answers.

Models sit below weights (weights import models to load into them), so the builders cannot import
the weights registry. Instead :mod:`mobilenets.weights.pretrained` installs its loader here when it is
imported, which ``import mobilenets`` always does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from .mobilenet import MobileNet

# (model name, pretrained: True or a tag, build options) → the model with the weights loaded.
PretrainedLoader = Callable[[str, "bool | str", dict[str, Any]], MobileNet]

# (model name, tag) → raises unless the tag names packaged weights of that model
TagCheck = Callable[[str, str], object]

_loader: PretrainedLoader | None = None
_tag_check: TagCheck | None = None


def set_pretrained_loader(loader: PretrainedLoader, tag_check: TagCheck | None = None) -> None:
    """Install the function that builds a model with pretrained weights, and the one that checks a
    weights tag (done by ``mobilenets.weights``)."""
    global _loader, _tag_check
    _loader, _tag_check = loader, tag_check


def check_tag(name: str, tag: str) -> None:
    """Raise unless ``tag`` names packaged weights of ``name``: a ``MODEL.TAG`` built without its
    weights is checked too, as timm does, so that a misspelt tag is not silently a random model."""
    if _tag_check is not None:
        _tag_check(name, tag)


def build_pretrained(name: str, pretrained: bool | str, options: dict[str, Any]) -> MobileNet:
    """``name`` built with ``options`` and the weights ``pretrained`` names (True: the model's default)."""
    if _loader is None:
        raise UsageError("pretrained weights need mobilenets.weights; `import mobilenets` loads it")
    check_pretrained_options(options)
    return _loader(name, pretrained, options)


def check_pretrained_options(options: dict[str, Any]) -> None:
    """``UsageError`` for build options that mean nothing once pretrained weights are loaded."""
    if options.get("zero_init_residual"):
        raise UsageError(
            "zero_init_residual initialises weights for training from scratch; pretrained weights replace "
            "them, so drop one of the two"
        )
