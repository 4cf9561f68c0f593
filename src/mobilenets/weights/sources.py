"""The projects whose weights we load: how to recognise their keys, map them, and feed their models."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..models.mobilenet import MobileNet
from .efficientnet_lite_keys import efficientnet_lite_key_map
from .timm_keys import timm_key_map
from .torchvision_keys import torchvision_key_map

KeyMap = Callable[[MobileNet, Collection[str]], dict[str, str]]


def _identity(model: MobileNet, keys: Collection[str]) -> dict[str, str]:
    return {key: key for key in model.state_dict()}


@dataclass(frozen=True)
class Source:
    """One project's checkpoint layout.

    ``marker`` is a key only this layout has (used to detect it); ``preset`` and ``model_kwargs`` are
    what its weights need unless the user says otherwise (TensorFlow-trained Lite needs TF padding).
    ``crop_padding``: where the registry gives no sizes, the resize is the crop plus this (TensorFlow's
    EfficientNet evaluation: Lite4's 300 from 332); ``None``, the usual 0.875 crop fraction.
    """

    name: str
    marker: str
    key_map: KeyMap
    preset: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    crop_padding: int | None = None


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source("mobilenets", "stem.conv.weight", _identity, "imagenet"),
        Source("torchvision", "features.0.0.weight", torchvision_key_map, "imagenet"),
        # timm's own (non-"tf_") models use PyTorch's BatchNorm eps, whatever the original used.
        Source("timm", "conv_stem.weight", timm_key_map, "imagenet", {"norm_eps": 1e-5}),
        Source(
            "efficientnet_lite",
            "_conv_stem.weight",
            efficientnet_lite_key_map,
            "efficientnet_lite",
            {"padding": "tf_same"},
            crop_padding=32,
        ),
    )
}
SOURCE_CHOICES = ("auto", *SOURCES)


def detect_source(keys: Collection[str]) -> Source:
    """The layout whose marker key is among ``keys``; ``ValueError`` naming a few keys otherwise."""
    for source in SOURCES.values():
        if source.marker in keys:
            return source
    shown = ", ".join(sorted(keys)[:5])
    markers = ", ".join(f"{s.marker!r} ({s.name})" for s in SOURCES.values())
    raise UsageError(
        f"cannot tell which project these weights come from (keys such as {shown}); expected one of the "
        f"keys {markers}. Pass --source to name it"
    )


def get_source(name: str, keys: Collection[str]) -> Source:
    """``SOURCES[name]``, or the detected source for ``"auto"``; ``ValueError`` for an unknown name."""
    if name == "auto":
        return detect_source(keys)
    if name not in SOURCES:
        raise UsageError(f"unknown weights source {name!r}; expected one of {', '.join(SOURCE_CHOICES)}")
    return SOURCES[name]
