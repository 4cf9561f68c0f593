"""Weights set from the training data before the first step: the patch-whitening stem."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ..data.card import spread_images
from ..data.splits import unaugmented
from ..errors import UsageError
from ..layers.whitening import PatchWhitening

# Images the whitening filters are fitted on, spread evenly over the training set: 5,000 CIFAR images
# give 4.8 M patches for a 12×12 covariance, far more than its eigenvectors need to settle.
WHITENING_IMAGES = 5000


def fit_to_data(model: nn.Module, dataset: Dataset[Any], *, count: int = WHITENING_IMAGES) -> int:
    """Fit ``model``'s :class:`PatchWhitening` stem on ``count`` training images; how many layers were fit.

    The images are taken without augmentation, prepared as the network sees them (normalised), the same
    ones on every process, so all ranks start from the same filters. Only a stem can be fitted this way:
    a whitening layer deeper in would need its own input, not the images.
    """
    layers = [module for module in model.modules() if isinstance(module, PatchWhitening)]
    if not layers:
        return 0
    if len(layers) > 1 or layers[0] is not getattr(model, "stem", None):
        raise UsageError("only a PatchWhitening stem can be fitted to the training images")
    images = spread_images(unaugmented(dataset), count)  # type: ignore[arg-type]
    layers[0].fit(images)
    return 1
