"""Train and eval transforms: vectorised on cached uint8 batches, per image (``transforms.v2``) for files.

Rules, shared by both paths (S = ``out_size``, E = round(S / 0.875)):

* train, source already S×S (CIFAR at 32, digits): zero-pad by S // 8 and random-crop S (the standard
  CIFAR recipe), then horizontal flip (unless ``flip=False``, e.g. digits);
* train, any other size: random-resized crop to S, area scale ``RRC_SCALE``, aspect ``RRC_RATIO``,
  then flip;
* optional ``augment`` policy after the crop: "trivialaugment" or "randaugment" (torchvision defaults);
* eval: identity when the source is already S×S, else resize the shorter side to E and centre-crop S;
* finally uint8 → float32 in [0, 1], normalised with the dataset's mean and std.

Randomness of a batch comes only from the parameters drawn by :meth:`BatchTransform.draw` (or the
per-image seed given to :class:`SampleTransform`), which the loader derives from (seed, epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import UsageError

AUGMENTATIONS = ("none", "trivialaugment", "randaugment")
RRC_SCALE = (0.35, 1.0)  # wider than ImageNet's 0.08: small images lose too much below ~1/3 area
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
EVAL_CROP_FRACTION = 0.875

Triple = tuple[float, float, float]


def check_augment(augment: str) -> None:
    """``ValueError`` unless ``augment`` is one of :data:`AUGMENTATIONS`."""
    if augment not in AUGMENTATIONS:
        raise UsageError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")


def eval_resize(out_size: int) -> int:
    """Shorter side before the eval centre crop: ``round(out_size / 0.875)`` (224 → 256, 32 → 37)."""
    return round(out_size / EVAL_CROP_FRACTION)


def crop_padding(out_size: int) -> int:
    """Zero padding of the pad-and-crop recipe: 4 px at 32 px, scaled with the size."""
    return max(1, out_size // 8)


def make_policy(augment: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The per-image policy for ``augment`` (None for "none"); it draws from the global torch RNG."""
    check_augment(augment)
    if augment == "trivialaugment":
        return v2.TrivialAugmentWide()
    if augment == "randaugment":
        return v2.RandAugment()
    return None


def _normalize(images: torch.Tensor, mean: Triple, std: Triple) -> torch.Tensor:
    """uint8 or 0..255 float images → float32 ``(x / 255 - mean) / std`` in one multiply-add."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32)
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32)
    out = images.to(torch.float32)  # a copy for uint8; float inputs are always fresh temporaries here
    if not out.is_contiguous():
        out = out.contiguous()
    return out.mul_(scale.view(1, 3, 1, 1)).sub_(shift.view(1, 3, 1, 1))


@dataclass(frozen=True)
class BatchParams:
    """Per-image random choices for a batch: crop (4 numbers), flip flag and policy seed."""

    crop: torch.Tensor  # float64 (n, 4): pad-crop (x, y, -, -) or resized-crop (x0, y0, w, h) fractions
    flip: torch.Tensor  # bool (n,)
    seeds: torch.Tensor  # int64 (n,)

    def take(self, positions: torch.Tensor) -> BatchParams:
        """The parameters at ``positions``."""
        return BatchParams(self.crop[positions], self.flip[positions], self.seeds[positions])


@dataclass(frozen=True)
class BatchTransform:
    """Crop, flip, policy and normalise a whole uint8 (B, 3, R, R) batch; R = ``source_size``."""

    source_size: int
    out_size: int
    mean: Triple
    std: Triple
    train: bool
    flip: bool = True
    augment: str = "none"

    def __post_init__(self) -> None:
        check_augment(self.augment)

    @cached_property
    def policy(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The per-image augmentation policy, built once."""
        return make_policy(self.augment)

    @property
    def pad_crop(self) -> bool:
        """Whether training uses pad-and-crop (source already at the output size)."""
        return self.source_size == self.out_size

    def draw(self, n: int, generator: torch.Generator | None = None) -> BatchParams:
        """Random parameters for ``n`` images (all zero for eval, which is deterministic)."""
        crop = torch.zeros((n, 4), dtype=torch.float64)
        flip = torch.zeros(n, dtype=torch.bool)
        seeds = torch.zeros(n, dtype=torch.int64)
        if not self.train:
            return BatchParams(crop, flip, seeds)
        if self.pad_crop:
            span = 2 * crop_padding(self.out_size) + 1
            crop[:, :2] = torch.randint(0, span, (n, 2), generator=generator).to(torch.float64)
        else:
            area = torch.empty(n, dtype=torch.float64).uniform_(*RRC_SCALE, generator=generator)
            log_ratio = torch.empty(n, dtype=torch.float64).uniform_(
                math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]), generator=generator
            )
            w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
            h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
            offsets = torch.rand((n, 2), dtype=torch.float64, generator=generator)
            crop = torch.stack([offsets[:, 0] * (1 - w), offsets[:, 1] * (1 - h), w, h], dim=1)
        if self.flip:
            flip = torch.rand(n, generator=generator) < 0.5
        if self.augment != "none":
            seeds = torch.randint(0, 2**62, (n,), generator=generator)
        return BatchParams(crop, flip, seeds)

    def __call__(self, images: torch.Tensor, params: BatchParams) -> torch.Tensor:
        """Float32 normalised, contiguous (B, 3, S, S) images."""
        out: torch.Tensor
        if not self.train:
            out = self._eval(images)
        elif self.pad_crop:
            out = self._pad_crop(images, params)
        else:
            out = self._resized_crop(images, params)
        if self.train and self.policy is not None:
            out = self._apply_policy(out, params.seeds, self.policy)
        return _normalize(out, self.mean, self.std)

    def _eval(self, images: torch.Tensor) -> torch.Tensor:
        if self.source_size == self.out_size:
            return images
        size = eval_resize(self.out_size)
        resized: torch.Tensor = images
        if self.source_size != size:
            resized = F.interpolate(
                images.to(torch.float32),
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=self.source_size > size,
            )
        return TF.center_crop(resized, [self.out_size, self.out_size])

    def _pad_crop(self, images: torch.Tensor, params: BatchParams) -> torch.Tensor:
        """Zero-pad, crop at per-image offsets and flip: one ``gather`` on the flattened uint8 batch."""
        size, pad = self.out_size, crop_padding(self.out_size)
        n, width = len(images), self.out_size + 2 * pad
        padded = F.pad(images, (pad, pad, pad, pad)).view(n, 3, width * width)
        steps = torch.arange(size)
        offsets = params.crop[:, :2].to(torch.int64)
        rows = offsets[:, 1:2] + steps  # (B, S)
        cols = offsets[:, 0:1] + steps
        cols = torch.where(params.flip[:, None], cols.flip(1), cols)
        flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, size * size)
        return padded.gather(2, flat.expand(n, 3, size * size)).view(n, 3, size, size)

    def _resized_crop(self, images: torch.Tensor, params: BatchParams) -> torch.Tensor:
        """Random-resized crop and flip as one affine ``grid_sample`` over the batch (float 0..255)."""
        x0, y0, w, h = params.crop.unbind(1)
        sign = 1.0 - 2.0 * params.flip.to(torch.float64)
        theta = torch.zeros((len(images), 2, 3), dtype=torch.float64)
        theta[:, 0, 0] = w * sign
        theta[:, 0, 2] = 2 * x0 + w - 1  # crop centre in [-1, 1] grid coordinates
        theta[:, 1, 1] = h
        theta[:, 1, 2] = 2 * y0 + h - 1
        size = (len(images), 3, self.out_size, self.out_size)
        grid = F.affine_grid(theta.to(torch.float32), list(size), align_corners=False)
        return F.grid_sample(
            images.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    @staticmethod
    def _apply_policy(
        images: torch.Tensor, seeds: torch.Tensor, policy: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Apply ``policy`` image by image, each seeded by its own seed (global RNG left untouched)."""
        if images.dtype != torch.uint8:
            images = images.round().clamp_(0, 255).to(torch.uint8)
        out = torch.empty((len(images), *images.shape[1:]), dtype=torch.uint8)
        with torch.random.fork_rng(devices=[]):
            for i, seed in enumerate(seeds.tolist()):
                torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed costs ~0.3 ms
                out[i] = policy(images[i])
        return out


class SampleTransform:
    """The same rules as :class:`BatchTransform` for one decoded uint8 (3, H, W) image of any size.

    Randomness comes from the global torch RNG; callers seed it per image for reproducibility.
    """

    def __init__(
        self, out_size: int, mean: Triple, std: Triple, train: bool, flip: bool = True, augment: str = "none"
    ) -> None:
        self.out_size = out_size
        self.mean = mean
        self.std = std
        self.train = train
        self.flip = flip
        self.augment = augment
        self.policy = make_policy(augment)
        self._pad_crop = v2.RandomCrop(out_size, padding=crop_padding(out_size))
        self._resized_crop = v2.RandomResizedCrop(out_size, scale=RRC_SCALE, ratio=RRC_RATIO, antialias=True)
        self._flip = v2.RandomHorizontalFlip()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Float32 normalised (3, S, S)."""
        size = self.out_size
        already = tuple(image.shape[-2:]) == (size, size)
        if self.train:
            image = self._pad_crop(image) if already else self._resized_crop(image)
            if self.flip:
                image = self._flip(image)
            if self.policy is not None:
                image = self.policy(image)
        elif not already:
            image = TF.center_crop(TF.resize(image, [eval_resize(size)], antialias=True), [size, size])
        return _normalize(image.unsqueeze(0), self.mean, self.std)[0]
