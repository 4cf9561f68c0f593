"""The model card every weights file we write carries: how to rebuild the model and how to feed it.

Stored as safetensors metadata (strings only) by training checkpoints and by ``mobilenets convert``,
so ``eval``, ``predict`` and ``export`` rebuild the model from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MissingFileError, UsageError
from ..models import MobileNet, create_model
from .files import read_weights
from .presets import Preprocess

CARD_FORMAT = "mobilenets-checkpoint/1"
EVAL_CROP_FRACTION = 0.875


def read_class_names(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The class names in a text file, one per line in label order (blank lines and surrounding spaces
    ignored): what ``--classes FILE`` gives weights trained elsewhere."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of a name
    except FileNotFoundError:
        raise MissingFileError(f"class names file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the class names file {str(path)!r}: {error}") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise UsageError(f"class names file {str(path)!r} names no class; expected one name per line")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise UsageError(f"class names file {str(path)!r} names {', '.join(map(repr, duplicates))} twice")
    return names


@dataclass(frozen=True)
class ModelCard:
    """A model's name and build arguments, its classes and its preprocessing, and where it came from.

    ``resize_size`` None means ``round(img_size / 0.875)`` (the training recipe's eval resize).
    ``data``, ``val_split`` and ``seed`` describe the training data ("" when unknown, as for weights
    converted from another project), and ``data_listing`` the files of a single folder its held-out
    split was drawn from (``mobilenets.data.folders.split_listing``); ``source`` names the project the
    weights came from.
    """

    model: str
    model_kwargs: Mapping[str, Any]
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    img_size: int
    data: str
    val_split: float
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)
    resize_size: int | None = None
    interpolation: str = "bilinear"
    source: str = "mobilenets"
    data_listing: str = ""

    @property
    def preprocess(self) -> Preprocess:
        """The eval-time preprocessing these weights expect."""
        resize = self.resize_size or round(self.img_size / EVAL_CROP_FRACTION)
        # Trained here: validated on its data's own size when the images already had it (as is).
        as_is = self.source == "mobilenets"
        return Preprocess(self.img_size, resize, self.interpolation, self.mean, self.std, self.classes, as_is)

    def at_resolution(self, resolution: int) -> ModelCard:
        """This card for the network run at ``resolution``: an explicit resize keeps its crop fraction
        (ImageNet's 224 from 256 becomes 288 from 329), so the centre crop frames the same part."""
        if resolution == self.img_size:
            return self
        resize = None if self.resize_size is None else round(self.resize_size * resolution / self.img_size)
        return dataclasses.replace(self, img_size=resolution, resize_size=resize)

    @classmethod
    def for_weights(
        cls,
        model: str,
        model_kwargs: Mapping[str, Any],
        preprocess: Preprocess,
        source: str,
        num_classes: int,
        classes: Sequence[str] | None = None,
    ) -> ModelCard:
        """A card for weights trained elsewhere: data unknown; ``classes`` the names of their classes in
        label order (:func:`read_class_names`), else the preset's when they fit, else "0", "1", ..."""
        if classes is not None:
            classes = tuple(classes)
            if len(classes) != num_classes:
                raise UsageError(
                    f"{len(classes)} class names given, but the weights' classifier has {num_classes} classes"
                )
        elif len(preprocess.classes) == num_classes:
            classes = preprocess.classes
        return cls(
            model=model,
            model_kwargs=dict(model_kwargs),
            classes=classes or tuple(str(i) for i in range(num_classes)),
            mean=preprocess.mean,
            std=preprocess.std,
            img_size=preprocess.crop_size,
            data="",
            val_split=0.1,
            seed=0,
            resize_size=preprocess.resize_size,
            interpolation=preprocess.interpolation,
            source=source,
        )

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": CARD_FORMAT,
            "model": self.model,
            "model_kwargs": json.dumps(dict(self.model_kwargs), sort_keys=True),
            "classes": json.dumps(list(self.classes)),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "img_size": str(self.img_size),
            "resize_size": "" if self.resize_size is None else str(self.resize_size),
            "interpolation": self.interpolation,
            "data": self.data,
            "val_split": repr(float(self.val_split)),
            "seed": str(self.seed),
            "source": self.source,
            "config": json.dumps(dict(self.config), sort_keys=True),
            "data_listing": self.data_listing,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str) -> ModelCard:
        if metadata.get("format") != CARD_FORMAT:
            raise UsageError(
                f"{source!r} carries no mobilenets model card (metadata format "
                f"{metadata.get('format')!r}, expected {CARD_FORMAT!r}); pass --model to load bare weights"
            )
        try:
            resize = metadata.get("resize_size", "")
            return cls(
                model=metadata["model"],
                model_kwargs=json.loads(metadata["model_kwargs"]),
                classes=tuple(json.loads(metadata["classes"])),
                mean=tuple(json.loads(metadata["mean"])),
                std=tuple(json.loads(metadata["std"])),
                img_size=int(metadata["img_size"]),
                data=metadata["data"],
                val_split=float(metadata["val_split"]),
                seed=int(metadata["seed"]),
                config=json.loads(metadata.get("config", "{}")),
                resize_size=int(resize) if resize else None,
                interpolation=metadata.get("interpolation", "bilinear"),
                source=metadata.get("source", "mobilenets"),
                data_listing=metadata.get("data_listing", ""),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise UsageError(f"{source!r} has damaged model-card metadata: {error}") from None


@dataclass(frozen=True)
class TrainedModel:
    """A model with its weights loaded, in eval mode on the CPU, and the card that describes it."""

    model: MobileNet
    card: ModelCard


def key_differences(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, "key (found shape) != (expected shape)" for shape mismatches)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{key} {tuple(found[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(expected) & set(found)
        if found[key].shape != expected[key].shape
    )
    return missing, unexpected, shapes


def attach_card(model: MobileNet, card: ModelCard) -> None:
    """Set ``model.card``, and the ``pretrained_cfg`` timm's data pipeline reads, from the card."""
    model.card = card
    model.pretrained_cfg = card.preprocess.data_config(
        architecture=card.model,
        num_classes=model.num_classes,
        in_channels=model.in_channels,
        total_stride=model.total_stride,
        source=card.source,
    )


def load_trained_model(weights_path: str | os.PathLike[str]) -> TrainedModel:
    """Rebuild the model saved at ``weights_path`` (e.g. ``runs/x/best.safetensors``) and load it strictly."""
    path = Path(weights_path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {str(path)!r} does not exist")
    weights, metadata = read_weights(path)
    card = ModelCard.from_metadata(metadata, str(path))
    model = create_model(card.model, **card.model_kwargs)
    missing, unexpected, shapes = key_differences(model.state_dict(), weights)
    if missing or unexpected or shapes:
        raise UsageError(
            f"{str(path)!r} does not match {card.model}({card.model_kwargs}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {shapes[:5]}"
        )
    model.load_state_dict(weights)
    model.eval()
    attach_card(model, card)
    return TrainedModel(model=model, card=card)
