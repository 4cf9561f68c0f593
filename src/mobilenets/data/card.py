"""The images of a data spec, prepared the way a model card says its model expects them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from ..errors import UsageError
from ..weights.card import ModelCard
from .folders import absolute_data_spec, check_split_listing, parse_data_spec, resolve_layout
from .splits import build_loader, load_eval_set, load_preprocessed_eval_set, load_splits, unaugmented


def card_eval_set(
    card: ModelCard,
    data: str,
    *,
    val_split: float | None = None,
    seed: int | None = None,
    scored: bool = True,
) -> tuple[Dataset[Any], tuple[str, ...]]:
    """The evaluation images of ``data`` prepared as ``card`` says, and their class names.

    Checkpoints trained here get exactly their training run's validation transform (and its cache);
    other weights, and labelled list files, go through the card's preset. Labels of a list file must
    be valid class indices of the model, unless the images are not ``scored`` (calibration and
    verification images, whose labels nobody reads). A single folder is split as the card's run split
    it when it is that run's data, or when ``val_split`` or ``seed`` is given; any other single folder
    is taken whole (its images were never the model's training images, and calibration wants them all).
    """
    whole = (
        val_split is None
        and seed is None
        and parse_data_spec(data).kind == "folder"
        and not _trained_on(card, data)
    )
    if not whole and _trained_on(card, data) and _draws_split(data):
        if val_split in (None, card.val_split) and seed in (None, card.seed):
            check_split_listing(data, card.data_listing, "the model's training run")  # its held-out part
        else:
            raise UsageError(
                f"data {data!r} is what this model trained on, with val_split {card.val_split} and seed "
                f"{card.seed}; another split or seed draws a held-out part full of its training images. "
                "Leave --val-split and --seed out to score the run's own held-out images, or use other data"
            )
    val_split = None if whole else card.val_split if val_split is None else val_split
    seed = card.seed if seed is None else seed
    if card.source == "mobilenets" and parse_data_spec(data).kind != "list":
        dataset, classes = load_eval_set(
            data, img_size=card.img_size, mean=card.mean, std=card.std, val_split=val_split, seed=seed
        )
        return dataset, classes
    lazy, found = load_preprocessed_eval_set(
        data, card.preprocess.transform(), val_split=val_split, seed=seed
    )
    if found is not None:
        return lazy, found
    labels = lazy.labels
    if scored and (int(labels.max()) >= len(card.classes) or int(labels.min()) < 0):
        raise UsageError(
            f"data {data!r} has label {int(labels.max())}, but the model has {len(card.classes)} classes "
            f"(labels must be 0..{len(card.classes) - 1})"
        )
    return lazy, card.classes


def card_calibration_set(card: ModelCard, data: str) -> Dataset[Any]:
    """Images to calibrate int8 on: where ``data`` is what the card's run trained on, its training part
    (eval transforms), never the held-out images the model is then scored on; other data as
    :func:`card_eval_set` gives it, taken whole where it was never split."""
    if card.source != "mobilenets" or not _trained_on(card, data) or parse_data_spec(data).kind == "list":
        return card_eval_set(card, data, scored=False)[0]
    if _draws_split(data):
        check_split_listing(data, card.data_listing, "the model's training run")
    splits = load_splits(data, img_size=card.img_size, val_split=card.val_split, seed=card.seed)
    return unaugmented(splits.train)


def _draws_split(data: str) -> bool:
    """Whether ``data``'s held-out images are drawn by a split and seed (digits, a single folder)."""
    parsed, _, val_dir = resolve_layout(data)
    return parsed.kind == "digits" or (parsed.kind == "folder" and val_dir is None)


def _trained_on(card: ModelCard, data: str) -> bool:
    """Whether ``data`` names the data the card's run trained on (wherever either path was written)."""
    if not card.data:
        return False
    try:
        return absolute_data_spec(card.data) == absolute_data_spec(data)
    except UsageError:  # a card's spec this version cannot parse: not the same data
        return False


def first_images(dataset: Dataset[Any], count: int, *, offset: int = 0, workers: int = 0) -> torch.Tensor:
    """Images ``offset .. offset + count`` of ``dataset`` (in its order), prepared, as one float batch.

    Unreadable files are skipped (and warned about by the loader), so fewer may come back.
    """
    total = len(dataset)  # type: ignore[arg-type]
    if offset >= total:
        raise UsageError(f"the data has {total} images; cannot start at image {offset}")
    return _images_at(dataset, range(offset, min(total, offset + count)), workers)


def calibration_images(card: ModelCard, data: str, count: int) -> torch.Tensor:
    """``count`` images of ``data`` to calibrate int8 on (:func:`card_calibration_set`), as one batch.

    A folder lists its images class by class, so they are taken evenly spread over it (the first 300 of
    CIFAR-10's train folder are all airplanes); a list file's first ``count``, in the order it gives.
    """
    dataset = card_calibration_set(card, data)
    if parse_data_spec(data).kind == "list":
        images = first_images(dataset, count)
    else:
        images = spread_images(dataset, count)
    if len(images) < count:  # a small folder, or unreadable files (each warned of by the loader)
        total = len(dataset)  # type: ignore[arg-type]
        why = f"{data} has {total} images" if total < count else "some could not be read"
        warnings.warn(f"calibrating on {len(images)} images, not {count}: {why}", stacklevel=2)
    return images


def spread_images(dataset: Dataset[Any], count: int, *, workers: int = 0) -> torch.Tensor:
    """``count`` images of ``dataset`` spread evenly over it (all of them if it has no more), as one batch."""
    total = len(dataset)  # type: ignore[arg-type]
    if count >= total:
        return first_images(dataset, total, workers=workers)
    return _images_at(dataset, [(i * total) // count for i in range(count)], workers)


def _images_at(dataset: Dataset[Any], indices: Sequence[int], workers: int = 0) -> torch.Tensor:
    loader = build_loader(Subset(dataset, indices), batch_size=64, train=False, seed=0, workers=workers)
    batches = [images for images, _ in loader]
    if not batches:
        raise UsageError(f"none of the {len(indices)} images asked for could be read (see the warnings)")
    return torch.cat(batches)
