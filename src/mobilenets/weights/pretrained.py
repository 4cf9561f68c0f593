"""``create_model(name, pretrained=True)``: a model built with the options its packaged weights need.

Installed into :mod:`mobilenets.models.hub` on import, so every builder takes ``pretrained=``. As in timm,
a model built for another number of classes gets the body and a fresh classifier, a ``features_only``
backbone gets the body alone, and a stem for other than 3 input channels is adapted from the RGB one;
anything else that does not fit (another width) is an error naming it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UsageError
from ..models import MobileNet, get_builder
from ..models.hub import set_pretrained_loader
from .card import ModelCard, attach_card
from .files import read_weights
from .load import load_weights
from .registry import PretrainedWeights, default_pretrained

HEAD = ("classifier.",)  # what may differ from the file: a classifier for other classes (or none)
_NOT_THE_FILES = ("features_only", "out_indices", "in_channels", "width_mult")  # options the file lacks


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB stem's weight ``(out, 3, k, k)`` for ``in_channels`` inputs, as timm's ``adapt_input_conv``:
    summed over the colours for one channel (a grey image gives the response its RGB copy would);
    otherwise the colours repeated and scaled by ``3 / in_channels``, exact for a multiple of 3 (an
    RGB image given k times gives its RGB response) and timm's approximation for other counts."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def _transfer(full: MobileNet, network: MobileNet, entry: PretrainedWeights) -> None:
    """Copy ``full``'s tensors into ``network``, which may lack the head and may take other than 3 input
    channels (see :func:`adapt_input_conv`); raise if its body differs."""
    source = full.state_dict()
    target = network.state_dict()
    stem = "stem.conv.weight"
    if network.in_channels != full.in_channels and source[stem].shape[0] == target[stem].shape[0]:
        source[stem] = adapt_input_conv(source[stem], network.in_channels)
    fitting = {
        key: value for key, value in source.items() if key in target and target[key].shape == value.shape
    }
    body_missing = [key for key in target if key not in fitting and not key.startswith(HEAD)]
    if body_missing:
        shown = ", ".join(body_missing[:5])
        raise UsageError(
            f"pretrained weights {entry.name} do not fit this {entry.model} ({len(body_missing)} tensors "
            f"differ, e.g. {shown}); they need the default width_mult"
        )
    network.load_state_dict(fitting, strict=False)


def build_pretrained(model: str, pretrained: bool | str, options: dict[str, Any]) -> MobileNet:
    """``model`` built with ``options`` and the packaged weights ``pretrained`` names.

    The entry's own build options (TensorFlow padding for EfficientNet-Lite) apply unless ``options``
    says otherwise. The file's SHA-256 is checked first. The model keeps PyTorch's default train mode
    (as torchvision's and timm's do); ``model.pretrained_cfg`` and ``model.card`` describe the weights.
    """
    entry = default_pretrained(model, pretrained)
    state, _ = read_weights(entry.verified_path())
    kwargs = {**entry.model_kwargs, **options}
    builder = get_builder(model)
    # The network the file was saved from; what differs from it is checked by _transfer, whose error
    # names the options (another width or input channels), or dropped (a head, later blocks).
    full_kwargs = {key: value for key, value in kwargs.items() if key not in _NOT_THE_FILES}
    full = builder(**{**full_kwargs, "num_classes": 1000})
    load_weights(full, state, source=entry.source, strict=True)
    network = full if full_kwargs == kwargs and full.num_classes == kwargs.get("num_classes", 1000) else None
    if network is None:
        network = builder(**kwargs)
        _transfer(full, network, entry)
    attach_card(
        network, ModelCard.for_weights(model, kwargs, entry.preprocess(), entry.source, network.num_classes)
    )
    network.pretrained_cfg = entry.data_config(
        num_classes=network.num_classes, in_channels=network.in_channels, total_stride=network.total_stride
    )
    return network


set_pretrained_loader(build_pretrained, default_pretrained)
