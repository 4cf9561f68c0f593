"""The two dataset kinds the loader knows: decoded images cached in memory, and files read on demand."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ..errors import ImageSizeError, UsageError
from .images import ImageDecodeError, decode_image_file
from .transforms import BatchParams, BatchTransform, SampleTransform


class CachedImages(Dataset[tuple[torch.Tensor, int]]):
    """Decoded uint8 (N, 3, R, R) images in memory, transformed a whole batch at a time.

    ``skipped`` lists the files left out because they could not be decoded when the cache was built.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: BatchTransform,
        skipped: Sequence[str] = (),
    ) -> None:
        size = transform.source_size
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            got = f"{images.dtype} {tuple(images.shape)}"
            raise UsageError(f"cached images must be uint8 (N, 3, {size}, {size}), got {got}")
        if labels.shape != (len(images),):
            raise UsageError(f"need one label per image: {len(images)} images, labels {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform
        self.skipped = tuple(skipped)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor, params: BatchParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformed images and labels at ``indices`` with per-image ``params``."""
        images = self.images.index_select(0, indices)  # much faster than images[indices] on uint8
        return self.transform(images, params), self.labels.index_select(0, indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One transformed image (random parameters from the global RNG) and its label."""
        params = self.transform.draw(1)
        image = self.transform(self.images[index : index + 1], params)[0]
        return image, int(self.labels[index])


@dataclass(frozen=True)
class Skipped:
    """What :class:`FolderImages` returns instead of an image it could not decode."""

    path: str
    reason: str


class FolderImages(Dataset["tuple[torch.Tensor, int] | Skipped"]):
    """Image files decoded on demand, for folders too big to cache; runs inside DataLoader workers.

    An item is an index, or ``(index, seed)`` to seed the random transform of that one image (so the
    result does not depend on which worker process decodes it), or ``(index, seed, flip)`` to decide
    its mirroring too (a :class:`SampleTransform`'s ``flip``). Unreadable files give :class:`Skipped`.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.skipped: tuple[str, ...] = ()  # nothing is decoded up front

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        """int64 labels of all samples."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __getitem__(
        self, item: int | tuple[int, int] | tuple[int, int, bool]
    ) -> tuple[torch.Tensor, int] | Skipped:
        seed: int | None = None
        flip: bool | None = None
        if isinstance(item, tuple):
            index, seed, *rest = item
            flip = rest[0] if rest else None
        else:
            index = item
        path, label = self.samples[index]
        try:
            image = decode_image_file(path)
            if seed is None:
                return self.transform(image), label
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                if flip is None:
                    return self.transform(image), label
                if not isinstance(self.transform, SampleTransform):
                    raise UsageError("an item's flip needs a SampleTransform to apply it")
                return self.transform(image, flip=bool(flip)), label
        except ImageDecodeError as err:
            return Skipped(path, str(err))
        except ImageSizeError as err:  # decoded, but its preprocessing would blow it up
            return Skipped(path, f"{path}: {err}")
