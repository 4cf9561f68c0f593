"""Batches for training and evaluation, reproducible per (seed, epoch) and shardable across ranks.

Every epoch draws, from a generator seeded only by (seed, epoch): the sample order (train loaders
shuffle, eval loaders keep dataset order) and one set of random transform parameters per *position*
in that order. Rank ``r`` of ``w`` reads positions ``r::w`` (train: padded by wrapping around so all
ranks get the same count, like ``DistributedSampler``; eval: not padded, so every image counts once).
Hence with world_size 1 and batch B versus world_size w and batch B / w, the union of the w ranks'
step-k batches is exactly the single-process step-k batch, augmented pixels included, for every step
the single-process loader has (when N is not a multiple of w, ranks may get one extra padded step).
With the augmentation's ``alternate_flip``, the flips are per *image* instead (:func:`alternating_flips`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import UsageError, WrongTypeError
from .datasets import CachedImages, FolderImages, Skipped
from .transforms import BatchTransform, SampleTransform

_RawBatch = tuple[torch.Tensor | None, torch.Tensor | None, list[tuple[str, str]]]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hashed_generator(key: str) -> torch.Generator:
    """A CPU generator seeded by a hash of ``key``, so nearby keys give unrelated streams."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded by a hash of (seed, epoch), so nearby pairs give unrelated streams."""
    return _hashed_generator(f"{seed}:{epoch}")


def alternating_flips(num_images: int, seed: int, epoch: int) -> torch.Tensor:
    """Whether to mirror each image (bool, by dataset index) in ``epoch`` under alternating flips.

    Epoch 0 tosses one coin per image, from a generator seeded by ``seed`` alone; each later epoch
    mirrors exactly the images the one before did not. Random flips show an image the same way in both
    epochs of a pair half of the time; these show both sides in every two epochs.
    """
    first = torch.rand(num_images, generator=_hashed_generator(f"{seed}:alternate-flip")) < 0.5
    return first ^ bool(epoch % 2)


def _collate_skipping(items: list[Any]) -> _RawBatch:
    """Stack the readable items; report the :class:`Skipped` ones as (path, reason)."""
    skipped = [(item.path, item.reason) for item in items if isinstance(item, Skipped)]
    kept = [item for item in items if not isinstance(item, Skipped)]
    if not kept:
        return None, None, skipped
    images, labels = default_collate(kept)
    return images, torch.as_tensor(labels, dtype=torch.int64), skipped


class _Batches:
    """The batch sampler handed to DataLoader; :class:`Loader` refills it every epoch."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# More loader processes than this is a typo, not a setting (each one is a full Python process).
MAX_WORKERS = 256


def check_workers(workers: object) -> None:
    """``ValueError`` unless ``workers`` is a number of loader processes: an integer from 0 to MAX_WORKERS."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= MAX_WORKERS:
        raise UsageError(f"workers must be an integer from 0 to {MAX_WORKERS}, got {workers!r}")


class Loader:
    """Iterable of ``(images float32 (B, 3, S, S) normalised, labels int64 (B,))`` for one rank.

    Cached datasets are batched and augmented in the calling process (vectorised; ``workers`` is
    ignored). Other datasets go through a DataLoader with ``workers`` processes; their unreadable
    files are dropped from the batch, warned about once and listed in :attr:`skipped`. A train batch
    left with fewer than 2 images that way comes out empty (no images, no labels) rather than not at
    all, so every process under ``torchrun`` takes the same number of steps (the trainer skips the
    step in all of them) and a step count stays a position in the epoch.
    Call :meth:`set_epoch` before each epoch: iterating twice at one epoch repeats the same batches.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        batch_size: int,
        train: bool,
        seed: int,
        workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(dataset, Sized):
            raise WrongTypeError(f"dataset must have a length, got {type(dataset).__name__}")
        if not _is_int(batch_size) or batch_size < 1:
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not _is_int(seed):
            raise UsageError(f"seed must be an integer, got {seed!r}")
        check_workers(workers)
        if not _is_int(world_size) or world_size < 1:
            raise UsageError(f"world_size must be an integer >= 1, got {world_size!r}")
        if not _is_int(rank) or not 0 <= rank < world_size:
            raise UsageError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = bool(train)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_step = 0
        self.skipped: list[str] = list(getattr(dataset, "skipped", ()))
        self._seen = set(self.skipped)
        n = len(dataset)
        if self.train:
            total = math.ceil(n / world_size) * world_size
            self._slots = (torch.arange(total) % max(n, 1))[rank::world_size]
        else:
            self._slots = torch.arange(n)[rank::world_size]
        self.num_samples = len(self._slots)
        if self.train and batch_size > self.num_samples:
            where = f" per rank ({world_size} ranks)" if world_size > 1 else ""
            raise UsageError(
                f"batch_size {batch_size} exceeds the {self.num_samples} training images{where}; "
                "lower batch_size or add images"
            )
        transform = getattr(dataset, "transform", None)
        self._alternate_flip = (
            self.train
            and isinstance(transform, BatchTransform | SampleTransform)
            and transform.augmentation.alternate_flip
        )
        self._batches = _Batches()
        self._dataloader: DataLoader[Any] | None = None
        if not isinstance(dataset, CachedImages):
            self._dataloader = DataLoader(
                dataset,
                batch_sampler=self._batches,
                num_workers=workers,
                collate_fn=_collate_skipping,
                persistent_workers=workers > 0,
                # Each new iterator draws its workers' base seed from this generator, not from the global
                # RNG: persistent workers draw once per process, so a resumed run would otherwise shift
                # the dropout and drop-path draws that follow. (Augmentation takes per-image seeds.)
                generator=torch.Generator().manual_seed(seed),
            )

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Make passes use the order and augmentation of ``epoch`` and begin at batch ``start_step``.

        Batches before ``start_step`` are not built (nor decoded), and the rest are exactly those of a
        full pass: a run resumed mid-epoch continues where it stopped. ``len()`` stays the full count.
        """
        if not _is_int(epoch) or epoch < 0:
            raise UsageError(f"epoch must be an integer >= 0, got {epoch!r}")
        if not _is_int(start_step) or not 0 <= start_step <= len(self):
            raise UsageError(f"start_step must be an integer in [0, {len(self)}], got {start_step!r}")
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        """Batches per epoch: train drops the last partial batch, eval keeps it."""
        if self.train:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _slot_batches(self) -> list[torch.Tensor]:
        size = self.batch_size
        return [self._slots[k * size : (k + 1) * size] for k in range(self.start_step, len(self))]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.dataset)
        generator = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=generator) if self.train else torch.arange(n)
        if isinstance(self.dataset, CachedImages):
            params = self.dataset.transform.draw(n, generator)
            if self._alternate_flip:  # the draw is kept whole, so crops and cutouts stay the same
                params = dataclasses.replace(params, flip=alternating_flips(n, self.seed, self.epoch)[order])
            for slots in self._slot_batches():
                yield self.dataset.batch(order[slots], params.take(slots))
            return
        if self.train and isinstance(self.dataset, FolderImages):
            seeds = torch.randint(0, 2**62, (n,), generator=generator)
            columns = [order, seeds]
            if self._alternate_flip:
                columns.append(alternating_flips(n, self.seed, self.epoch)[order])
            self._batches.batches = [
                list(zip(*(column[slots].tolist() for column in columns), strict=True))
                for slots in self._slot_batches()
            ]
        else:
            self._batches.batches = [order[slots].tolist() for slots in self._slot_batches()]
        assert self._dataloader is not None  # internal invariant: built for every non-cached dataset
        minimum = min(2, self.batch_size) if self.train else 1
        for images, labels, skipped in self._dataloader:
            self._note_skipped(skipped)
            if images is None or labels is None or len(images) < minimum:
                if self.train:
                    yield torch.empty(0), torch.empty(0, dtype=torch.int64)
                continue
            yield images, labels

    def _note_skipped(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            if path not in self._seen:
                self._seen.add(path)
                self.skipped.append(path)
                warnings.warn(f"skipping unreadable image: {reason}", stacklevel=3)


# The name the rest of the code builds loaders by; the class itself documents the guarantees.
build_loader = Loader
