"""Progressive resizing: early epochs train on smaller images, later ones at full size.

A convolutional network ending in global pooling takes any input size, and an image at scale ``s``
costs about ``s²`` of the compute. Coarse features are learnt as well from small images, so the first
epochs train on downscaled batches (bilinear, antialiased), growing linearly to full size; the last
epochs, and every evaluation, run at full size, so the batch-norm statistics and the classifier end
matched to what the model is scored on (fast.ai's DAWNBench ImageNet runs; MosaicML Composer's
``ProgressiveResizing``). The size depends only on the epoch, so a resumed run trains on the same sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UsageError

SIZE_STEP = 4  # sizes are multiples of this: a network's strides then divide them more often


def train_size(epoch: int, *, epochs: int, full: int, start: float, until: float, minimum: int) -> int:
    """The training image side in epoch ``epoch`` (1-based) of ``epochs``.

    ``start``: the first epoch's scale of ``full`` (1.0: no resizing); ``until``: the fraction of the
    epochs after which training runs at full size (the last epoch always does, unless it is the
    first). In between, the scale grows linearly with the epoch, rounded to a multiple of
    :data:`SIZE_STEP`, never below ``minimum`` (the model's ``min_input_size``) nor above ``full``.
    """
    ramp = until * epochs
    # The first epoch is at ``start`` however short the run; the last at full size in any run of two
    # or more (``until`` = 1 included): the model ends matched to the size it is scored at.
    if start >= 1.0 or epoch > max(ramp, 1.0) or epoch == epochs > 1:
        return full
    scale = start + (1.0 - start) * (epoch - 1) / ramp
    size = SIZE_STEP * round(scale * full / SIZE_STEP)
    return max(min(size, full), min(minimum, full))


def check_resizing_applies(model: str, minimum: int, full: int) -> None:
    """Refuse progressive resizing where the network's smallest input (its total stride) is already the
    training size: every epoch would run at full size, and the recorded option would say otherwise."""
    if minimum >= full:
        raise UsageError(
            f"progressive resizing would change nothing: {model}'s smallest input is {minimum} px (its "
            f"total stride), and it trains at {full}; raise --resolution, or leave --progressive-resize out"
        )


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` (N, C, H, W) resized to ``size``×``size`` (bilinear, antialiased), memory format kept."""
    if images.shape[-2:] == (size, size):
        return images
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
