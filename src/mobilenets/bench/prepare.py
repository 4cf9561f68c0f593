"""The preparing step of ``mobilenets bench``: everything slow or shared, done once per run.

Before any variant is timed, the calling process writes what the timing processes load (see
:class:`.workfiles.WorkFiles`): the random input batch; our model's weights (seeded random
initialisation) and the same weights in torchvision's layout (mapped through
:func:`~mobilenets.weights.torchvision_keys.torchvision_key_map`); ONNX exports and their int8
calibrations; the PT2E int8 program. Timing processes then only load files, so no round pays for an
export, and every round times the very same files.

int8 variants are calibrated on random inputs: their *speed* does not depend on the ranges (accuracy
is measured by ``benchmarks/int8_accuracy.py`` and ``benchmarks/int8_pt2e.py``).
``torchvision_ort_int8`` is ONNX Runtime's usual recipe (QDQ, uint8 activations, int8 per-channel
weights); ``ours_int8`` is ``mobilenets export --int8``'s default (7-bit weights, which avoid u8×s8
saturation on CPUs without VNNI; see :mod:`mobilenets.deploy.quantize`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models import create_model
from .variants import ONNX_VARIANTS
from .workfiles import WorkFiles

CALIBRATION_IMAGES = 8


def _torchvision(model_name: str, ours: nn.Module) -> nn.Module | None:
    """torchvision's model of the same name with our model's weights, or None if it has none."""
    import torchvision

    from ..weights.torchvision_keys import torchvision_key_map

    builder = getattr(torchvision.models, model_name, None)
    if builder is None:
        return None
    reference: nn.Module = builder(weights=None).eval()
    key_map = {ours_key: theirs for theirs, ours_key in torchvision_key_map(ours).items()}  # type: ignore[arg-type]
    reference.load_state_dict({key_map[k]: v for k, v in ours.state_dict().items() if k in key_map})
    return reference


def _onnx(files: WorkFiles, variant: str, source: nn.Module, calibration: torch.Tensor) -> None:
    """Export ``source`` to ONNX (any batch) and, for an int8 variant, quantize it; reuse files found."""
    from ..deploy import export_onnx, quantize_onnx

    side = variant.split("_")[0]
    fp32 = files.onnx(side, int8=False)
    if not fp32.exists():
        export_onnx(source, fp32, resolution=files.resolution, dynamic_batch=True)
    int8 = files.onnx(side, int8=True)
    if variant.endswith("int8") and not int8.exists():  # ONNX Runtime's usual s8 for theirs, our int7
        weights = "int8" if side == "torchvision" else "int7"
        quantize_onnx(fp32, int8, calibration, method="minmax", weight_dtype=weights)


def _pt2e_int8(files: WorkFiles, ours: nn.Module, calibration: torch.Tensor) -> None:
    """Quantize our model with torchao's PT2E flow and save the program; reuse a file found."""
    from ..deploy import export_program, quantize_pt2e

    if files.pt2e_int8.exists():
        return
    int8 = quantize_pt2e(ours, [calibration], resolution=files.resolution)
    export_program(int8, files.pt2e_int8, resolution=files.resolution, dynamic_batch=files.batch != 1)


def prepare(files: WorkFiles, variants: tuple[str, ...]) -> dict[str, str]:
    """Write the files ``variants`` need into ``files.root``; returns those that cannot run, and why."""
    torch.manual_seed(0)
    ours = create_model(files.model).eval()
    x = torch.randn(files.batch, 3, files.resolution, files.resolution)
    calibration = torch.randn(CALIBRATION_IMAGES, 3, files.resolution, files.resolution)
    files.root.mkdir(parents=True, exist_ok=True)
    np.save(files.input, x.numpy())
    torch.save(ours.state_dict(), files.weights("ours"))
    wanted = any(variant.startswith("torchvision") for variant in variants)
    reference = _torchvision(files.model, ours) if wanted else None
    if reference is not None:
        torch.save(reference.state_dict(), files.weights("torchvision"))
    skipped: dict[str, str] = {}
    for variant in variants:
        side = variant.split("_")[0]
        if side == "torchvision" and reference is None:
            skipped[variant] = f"torchvision has no {files.model}"
        elif variant in ONNX_VARIANTS:
            _onnx(files, variant, reference if side == "torchvision" else ours, calibration)  # type: ignore[arg-type]
        elif variant == "ours_pt2e_int8":
            _pt2e_int8(files, ours, calibration)
    return skipped
