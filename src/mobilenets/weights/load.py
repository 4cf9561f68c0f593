"""Load weights trained anywhere into our models: ``load_weights`` and ``load_pretrained``."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..atomic import unwritable_reason
from ..errors import UsageError
from ..models import MobileNet, check_resolution, create_model
from .card import CARD_FORMAT, EVAL_CROP_FRACTION, ModelCard, TrainedModel, attach_card, load_trained_model
from .files import read_weights, unwrap_state_dict, write_safetensors
from .presets import Preprocess, get_preset, with_sizes
from .registry import pretrained_for
from .sources import Source, get_source

MAX_LISTED = 5  # offending keys quoted in an error
# Counters that only matter to BatchNorm's momentum=None mode; projects that drop them lose nothing.
_HARMLESS_MISSING = ("num_batches_tracked",)

WeightsLike = str | os.PathLike[str] | Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: keys are ours, except ``unexpected`` (the file's)."""

    source: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]  # "our key: file (shape) vs model (shape)"

    @property
    def complete(self) -> bool:
        """True when every tensor of the model was loaded and every tensor of the file was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """A one-paragraph account of the problems (empty when complete)."""
        parts = []
        for label, items in (
            ("shape mismatches", self.mismatched),
            ("missing from the file", self.missing),
            ("unexpected in the file", self.unexpected),
        ):
            if items:
                more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:MAX_LISTED])}{more}")
        return "; ".join(parts)


def _fits(tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``tensor`` shaped like ``target``: as is, or a 1×1 conv weight as a linear one (and back)."""
    if tensor.shape == target.shape:
        return tensor
    squeeze = [d for d in tensor.shape if d != 1] == [d for d in target.shape if d != 1]
    if squeeze and tensor.numel() == target.numel() and tensor.shape[:2] == target.shape[:2]:
        return tensor.reshape(target.shape)
    return None


def _read(weights: WeightsLike) -> dict[str, torch.Tensor]:
    if isinstance(weights, Mapping):
        return unwrap_state_dict(weights, "the given state_dict")  # e.g. ddp.state_dict(): module.*
    return read_weights(weights)[0]


def load_weights(
    model: MobileNet, weights: WeightsLike, *, source: str = "auto", strict: bool = True
) -> LoadReport:
    """Load a weights file (or state_dict) from torchvision, timm, EfficientNet-PyTorch or us into ``model``.

    ``source="auto"`` detects the project from the keys. ``.pth`` files are read with
    ``weights_only=True`` (a file carrying code is refused). With ``strict`` (default) any missing,
    unexpected or mis-shaped tensor raises ``ValueError`` naming the first ones with both shapes and
    nothing is loaded; with ``strict=False`` every tensor that fits is loaded and the report says
    what did not (e.g. a classifier for another number of classes).
    """
    state = _read(weights)
    found = get_source(source, state.keys())
    key_map = found.key_map(model, state.keys())
    expected = model.state_dict()
    matched: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for their_key, tensor in state.items():
        ours = key_map.get(their_key)
        if ours is None or ours not in expected:
            unexpected.append(their_key)
            continue
        fitted = _fits(tensor, expected[ours])
        if fitted is None:
            mismatched.append(f"{ours}: file {tuple(tensor.shape)} vs model {tuple(expected[ours].shape)}")
        else:
            matched[ours] = fitted
    missing = [key for key in expected if key not in matched and not key.endswith(_HARMLESS_MISSING)]
    report = LoadReport(
        source=found.name,
        loaded=tuple(matched),
        missing=tuple(key for key in missing if not any(m.startswith(key + ":") for m in mismatched)),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
    )
    if strict and not report.complete:
        stem_hint = (
            ", and fix_stem=True for a stem kept at its table width, as timm's MobileNetV3 below 0.75"
            if stem_width_differs(report)
            else ""
        )
        raise UsageError(
            f"{found.name} weights do not fit {type(model).__name__} "
            f"({sum(1 for _ in model.iter_blocks())} blocks): {report.describe()}. "
            "Check the architecture and its options (--model, --width-mult, --padding; in Python also "
            f"num_classes{stem_hint}), or in Python load what fits with load_weights(..., strict=False)"
        )
    model.load_state_dict(matched, strict=False)
    return report


def stem_width_differs(report: LoadReport) -> bool:
    """Whether only the stem and the block reading it differ in shape: the file's stem kept its table
    width where ours scaled it (``fix_stem``), as timm's MobileNetV3 below width 0.75 (another width
    multiplier differs everywhere)."""
    stem_only = all(item.startswith(("stem.", "blocks.0.")) for item in report.mismatched)
    return stem_only and any(item.startswith("stem.conv.weight:") for item in report.mismatched)


def _out_channels(state: Mapping[str, torch.Tensor], key_map: Mapping[str, str], ours: str) -> int | None:
    """The output channels of the file's tensor that maps onto our ``ours`` (None if it has none)."""
    for their_key, our_key in key_map.items():
        if our_key == ours and their_key in state:
            return int(state[their_key].shape[0])
    return None


def _options_from_file(
    model: str,
    kwargs: dict[str, Any],
    state: Mapping[str, torch.Tensor],
    found: Source,
    given: Collection[str],
) -> tuple[MobileNet, dict[str, Any]]:
    """``model`` built with ``kwargs`` plus what the file's shapes say and the caller did not give.

    ``num_classes`` follows the file's classifier (0 for a headless file: timm's ``num_classes=0``);
    ``fix_stem=True`` where the file's stem keeps its table width and ours would scale it (timm's
    MobileNetV3 below width 0.75), and only if that makes it fit.
    """
    network = create_model(model, **kwargs)
    key_map = found.key_map(network, state.keys())
    inferred = dict(kwargs)
    if "num_classes" not in given:
        classes = _out_channels(state, key_map, "classifier.weight") or 0  # none: a headless file
        if classes != network.num_classes:
            inferred["num_classes"] = classes
    stem = _out_channels(state, key_map, "stem.conv.weight")
    if "fix_stem" not in given and stem is not None and stem != network.stem.out_channels:
        fixed = create_model(model, **{**kwargs, "fix_stem": True})
        if fixed.stem.out_channels == stem:
            inferred["fix_stem"] = True
    if inferred == kwargs:
        return network, kwargs
    return create_model(model, **inferred), inferred


_BODY_ONLY = ("features_only", "out_indices")  # options of a network cut short after its body


def _load_from_file(
    model: str, state: Mapping[str, torch.Tensor], found: Source, model_kwargs: Mapping[str, Any]
) -> tuple[MobileNet, dict[str, Any]]:
    """``model`` built with ``model_kwargs`` (over the source's defaults), the file's weights loaded
    strictly: the whole network the file holds is built and loaded first, so that a backbone
    (``features_only``) or a headless network (``num_classes=0``) takes its body, as timm's
    ``create_model(..., pretrained=True)`` gives them, while anything else that differs is an error."""
    kwargs = {**found.model_kwargs, **model_kwargs}
    headless = kwargs.get("num_classes") == 0
    whole = {
        key: value
        for key, value in kwargs.items()
        if key not in _BODY_ONLY and not (key == "num_classes" and headless)
    }
    given = [key for key in model_kwargs if key in whole]
    full, whole = _options_from_file(model, whole, state, found, given=given)
    load_weights(full, state, source=found.name, strict=True)
    cut = {key: value for key, value in kwargs.items() if key in _BODY_ONLY}
    if not (cut.get("features_only") or (headless and full.num_classes)):
        return full, {**whole, **cut}
    kwargs = {**whole, **cut, **({"num_classes": 0} if headless else {})}
    network = create_model(model, **kwargs)
    loaded = full.state_dict()
    network.load_state_dict({key: loaded[key] for key in network.state_dict()})
    return network, kwargs


def _preprocess(model: str, found: Source, preset: str | None, resolution: int) -> Preprocess:
    """The registry's preprocessing for ``model`` weights from that project when there is one and no
    ``preset`` is named (EfficientNet-Lite1 at 240/272); else ``preset`` or the source's, at the sizes
    the registry gives ``model`` from any project, else at ``resolution`` (the architecture's own,
    resized by the source's crop padding or the usual 0.875 crop fraction): a preset alone says 224,
    which fits Lite0 but not Lite4.
    """
    entries = pretrained_for(model)
    entry = next((entry for entry in entries if entry.source == found.name), None)
    if preset is None and entry is not None:
        return entry.preprocess()
    chosen = get_preset(preset if preset is not None else found.preset)
    sized = entry or (entries[0] if entries else None)
    if sized is not None:
        return replace(chosen, crop_size=sized.resolution, resize_size=sized.resize_size)
    if found.crop_padding is not None:
        return replace(chosen, crop_size=resolution, resize_size=resolution + found.crop_padding)
    return replace(chosen, crop_size=resolution, resize_size=round(resolution / EVAL_CROP_FRACTION))


def load_pretrained(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    source: str = "auto",
    preset: str | None = None,
    crop_size: int | None = None,
    resize_size: int | None = None,
    interpolation: str | None = None,
    classes: Sequence[str] | None = None,
    **model_kwargs: Any,
) -> TrainedModel:
    """A model with the weights at ``path`` loaded strictly, in eval mode, with its :class:`ModelCard`.

    Files we wrote (training checkpoints, ``mobilenets convert``) rebuild themselves from their card.
    Other files need ``model``; the source's own defaults apply unless overridden (EfficientNet-Lite
    weights get ``padding="tf_same"`` and the ``efficientnet_lite`` preset at the registry's resolution
    for that model), ``num_classes`` defaults to the file's classifier width and ``fix_stem`` to what
    the file's stem says. ``crop_size``, ``resize_size`` and ``interpolation`` replace the preset's
    (:func:`~mobilenets.weights.presets.with_sizes`); ``classes`` names the classifier's classes in
    label order (ImageNet's names when the preset's fit, "0", "1", ... otherwise).
    """
    sizes: dict[str, Any] = {
        "crop_size": crop_size,
        "resize_size": resize_size,
        "interpolation": interpolation,
    }
    state, metadata = read_weights(path)
    if metadata.get("format") == CARD_FORMAT:
        overrides = [name for name, value in {**model_kwargs, **sizes}.items() if value is not None]
        overrides += ["preset"] if preset is not None else []
        overrides += ["source"] if source not in ("auto", "mobilenets") else []
        overrides += ["classes"] if classes is not None else []
        if overrides:
            raise UsageError(
                f"{str(path)!r} carries its own model card (model, build options, preprocessing); "
                f"{', '.join(overrides)}: only for bare weights from another project"
            )
        trained = load_trained_model(path)
        if model is not None and model != trained.card.model:
            raise UsageError(f"{str(path)!r} holds {trained.card.model} weights, not {model}")
        return trained
    if model is None:
        raise UsageError(
            f"{str(path)!r} carries no model card; name the architecture its weights are for (--model)"
        )
    found: Source = get_source(source, state.keys())
    network, kwargs = _load_from_file(model, state, found, model_kwargs)
    for name, size in (("crop_size", crop_size), ("resize_size", resize_size)):
        if size is not None:  # what the model takes, not only a positive number
            check_resolution(size, name=name, minimum=network.min_input_size)
    network.eval()
    preprocess = with_sizes(_preprocess(model, found, preset, network.default_resolution), **sizes)
    card = ModelCard.for_weights(model, kwargs, preprocess, found.name, network.num_classes, classes)
    attach_card(network, card)
    return TrainedModel(model=network, card=card)


def convert(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    model: str,
    source: str = "auto",
    preset: str | None = None,
    crop_size: int | None = None,
    resize_size: int | None = None,
    interpolation: str | None = None,
    classes: Sequence[str] | None = None,
    **model_kwargs: Any,
) -> TrainedModel:
    """Load ``path`` (any supported project) into ``model`` and write it to ``out`` as safetensors.

    The output carries a :class:`ModelCard` (model, its kwargs, preset, classes, source), so every
    command that takes ``--checkpoint`` accepts it. The write is atomic. The options are
    :func:`load_pretrained`'s.
    """
    target = Path(out)
    if target.suffix != ".safetensors":
        raise UsageError(f"--out {str(target)!r} must end in .safetensors (convert writes safetensors only)")
    if target.is_dir():  # found before the weights are read, not by the final rename of a temp file
        raise UsageError(f"--out {str(target)!r} is a folder; give a file name ending in .safetensors")
    unwritable = unwritable_reason(target)
    if unwritable is not None:
        raise UsageError(f"--out {str(target)!r}: {unwritable}")
    if target.exists() and Path(path).exists() and target.resolve() == Path(path).resolve():
        raise UsageError(
            f"--out {str(target)!r} is the file being converted; write the converted weights beside it"
        )
    trained = load_pretrained(
        path,
        model=model,
        source=source,
        preset=preset,
        crop_size=crop_size,
        resize_size=resize_size,
        interpolation=interpolation,
        classes=classes,
        **model_kwargs,
    )
    write_safetensors(target, trained.model.state_dict(), trained.card.to_metadata())
    return trained
