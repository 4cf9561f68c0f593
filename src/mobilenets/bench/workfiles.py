"""Where a bench run keeps what it prepares once and every timing process loads.

The preparing step (:mod:`.prepare`) writes these files and the timing processes (:mod:`.load`) only
read them, so both sides name them here. Names carry the model, resolution and (where it matters)
batch, so one folder can serve several runs; exported files found there are reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkFiles:
    """The files of one model, batch and resolution in the folder ``root``; ``pretrained``: the model's
    packaged weights (and int8 files calibrated on real images) instead of a seeded initialisation."""

    root: Path
    model: str
    batch: int
    resolution: int
    pretrained: bool = False

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

    def onnx(self, side: str, *, int8: bool) -> Path:
        """ONNX export of ``side``'s model taking this batch, or its int8 quantization."""
        return self.root / f"{side}_{self.stem}_{self.resolution}_{self.shape}{'.int8' if int8 else ''}.onnx"

    @property
    def pt2e_int8(self) -> Path:
        """Our model quantized by torchao's PT2E flow, as a ``.pt2`` program taking this batch."""
        return self.root / f"ours_{self.stem}_{self.resolution}_{self.shape}.pt2e_int8.pt2"

    def pte(self, *, int8: bool) -> Path:
        """Our model as an ExecuTorch program (XNNPACK), fp32 or int8, taking this batch."""
        return self.root / f"ours_{self.stem}_{self.resolution}_{self.shape}{'.int8' if int8 else ''}.pte"

    def openvino(self, side: str, *, int8: bool) -> Path:
        """``side``'s model as OpenVINO IR (``.xml``) taking this batch, or NNCF's int8 of it."""
        name = f"{side}_{self.stem}_{self.resolution}_{self.shape}{'.int8' if int8 else ''}.openvino.xml"
        return self.root / name
