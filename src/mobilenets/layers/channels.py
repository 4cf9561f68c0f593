"""Channel rounding shared by every model in the package."""

from __future__ import annotations

import math
import numbers
from typing import TypeGuard

from ..errors import UsageError


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never dropping more than 10%.

    This is the rule of the TensorFlow reference implementations of MobileNet v2/v3 and EfficientNet
    (and of torchvision and timm): hardware kernels prefer multiples of 8, and the 10% guard stops a
    small width multiplier from rounding a layer away. Every model here uses this one function for
    ``width_mult`` scaling, so widths agree with published checkpoints at every multiplier.
    ``min_value`` (default: ``divisor``) is the smallest result.
    """
    if not is_positive_int(divisor):
        raise UsageError(f"divisor must be a positive integer, got {divisor!r}")
    if min_value is not None and not is_positive_int(min_value):
        raise UsageError(f"min_value must be a positive integer or None, got {min_value!r}")
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"channel count must be a positive finite number, got {value!r}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def is_positive_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` (not a ``bool``) greater than zero."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_positive_ints(**values: object) -> None:
    """Raise a :class:`UsageError` naming the first of ``values`` (name=value) not a positive int."""
    for label, value in values.items():
        if not is_positive_int(value):
            raise UsageError(f"{label} must be a positive integer, got {value!r}")


def is_real(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a real number (int, float, NumPy scalars; not a bool), NaN included."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
