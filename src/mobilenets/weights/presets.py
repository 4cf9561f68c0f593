"""Preprocessing presets: how the images a set of weights was trained on must be prepared for it.

Like torchvision's weight metadata, a preset travels with the weights (in the safetensors metadata a
converted or trained checkpoint carries), so ``eval``, ``predict`` and ``export`` feed every model the
way it expects. Mean and std are in [0, 1] pixel units: TensorFlow's ``(x - 127) / 128`` on 0..255
pixels is ``mean = 127/255``, ``std = 128/255``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

import torch

from ..errors import ImageSizeError, UsageError
from ..models.data_config import IMAGENET_MEAN, IMAGENET_STD, TF_MEAN, TF_STD, Triple, data_config

# The resampling filters a preset may name (torchvision's ``InterpolationMode`` values; torchvision is
# imported when a transform is made, not with this module: its import costs seconds).
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in class-index order (shipped in ``mobilenets/data``)."""
    text = resources.files("mobilenets").joinpath("weights/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


@cache
def imagenet_synsets() -> tuple[str, ...]:
    """The WordNet IDs of the 1,000 ImageNet-1k classes (``n01440764`` for tench) in class-index order:
    the names of the class folders in ImageNet's own layout, sorted."""
    text = resources.files("mobilenets").joinpath("weights/imagenet_synsets.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


# Largest image decoded or made by resizing, in pixels: PIL's default decompression-bomb limit
# (1024**3 // 4 // 3, a gigabyte of float32 RGB). data.images checks decoded images against it.
MAX_IMAGE_PIXELS = 89_478_485


class _BoundedResize:
    """``ImageSizeError`` before ``inner`` resizes an image's shorter side to ``size`` when that would make
    more than :data:`MAX_IMAGE_PIXELS` (a 20000×1 strip becomes 5,120,000×256: 5 GB of floats)."""

    def __init__(self, size: int, inner: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.size, self.inner = size, inner

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        shorter, longer = min(height, width), max(height, width)
        resized = self.size * round(longer * self.size / max(shorter, 1))
        if resized > MAX_IMAGE_PIXELS:
            raise ImageSizeError(
                f"a {width}×{height} image resized to {self.size} on its shorter side would have {resized:,} "
                f"pixels, over MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}"
            )
        return self.inner(image)


class _UnlessExactSize:
    """``inner`` for every image but one already ``size`` × ``size``, which passes unchanged."""

    def __init__(self, size: int, inner: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.size, self.inner = size, inner

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image if tuple(image.shape[-2:]) == (self.size, self.size) else self.inner(image)


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize_size`` (``interpolation``), centre-crop ``crop_size``, normalise.

    ``classes`` names the model's outputs (empty when unknown). ``exact_size_as_is``: an image already
    ``crop_size`` square is taken as it is, as training here validates data of its own size (CIFAR-10
    at 32, say), where resizing to ``resize_size`` and cropping back would zoom in on it.
    """

    crop_size: int
    resize_size: int
    interpolation: str = "bilinear"
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    classes: tuple[str, ...] = field(default=(), repr=False)
    exact_size_as_is: bool = False

    def __post_init__(self) -> None:
        for name in ("crop_size", "resize_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if self.resize_size < self.crop_size:
            raise UsageError(
                f"resize_size {self.resize_size} is smaller than crop_size {self.crop_size}; "
                "the centre crop must fit inside the resized image"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(
                f"unknown interpolation {self.interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}"
            )
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3:
                raise UsageError(f"{name} must have 3 values (one per RGB channel), got {values}")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            raise UsageError(f"std must be positive, got {self.std}")
        object.__setattr__(self, "classes", tuple(self.classes))

    def transform(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 (3, H, W) image (or a PIL image) → normalised float32 (3, crop, crop)."""
        from torchvision.transforms import v2

        interpolation = v2.InterpolationMode(self.interpolation)
        resize_crop: Callable[[torch.Tensor], torch.Tensor] = v2.Compose(
            [
                v2.Resize(self.resize_size, interpolation=interpolation, antialias=True),
                v2.CenterCrop(self.crop_size),
            ]
        )
        resize_crop = _BoundedResize(self.resize_size, resize_crop)
        if self.exact_size_as_is:
            resize_crop = _UnlessExactSize(self.crop_size, resize_crop)
        return v2.Compose(
            [
                v2.ToImage(),
                resize_crop,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )

    def data_config(
        self, *, architecture: str, num_classes: int = 1000, in_channels: int = 3, **extra: Any
    ) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` for a model fed this way (see :mod:`mobilenets.models.data_config`)."""
        return data_config(
            architecture=architecture,
            resolution=self.crop_size,
            resize_size=self.resize_size,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            num_classes=num_classes,
            in_channels=in_channels,
            **extra,
        )

    def to_metadata(self) -> dict[str, str]:
        """String fields for safetensors metadata (see :meth:`from_metadata`)."""
        fields = asdict(self)
        fields.pop("classes")
        return {"preprocess": json.dumps(fields, sort_keys=True), "classes": json.dumps(list(self.classes))}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Preprocess:
        fields = json.loads(metadata["preprocess"])
        classes = tuple(json.loads(metadata.get("classes", "[]")))
        return cls(**fields, classes=classes)


def _imagenet(**kwargs: object) -> Callable[[], Preprocess]:
    return lambda: Preprocess(classes=imagenet_classes(), **kwargs)  # type: ignore[arg-type]


# name → factory (the class list is read lazily, on first use).
PRESETS: dict[str, Callable[[], Preprocess]] = {
    # torchvision's ImageNet weights: resize 256 bilinear, crop 224, ImageNet statistics.
    "imagenet": _imagenet(crop_size=224, resize_size=256),
    # TensorFlow-trained EfficientNet-Lite: bicubic, crop fraction 0.875, (x - 127) / 128.
    "efficientnet_lite": _imagenet(
        crop_size=224, resize_size=256, interpolation="bicubic", mean=TF_MEAN, std=TF_STD
    ),
    # TF-slim / Keras MobileNets (Inception preprocessing): (x - 127.5) / 127.5, bilinear.
    "inception": _imagenet(crop_size=224, resize_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
}


def get_preset(name: str) -> Preprocess:
    """The preset called ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in PRESETS:
        raise UsageError(f"unknown preprocessing preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def with_sizes(
    preprocess: Preprocess,
    *,
    crop_size: int | None = None,
    resize_size: int | None = None,
    interpolation: str | None = None,
) -> Preprocess:
    """``preprocess`` with the crop, resize and interpolation given (``None`` keeps its own).

    For weights trained with other sizes than their preset says (timm's bicubic models, a Lite4 trained
    at 380). A crop given alone keeps the preset's crop fraction: ``crop_size=380`` on a 224/256 preset
    resizes to 434.
    """
    if crop_size is not None and resize_size is None and isinstance(crop_size, int):
        resize_size = max(crop_size, round(crop_size * preprocess.resize_size / preprocess.crop_size))
    return replace(
        preprocess,
        crop_size=preprocess.crop_size if crop_size is None else crop_size,
        resize_size=preprocess.resize_size if resize_size is None else resize_size,
        interpolation=preprocess.interpolation if interpolation is None else interpolation,
    )
