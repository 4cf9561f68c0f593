"""Where a bench run keeps what it prepares once and every timing process loads.

The preparing step (:mod:`.prepare`) writes these files and the timing processes (:mod:`.load`) only
read them, so both sides name them here. Names carry the model, resolution, (where it matters)
batch and, for int8 files, what they were calibrated on, so one folder can serve several runs;
exported files found there are reused. What this machine decided when it prepared them (the int8
weight type of ours, ``--kernels tune``'s choice) is not in the names: a folder is this machine's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

RANDOM_CALIBRATION = "random"


def calibration_tag(images: torch.Tensor | None) -> str:
    """How int8 file names say what they were calibrated on: ``random`` (the preparing step's seeded
    random inputs) or a digest of ``images``, so that no file calibrated on other images is reused."""
    if images is None:
        return RANDOM_CALIBRATION
    data = images.detach().float().cpu().contiguous().numpy().tobytes()
    return f"calib-{hashlib.sha256(data).hexdigest()[:12]}"


@dataclass(frozen=True)
class WorkFiles:
    """The files of one model, batch and resolution in the folder ``root``; ``pretrained``: the model's
    packaged weights instead of a seeded initialisation; ``calibration``: what the int8 files are
    calibrated on (:func:`calibration_tag`)."""

    root: Path
    model: str
    batch: int
    resolution: int
    pretrained: bool = False
    calibration: str = RANDOM_CALIBRATION

    @property
    def stem(self) -> str:
        """The model as file names say it: ``mobilenet_v2``, or ``mobilenet_v2.pretrained``."""
        return f"{self.model}.pretrained" if self.pretrained else self.model

    @property
    def input(self) -> Path:
        """The random float32 NCHW batch every variant classifies (a ``.npy`` file)."""
        return self.root / f"input_{self.batch}x{self.resolution}.npy"

    def weights(self, side: str) -> Path:
        """The state dict of ``side`` (``ours`` or ``torchvision``), same weights in each one's layout."""
        return self.root / f"{side}_{self.stem}.weights.pt"

    @property
    def dynamic_batch(self) -> bool:
        """Whether exported files leave the batch free: at batch 1 they fix it, as ``mobilenets export``
        and ``torch.onnx.export`` do by default (a fixed shape runs faster in OpenVINO); see ``shape``."""
        return self.batch != 1

    @property
    def shape(self) -> str:
        """The exported files' input shape as their names say it: ``b1`` (fixed) or ``dynamic``."""
        return "dynamic" if self.dynamic_batch else "b1"

    def _name(self, side: str, int8: bool, suffix: str) -> Path:
        """``side``'s file of this model, resolution and shape; an int8 one says its calibration."""
        calibrated = f".int8-{self.calibration}" if int8 else ""
        return self.root / f"{side}_{self.stem}_{self.resolution}_{self.shape}{calibrated}{suffix}"

    def onnx(self, side: str, *, int8: bool) -> Path:
        """ONNX export of ``side``'s model taking this batch, or its int8 quantization."""
        return self._name(side, int8, ".onnx")

    @property
    def pt2e_int8(self) -> Path:
        """Our model quantized by torchao's PT2E flow, as a ``.pt2`` program taking this batch."""
        return self._name("ours", True, ".pt2e.pt2")

    def pte(self, *, int8: bool) -> Path:
        """Our model as an ExecuTorch program (XNNPACK), fp32 or int8, taking this batch."""
        return self._name("ours", int8, ".pte")

    def openvino(self, side: str, *, int8: bool, uint8_input: bool = False) -> Path:
        """``side``'s model as OpenVINO IR (``.xml``) taking this batch, or NNCF's int8 of it; with
        ``uint8_input``, that int8 IR taking its input quantized (uint8 NHWC)."""
        return self._name(side, int8, ".uint8-input.openvino.xml" if uint8_input else ".openvino.xml")
