"""Channel rounding shared by every model in the package."""

from __future__ import annotations


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never dropping more than 10%.

    This is the rule of the TensorFlow reference implementations of MobileNet v2/v3 and EfficientNet
    (and of torchvision and timm): hardware kernels prefer multiples of 8, and the 10% guard stops a
    small width multiplier from rounding a layer away. Every model here uses this one function for
    ``width_mult`` scaling, so widths agree with published checkpoints at every multiplier.
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be a positive integer, got {divisor}")
    if value <= 0:
        raise ValueError(f"channel count must be positive, got {value}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
