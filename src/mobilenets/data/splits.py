"""The data layer's entry points: a ``--data`` spec to train/val datasets, plus reproducible loaders.

Specs: ``"digits"`` (scikit-learn's bundled 8×8 digits: offline, no download), ``"cifar10:PATH"``
(``PATH/train`` and ``PATH/test`` class folders; test serves as val) or an image-folder ``PATH``
(``PATH/train`` + ``PATH/val`` or ``PATH/test``, or one folder of class folders split by ``val_split``,
stratified and seeded). Classes are the sorted folder names (for CIFAR-10: airplane ... truck).

Normalisation: digits 0.5 / 0.5, CIFAR-10 its own channel statistics, other folders ImageNet's.

Caching: images are decoded once into a uint8 (N, 3, R, R) tensor when that takes at most
:data:`CACHE_BUDGET_BYTES`. R is the images' common square side if a header probe finds one (capped at
round(img_size / 0.875)), else round(img_size / 0.875) with each image resized and centre-cropped to
it. Bigger folders are read lazily, image by image, in DataLoader workers. See :mod:`.transforms` for
the augmentation rules and :mod:`.loader` for ordering, epochs and sharding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..errors import UsageError
from ..models import check_resolution
from ..models.data_config import IMAGENET_MEAN, IMAGENET_STD, Triple
from .datasets import CachedImages, FolderImages
from .folders import (
    Samples,
    check_val_split,
    folder_splits,
    parse_data_spec,
    read_labelled_list,
    resolve_layout,
    stratified_split,
)
from .images import decode_all, probe_size
from .loader import Loader, build_loader
from .transforms import (
    AUGMENTATIONS,
    Augmentation,
    BatchTransform,
    SampleTransform,
    as_augmentation,
    eval_resize,
)

__all__ = [
    "AUGMENTATIONS",
    "CACHE_BUDGET_BYTES",
    "Augmentation",
    "DataSplits",
    "ImageDataset",
    "Loader",
    "build_loader",
    "check_data_spec",
    "default_resolution",
    "load_digits_dataset",
    "load_eval_set",
    "load_preprocessed_eval_set",
    "load_splits",
]

ImageDataset = CachedImages | FolderImages

CACHE_BUDGET_BYTES = 2 * 1024**3
_LIST_NOT_TRAINABLE = (
    "data {spec!r} is a file, not a folder (a labelled list file can be evaluated, not trained on); "
    "expected an image folder, 'cifar10:PATH' or 'digits' for training"
)
# Default input side per kind of data: digits (8×8, upsampled) and CIFAR-10 (32×32) train at the smallest
# side the models take; other folders at ImageNet's 224, what photos and pretrained weights expect.
DIGITS_RESOLUTION = 32
CIFAR10_RESOLUTION = 32
FOLDER_RESOLUTION = 224
# The 1,797 digits are upsampled once and held in memory (float32 while resizing): 1.9 GB at 512 px.
MAX_DIGITS_RESOLUTION = 512
DIGITS_MEAN: Triple = (0.5, 0.5, 0.5)
DIGITS_STD: Triple = (0.5, 0.5, 0.5)
CIFAR10_MEAN: Triple = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Triple = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class DataSplits:
    """Train and val datasets of one spec, their class names and the normalisation they use."""

    train: ImageDataset
    val: ImageDataset
    classes: tuple[str, ...]
    mean: Triple
    std: Triple
    skipped: tuple[str, ...]  # files left out while caching (lazy datasets report theirs per loader)


def check_data_spec(spec: str, *, img_size: int | None = None) -> None:
    """``ValueError`` unless ``spec`` is well-formed training data whose folders exist (no image is read).

    With ``img_size``, also unless the data can be served at that side (see :func:`load_splits`).
    """
    parsed, _, _ = resolve_layout(spec)
    if parsed.kind == "list":
        raise UsageError(_LIST_NOT_TRAINABLE.format(spec=spec))
    if img_size is not None:
        _check_img_size(img_size, parsed.kind)


def default_resolution(spec: str) -> int:
    """The input side to train ``spec`` at when none is given: 32 for digits and CIFAR-10, else 224.

    Small images are not upsampled beyond the smallest side the models take (costs grow with its
    square); photo folders get ImageNet's crop, which pretrained weights expect.
    """
    kind = parse_data_spec(spec).kind
    return {"digits": DIGITS_RESOLUTION, "cifar10": CIFAR10_RESOLUTION}.get(kind, FOLDER_RESOLUTION)


def _check_img_size(img_size: int, kind: str) -> None:
    """The models' rule for input sides (one owner: :func:`mobilenets.models.check_resolution`), plus
    the digits' memory cap."""
    check_resolution(img_size, name="img_size")
    if kind == "digits" and img_size > MAX_DIGITS_RESOLUTION:
        raise UsageError(
            f"img_size={img_size} is too large for 'digits' (8×8 images, all held in memory once "
            f"upsampled); expected at most {MAX_DIGITS_RESOLUTION}"
        )


def _check_stats(name: str, values: Sequence[float], positive: bool) -> Triple:
    """``values`` as a float triple; ``ValueError`` unless it has 3 finite (positive) numbers."""
    try:
        triple = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        triple = ()
    if len(triple) != 3 or not all(v == v and abs(v) != float("inf") for v in triple):
        raise UsageError(f"{name} must be 3 finite numbers (one per RGB channel), got {values!r}")
    if positive and min(triple) <= 0:
        raise UsageError(f"{name} must be positive, got {values!r}")
    return triple[0], triple[1], triple[2]


def _digits_images(img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits in [0, 1], upsampled bilinearly to (N, 1, img_size, img_size), and their labels."""
    from sklearn.datasets import load_digits  # imported lazily: scikit-learn is slow to import

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0), labels


def load_digits_dataset(
    img_size: int, val_fraction: float = 0.2, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """(train, val) digits as normalised (3, img_size, img_size) float tensors with integer labels.

    Pixels 0..16 are scaled to [0, 1], upsampled bilinearly once up front (cheap: 1,797 images),
    repeated to 3 channels and normalised with mean 0.5 / std 0.5. The split keeps ``val_fraction``
    of each class and depends only on ``seed``.
    """
    _check_img_size(img_size, "digits")
    check_val_split(val_fraction)
    images, labels = _digits_images(img_size)
    images = ((images - 0.5) / 0.5).repeat(1, 3, 1, 1).contiguous()
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
    )


def _digits_splits(
    img_size: int, val_split: float, seed: int, augment: Augmentation, mean: Triple, std: Triple
) -> tuple[CachedImages, CachedImages]:
    """Digits cached as uint8 at ``img_size``: train pad-crops without flipping (digits are not symmetric)."""
    images, labels = _digits_images(img_size)
    images = (images * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).contiguous()
    train_idx, val_idx = stratified_split(labels, val_split, seed)
    train_tf = BatchTransform(img_size, img_size, mean, std, train=True, flip=False, augment=augment)
    eval_tf = BatchTransform(img_size, img_size, mean, std, train=False)
    return (
        CachedImages(images[train_idx], labels[train_idx], train_tf),
        CachedImages(images[val_idx], labels[val_idx], eval_tf),
    )


def _cached(
    samples: Samples, transform: BatchTransform, split: str, workers: int | None = None
) -> CachedImages:
    """``samples`` decoded into a cache; unreadable files are left out (warned about by ``decode_all``).
    ``workers`` 0 decodes in this process (where worker processes fail, e.g. a small /dev/shm); any other
    value lets ``decode_all`` choose."""
    paths = [path for path, _ in samples]
    images, kept, skipped = decode_all(paths, transform.source_size, workers=0 if workers == 0 else None)
    if skipped and len(kept) == 0:
        raise UsageError(
            f"none of the {len(samples)} {split} image files could be read (e.g. {skipped[0]}); "
            "the warnings say why each was skipped"
        )
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)[kept]
    return CachedImages(images, labels, transform, skipped)


def _folder_sets(
    spec: str,
    *,
    img_size: int,
    val_split: float | None,
    seed: int,
    augment: Augmentation,
    stats: tuple[Triple, Triple] | None,
    cache: bool | None,
    with_train: bool,
    workers: int | None = None,
) -> tuple[ImageDataset | None, ImageDataset, tuple[str, ...], Triple, Triple]:
    """(train or None, val, classes, mean, std) for a folder or CIFAR-10 spec."""
    parsed, classes, train_samples, val_samples = folder_splits(spec, val_split, seed)
    if stats is not None:
        mean, std = stats
    elif parsed.kind == "cifar10":
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    # Decided from both splits and the train files alone, so load_eval_set matches load_splits.
    size = probe_size([path for path, _ in train_samples or val_samples], eval_resize(img_size))
    if cache is None:
        cache = (len(train_samples) + len(val_samples)) * 3 * size * size <= CACHE_BUDGET_BYTES
    train: ImageDataset | None = None
    if cache:
        eval_tf = BatchTransform(size, img_size, mean, std, train=False)
        val: ImageDataset = _cached(val_samples, eval_tf, "validation", workers)
        if with_train:
            augmented = BatchTransform(size, img_size, mean, std, True, augment=augment)
            train = _cached(train_samples, augmented, "training", workers)
    else:
        val = FolderImages(val_samples, SampleTransform(img_size, mean, std, train=False))
        if with_train:
            train_tf = SampleTransform(img_size, mean, std, train=True, augment=augment)
            train = FolderImages(train_samples, train_tf)
    return train, val, classes, mean, std


def load_splits(
    spec: str,
    *,
    img_size: int,
    val_split: float = 0.1,
    augment: str | Augmentation = "none",
    seed: int = 0,
    cache: bool | None = None,
    workers: int | None = None,
) -> DataSplits:
    """Train (augmented) and val (eval transforms) datasets for ``spec`` at ``img_size``.

    ``augment``: a policy name or an :class:`Augmentation`.
    ``val_split`` and ``seed`` only matter where a single folder (or digits) is split. ``cache``
    forces (True) or forbids (False) the in-memory cache; None decides by :data:`CACHE_BUDGET_BYTES`.
    ``workers=0`` decodes the cache without worker processes (the training loader's own setting).
    Layout problems raise ``ValueError`` before any image is decoded.
    """
    check_val_split(val_split)
    augment = as_augmentation(augment)
    augment.check_size(img_size)
    check_data_spec(spec, img_size=img_size)
    parsed = parse_data_spec(spec)
    if parsed.kind == "digits":
        digits_train, digits_val = _digits_splits(img_size, val_split, seed, augment, DIGITS_MEAN, DIGITS_STD)
        classes = tuple(str(i) for i in range(10))
        return DataSplits(digits_train, digits_val, classes, DIGITS_MEAN, DIGITS_STD, ())
    train_set, val, classes, mean, std = _folder_sets(
        spec,
        img_size=img_size,
        val_split=val_split,
        seed=seed,
        augment=augment,
        stats=None,
        cache=cache,
        with_train=True,
        workers=workers,
    )
    assert train_set is not None  # internal invariant: with_train=True always builds it
    if len(classes) < 2:  # one class: a zero loss from the first step, and nothing learnt
        raise UsageError(
            f"{spec} holds {len(classes)} class ({', '.join(classes)}); training a classifier needs "
            "images of at least 2 classes, a folder for each"
        )
    return DataSplits(train_set, val, classes, mean, std, train_set.skipped + val.skipped)


def unaugmented(dataset: ImageDataset) -> ImageDataset:
    """``dataset``'s images with its eval transform: no crop, flip or policy (training images to calibrate
    int8 on, say, seen as the model is scored)."""
    if isinstance(dataset, CachedImages):
        transform = dataclasses.replace(dataset.transform, train=False)
        return CachedImages(dataset.images, dataset.labels, transform, dataset.skipped)
    sample = dataset.transform
    if not isinstance(sample, SampleTransform):
        raise UsageError(f"cannot drop the augmentation of {type(sample).__name__}")
    return FolderImages(
        dataset.samples, SampleTransform(sample.out_size, sample.mean, sample.std, train=False)
    )


def load_eval_set(
    spec: str,
    *,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    val_split: float | None = 0.1,
    seed: int = 0,
    cache: bool | None = None,
) -> tuple[ImageDataset, tuple[str, ...]]:
    """The val (or test) split of ``spec`` with eval transforms and the given normalisation, and classes.

    For the same ``val_split`` and ``seed`` it holds exactly the images of ``load_splits(...).val``;
    only that split is decoded. ``val_split`` None takes a single folder whole (digits: 0.1).
    """
    if val_split is not None:
        check_val_split(val_split)
    stats = (_check_stats("mean", mean, positive=False), _check_stats("std", std, positive=True))
    parsed, _, _ = resolve_layout(spec)
    if parsed.kind == "list":
        raise UsageError(
            f"data {spec!r} is a labelled list file; evaluate it with load_preprocessed_eval_set"
        )
    _check_img_size(img_size, parsed.kind)
    if parsed.kind == "digits":
        _, val = _digits_splits(img_size, val_split or 0.1, seed, Augmentation(), *stats)
        return val, tuple(str(i) for i in range(10))
    _, val_set, classes, _, _ = _folder_sets(
        spec,
        img_size=img_size,
        val_split=val_split,
        seed=seed,
        augment=Augmentation(),
        stats=stats,
        cache=cache,
        with_train=False,
    )
    return val_set, classes


def load_preprocessed_eval_set(
    spec: str,
    transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    val_split: float | None = 0.1,
    seed: int = 0,
) -> tuple[FolderImages, tuple[str, ...] | None]:
    """Images of ``spec`` decoded on demand through ``transform`` (a weights preset), and class names.

    For weights trained elsewhere, which must see exactly their own preprocessing (e.g. bicubic
    resizing). ``spec`` is an image folder (its val or test split; ``val_split``/``seed`` split a single
    folder as training does, None takes it whole) or a labelled list file, whose labels are class
    indices: its class names are then None (the model's own).
    """
    parsed, _, _ = resolve_layout(spec)
    if parsed.kind == "digits":
        raise UsageError("digits is a built-in training set, not a set of photos for pretrained weights")
    if parsed.kind == "list":
        assert parsed.path is not None  # internal invariant: a list spec always has its file
        return FolderImages(read_labelled_list(parsed.path), transform), None
    if val_split is not None:
        check_val_split(val_split)
    _, classes, _, val_samples = folder_splits(spec, val_split, seed)
    return FolderImages(val_samples, transform), classes
