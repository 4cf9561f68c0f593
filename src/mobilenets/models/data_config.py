"""What a model expects of its input images, in the form timm's data pipeline reads (``pretrained_cfg``).

``timm.data.resolve_data_config(model=m)`` builds its evaluation transform from ``m.pretrained_cfg``
and silently falls back to its own defaults (bicubic, crop 0.875) for anything missing, so every model
carries a complete one: the ImageNet recipe of our trainer for models built from scratch, the weights'
own preset once pretrained weights are loaded (see :mod:`mobilenets.weights.registry`).
"""

from __future__ import annotations

from typing import Any

Triple = tuple[float, float, float]
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)
# TensorFlow's (x - 127) / 128 on 0..255 pixels, in [0, 1] pixel units.
TF_MEAN: Triple = (127 / 255, 127 / 255, 127 / 255)
TF_STD: Triple = (128 / 255, 128 / 255, 128 / 255)
# Centre crop of ImageNet evaluation: resize the shorter side to resolution / 0.875, crop resolution.
DEFAULT_CROP_FRACTION = 0.875
REDUCTION = 32  # the papers' networks' final stride (less with strides dropped or dilated)


def data_config(
    *,
    architecture: str,
    resolution: int,
    resize_size: int | None = None,
    interpolation: str = "bilinear",
    mean: Triple = IMAGENET_MEAN,
    std: Triple = IMAGENET_STD,
    num_classes: int = 1000,
    in_channels: int = 3,
    total_stride: int = REDUCTION,
    **extra: Any,
) -> dict[str, Any]:
    """A timm-style ``pretrained_cfg``: input size, resize/crop, interpolation, normalisation, head names.

    ``crop_pct`` is ``resolution / resize_size``, which timm turns back into ``resize_size`` with
    ``floor(resolution / crop_pct)``. ``total_stride`` (the model's) sets ``pool_size`` and
    ``min_input_size``. ``extra`` adds keys (``tag``, ``license``, ``source``).
    """
    resize = resize_size or round(resolution / DEFAULT_CROP_FRACTION)
    pool = max(-(-resolution // total_stride), 1)  # ceil: a 260-px input ends at 9×9 after stride 32
    smallest = min(total_stride, REDUCTION)
    return {
        "architecture": architecture,
        "input_size": (in_channels, resolution, resolution),
        "min_input_size": (in_channels, smallest, smallest),
        "fixed_input_size": False,
        "pool_size": (pool, pool),
        "crop_pct": resolution / resize,
        "crop_mode": "center",
        "interpolation": interpolation,
        "mean": tuple(mean),
        "std": tuple(std),
        "num_classes": num_classes,
        "first_conv": "stem.conv",
        "classifier": "classifier",
        **extra,
    }
