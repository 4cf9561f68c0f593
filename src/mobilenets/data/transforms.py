"""Train and eval transforms: vectorised on cached uint8 batches, per image (``transforms.v2``) for files.

Rules, shared by both paths (S = ``out_size``, E = round(S / 0.875)):

* train, source already S×S (CIFAR at 32, digits): zero-pad by S // 8 and random-crop S (the standard
  CIFAR recipe; :class:`Augmentation` sets the padding and its fill), then horizontal flip (unless
  ``flip=False``, e.g. digits);
* train, any other size: random-resized crop to S, area scale ``RRC_SCALE``, aspect ``RRC_RATIO``,
  then flip;
* optional ``augment`` policy after the crop: "trivialaugment" or "randaugment" (torchvision defaults);
* eval: identity when the source is already S×S, else resize the shorter side to E and centre-crop S;
* then uint8 → float32 in [0, 1], normalised with the dataset's mean and std;
* train, optional cutout last: an N×N square inside the image set to the mean (0 once normalised).

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
PADDING_MODES = ("zeros", "reflect")
RRC_SCALE = (0.35, 1.0)  # wider than ImageNet's 0.08: small images lose too much below ~1/3 area
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
EVAL_CROP_FRACTION = 0.875

Triple = tuple[float, float, float]


def check_augment(augment: str) -> None:
    """``ValueError`` unless ``augment`` is one of :data:`AUGMENTATIONS`."""
    if augment not in AUGMENTATIONS:
        raise UsageError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")


@dataclass(frozen=True)
class Augmentation:
    """What training adds to crop and flip, and how pad-and-crop pads.

    ``policy``: one of :data:`AUGMENTATIONS`. ``cutout``: side in pixels of a square, placed at random
    wholly inside each image, set to the dataset mean (DeVries & Taylor 2017; 0: off). ``padding``:
    the pad-and-crop shift in pixels (None: S // 8, 4 px at 32); ``padding_mode``: "zeros" or
    "reflect" (mirror the image into the border instead of black). ``alternate_flip``: mirror each
    image in every other epoch instead of by a coin toss each epoch (airbench's derandomised flip,
    Jordan 2024, arXiv 2404.00498): the first epoch tosses a coin per image, each later epoch shows the
    other side, so every two epochs show both; see :func:`mobilenets.data.loader.alternating_flips`.
    """

    policy: str = "none"
    cutout: int = 0
    padding: int | None = None
    padding_mode: str = "zeros"
    alternate_flip: bool = False

    def __post_init__(self) -> None:
        check_augment(self.policy)
        if not isinstance(self.alternate_flip, bool):
            raise UsageError(f"alternate_flip must be True or False; got {self.alternate_flip!r}")
        _check_pixels("cutout", self.cutout)
        if self.padding is not None:
            _check_pixels("padding", self.padding)
        if self.padding_mode not in PADDING_MODES:
            raise UsageError(
                f"padding_mode must be one of {', '.join(PADDING_MODES)}; got {self.padding_mode!r}"
            )

    def check_size(self, out_size: int) -> None:
        """``UsageError`` where the cutout or the reflected padding do not fit ``out_size`` pixels."""
        if self.cutout > out_size:
            raise UsageError(f"cutout {self.cutout} px is larger than the {out_size} px image")
        if self.padding_mode == "reflect" and self.pad(out_size) >= out_size:
            raise UsageError(
                f"reflect padding must be below the image size {out_size}; got {self.pad(out_size)}"
            )

    def pad(self, out_size: int) -> int:
        """The pad-and-crop shift at ``out_size``."""
        return crop_padding(out_size) if self.padding is None else self.padding


def _check_pixels(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{name} must be a whole number of pixels >= 0; got {value!r}")


def check_flipped(augmentation: Augmentation, flip: bool) -> None:
    """Refuse ``alternate_flip`` for training images that are never flipped (``flip=False``: digits)."""
    if augmentation.alternate_flip and not flip:
        raise UsageError(
            "alternate_flip needs training images that are flipped; this data is not (digits are not "
            "mirror-symmetric)"
        )


def as_augmentation(augment: str | Augmentation) -> Augmentation:
    """``augment`` as an :class:`Augmentation` (a policy name means that policy and nothing else)."""
    return augment if isinstance(augment, Augmentation) else Augmentation(policy=augment)


def cutout_(images: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size``×``size`` square of each image in place, its top-left corner at ``corners`` (n, 2) =
    (x, y)."""
    if size == 0:
        return images
    rows, cols = torch.arange(images.shape[-2]), torch.arange(images.shape[-1])
    inside_x = (cols >= corners[:, 0:1]) & (cols < corners[:, 0:1] + size)  # (n, W)
    inside_y = (rows >= corners[:, 1:2]) & (rows < corners[:, 1:2] + size)  # (n, H)
    return images.masked_fill_((inside_y[:, :, None] & inside_x[:, None, :])[:, None], 0.0)


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
    """Per-image random choices for a batch: crop (4 numbers), flip flag, policy seed, cutout corner."""

    crop: torch.Tensor  # float64 (n, 4): pad-crop (x, y, -, -) or resized-crop (x0, y0, w, h) fractions
    flip: torch.Tensor  # bool (n,)
    seeds: torch.Tensor  # int64 (n,)
    cutout: torch.Tensor  # int64 (n, 2): the square's top-left (x, y)

    def take(self, positions: torch.Tensor) -> BatchParams:
        """The parameters at ``positions``."""
        return BatchParams(
            self.crop[positions], self.flip[positions], self.seeds[positions], self.cutout[positions]
        )


@dataclass(frozen=True)
class BatchTransform:
    """Crop, flip, policy and normalise a whole uint8 (B, 3, R, R) batch; R = ``source_size``."""

    source_size: int
    out_size: int
    mean: Triple
    std: Triple
    train: bool
    flip: bool = True
    augment: str | Augmentation = "none"

    def __post_init__(self) -> None:
        self.augmentation.check_size(self.out_size)
        check_flipped(self.augmentation, self.flip)

    @cached_property
    def augmentation(self) -> Augmentation:
        """``augment`` as an :class:`Augmentation`."""
        return as_augmentation(self.augment)

    @cached_property
    def policy(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The per-image augmentation policy, built once."""
        return make_policy(self.augmentation.policy)

    @property
    def pad_crop(self) -> bool:
        """Whether training uses pad-and-crop (source already at the output size)."""
        return self.source_size == self.out_size

    def draw(self, n: int, generator: torch.Generator | None = None) -> BatchParams:
        """Random parameters for ``n`` images (all zero for eval, which is deterministic)."""
        crop = torch.zeros((n, 4), dtype=torch.float64)
        flip = torch.zeros(n, dtype=torch.bool)
        seeds = torch.zeros(n, dtype=torch.int64)
        cutout = torch.zeros((n, 2), dtype=torch.int64)
        augmentation = self.augmentation
        if not self.train:
            return BatchParams(crop, flip, seeds, cutout)
        if self.pad_crop:
            span = 2 * augmentation.pad(self.out_size) + 1
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
        if augmentation.policy != "none":
            seeds = torch.randint(0, 2**62, (n,), generator=generator)
        if augmentation.cutout:  # drawn last, so runs without it keep their draws
            cutout = torch.randint(0, self.out_size - augmentation.cutout + 1, (n, 2), generator=generator)
        return BatchParams(crop, flip, seeds, cutout)

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
        out = _normalize(out, self.mean, self.std)
        return cutout_(out, params.cutout, self.augmentation.cutout) if self.train else out

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
        """Pad, crop at per-image offsets and flip: one ``gather`` on the flattened uint8 batch (reflect
        padding is only a reflection of the gathered indices)."""
        size, pad = self.out_size, self.augmentation.pad(self.out_size)
        reflect = self.augmentation.padding_mode == "reflect"
        n, width = len(images), self.out_size if reflect else self.out_size + 2 * pad
        padded = images if reflect else F.pad(images, (pad, pad, pad, pad))
        padded = padded.reshape(n, 3, width * width)
        steps = torch.arange(size)
        offsets = params.crop[:, :2].to(torch.int64)
        rows = offsets[:, 1:2] + steps  # (B, S), in padded coordinates
        cols = offsets[:, 0:1] + steps
        if reflect:  # back to image coordinates, mirrored at the edges (the edge pixel not repeated)
            rows, cols = (_reflect(index - pad, size) for index in (rows, cols))
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


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices in [-size + 1, 2 * size - 2] mirrored into [0, size) as ``F.pad(mode="reflect")`` does."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


class SampleTransform:
    """The same rules as :class:`BatchTransform` for one decoded uint8 (3, H, W) image of any size.

    Randomness comes from the global torch RNG; callers seed it per image for reproducibility.
    """

    def __init__(
        self,
        out_size: int,
        mean: Triple,
        std: Triple,
        train: bool,
        flip: bool = True,
        augment: str | Augmentation = "none",
    ) -> None:
        self.out_size = out_size
        self.mean = mean
        self.std = std
        self.train = train
        self.flip = flip
        self.augmentation = as_augmentation(augment)
        self.augmentation.check_size(out_size)
        check_flipped(self.augmentation, flip)
        self.policy = make_policy(self.augmentation.policy)
        mode = "constant" if self.augmentation.padding_mode == "zeros" else "reflect"
        self._pad_crop = v2.RandomCrop(out_size, padding=self.augmentation.pad(out_size), padding_mode=mode)
        self._resized_crop = v2.RandomResizedCrop(out_size, scale=RRC_SCALE, ratio=RRC_RATIO, antialias=True)
        self._flip = v2.RandomHorizontalFlip()

    def __call__(self, image: torch.Tensor, *, flip: bool | None = None) -> torch.Tensor:
        """Float32 normalised (3, S, S); ``flip`` decides the mirroring in training (None: a coin toss)."""
        size = self.out_size
        already = tuple(image.shape[-2:]) == (size, size)
        if self.train:
            image = self._pad_crop(image) if already else self._resized_crop(image)
            if self.flip and flip is None:
                image = self._flip(image)
            elif self.flip and flip:
                image = TF.horizontal_flip(image)
            if self.policy is not None:
                image = self.policy(image)
        elif not already:
            image = TF.center_crop(TF.resize(image, [eval_resize(size)], antialias=True), [size, size])
        out = _normalize(image.unsqueeze(0), self.mean, self.std)
        side = self.augmentation.cutout
        if self.train and side:
            cutout_(out, torch.randint(0, size - side + 1, (1, 2)), side)
        return out[0]


def check_pad_crop_applies(train_set: object, *, crop_padding: int | None, padding_mode: str) -> None:
    """Refuse pad-and-crop options where the cached training images are not at the training size: those
    are random-resized-cropped, so ``--crop-padding`` and ``--padding-mode`` would be recorded unused.
    (Streamed folders choose per image, by its size, and are not checked.)"""
    transform = getattr(train_set, "transform", None)
    if not isinstance(transform, BatchTransform) or transform.pad_crop:
        return
    given = [flag for flag, used in (("--crop-padding", crop_padding is not None),
                                     ("--padding-mode", padding_mode != "zeros")) if used]  # fmt: skip
    if given:
        raise UsageError(
            f"{' and '.join(given)} would change nothing in this run: the training images are "
            f"{transform.source_size} px, not --resolution {transform.out_size}, so they are "
            "random-resized-cropped, not padded and cropped; leave the option out"
        )
