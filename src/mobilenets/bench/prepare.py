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
weights); ``ours_int8`` is ``mobilenets export --int8``'s default (7-bit weights on CPUs without
VNNI, which avoid u8×s8 saturation, 8-bit ones with VNNI; see :mod:`mobilenets.deploy.quantize`).
ExecuTorch and OpenVINO int8 files are calibrated the same way (XNNPACK's quantizer; NNCF).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import nn

from ..errors import ExternalError, UsageError
from ..models import create_model
from .variants import EXECUTORCH_VARIANTS, ONNX_VARIANTS, OPENVINO_VARIANTS
from .workfiles import WorkFiles, calibration_tag

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
    """Export ``source`` to ONNX and, for an int8 variant, quantize it; reuse files found."""
    from ..deploy import export_onnx, quantize_onnx
    from ..deploy.quantize import default_weight_dtype

    side = variant.split("_")[0]
    fp32 = files.onnx(side, int8=False)
    if not fp32.exists():
        export_onnx(source, fp32, resolution=files.resolution, dynamic_batch=files.dynamic_batch)
    int8 = files.onnx(side, int8=True)
    if variant.endswith("int8") and not int8.exists():  # ONNX Runtime's usual s8 for theirs, our default
        weights = "int8" if side == "torchvision" else default_weight_dtype()
        quantize_onnx(fp32, int8, calibration, method="minmax", weight_dtype=weights)


def _pt2e_int8(files: WorkFiles, ours: nn.Module, calibration: torch.Tensor) -> None:
    """Quantize our model with torchao's PT2E flow and save the program; reuse a file found."""
    from ..deploy import export_program, quantize_pt2e

    if files.pt2e_int8.exists():
        return
    int8 = quantize_pt2e(ours, [calibration], resolution=files.resolution)
    export_program(int8, files.pt2e_int8, resolution=files.resolution, dynamic_batch=files.dynamic_batch)


def _executorch(files: WorkFiles, variant: str, ours: nn.Module, calibration: torch.Tensor) -> str | None:
    """Lower our model to an ExecuTorch program (int8: XNNPACK's quantizer); why it cannot, or None."""
    from ..deploy.executorch_export import MAX_PTE_BATCH, export_executorch, quantize_xnnpack

    if files.batch > MAX_PTE_BATCH:
        return f"ExecuTorch programs here take batches of up to {MAX_PTE_BATCH}, not {files.batch}"
    int8 = variant.endswith("int8")
    path = files.pte(int8=int8)
    if not path.exists():
        program = quantize_xnnpack(ours, [calibration], resolution=files.resolution) if int8 else ours
        export_executorch(program, path, resolution=files.resolution, dynamic_batch=files.dynamic_batch)
    return None


def _openvino(files: WorkFiles, variant: str, source: nn.Module, calibration: torch.Tensor) -> None:
    """OpenVINO IR of ``source`` (int8: NNCF; ``*_uint8``: the int8 IR taking uint8 NHWC input); ours
    as ``mobilenets export --format openvino --kernels tune [--uint8-input]`` writes it (the
    convolution kernels timed fastest on this machine), torchvision's from its ONNX file, as issue 21
    measured the anchor: the ONNX file a user already has, read by OpenVINO with its defaults (its
    ``uint8`` IR is that int8 IR with :func:`~mobilenets.deploy.openvino_input.take_quantized_input`)."""
    side, int8, uint8 = variant.split("_")[0], variant.endswith("int8"), variant.endswith("uint8")
    path = files.openvino(side, int8=int8, uint8_input=uint8)
    if path.exists():
        return
    if side == "ours":
        from ..deploy.openvino_export import export_openvino

        export_openvino(
            source,
            path,
            resolution=files.resolution,
            dynamic_batch=files.dynamic_batch,
            calibration=calibration if int8 else None,
            kernels="tune",
            uint8_input=uint8,
        )
        return
    from ..deploy import export_onnx
    from ..deploy.openvino_export import openvino_api, quantize_nncf, staged_ir
    from ..deploy.openvino_input import take_quantized_input

    ov = openvino_api()
    if uint8:
        _openvino(files, "torchvision_openvino_int8", source, calibration)
        model = ov.Core().read_model(str(files.openvino(side, int8=True)))
        model, _ = take_quantized_input(model)
    else:
        onnx = files.onnx(side, int8=False)
        if not onnx.exists():
            export_onnx(source, onnx, resolution=files.resolution, dynamic_batch=files.dynamic_batch)
        model = ov.Core().read_model(str(onnx))
        model = quantize_nncf(model, calibration) if int8 else model
    with staged_ir(path) as staged:  # a half-written IR would be reused by the next run in this folder
        ov.save_model(model, staged, compress_to_fp16=False)


def missing_packages(variant: str) -> list[str]:
    """The packages of the deploy extra that ``variant`` needs and this environment lacks."""
    needs: tuple[str, ...] = ()
    if variant in ONNX_VARIANTS:
        needs = ("onnx", "onnxscript", "onnxruntime")
    elif variant in OPENVINO_VARIANTS:
        needs = ("onnx", "onnxscript", "openvino", *(("nncf",) if variant.endswith("int8") else ()))
    elif variant in EXECUTORCH_VARIANTS:
        needs = ("executorch",)
    elif variant == "ours_pt2e_int8":
        needs = ("torchao",)
    return [name for name in needs if importlib.util.find_spec(name) is None]


def prepare(
    files: WorkFiles, variants: tuple[str, ...], calibration: torch.Tensor | None = None
) -> dict[str, str]:
    """Write the files ``variants`` need into ``files.root``; returns those that cannot run, and why.

    ``files.pretrained`` takes the model's packaged weights; int8 files are then calibrated on
    ``calibration`` (real images, prepared as :func:`bench_calibration` gives them), else on random
    inputs (speed only).
    """
    if calibration_tag(calibration) != files.calibration:  # the int8 files' names would lie
        raise UsageError(
            f"the int8 files are named for calibration {files.calibration!r}, not for the images given "
            f"({calibration_tag(calibration)!r}): build the WorkFiles with calibration_tag(calibration)"
        )
    torch.manual_seed(0)
    ours = _ours(files)
    x = torch.randn(files.batch, 3, files.resolution, files.resolution)
    if calibration is None:
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
        missing = missing_packages(variant)
        if missing:
            skipped[variant] = f"{', '.join(missing)} not installed: pip install 'mobilenets[deploy]'"
        elif side == "torchvision" and reference is None:
            skipped[variant] = f"torchvision has no {files.model}"
        else:
            source = reference if side == "torchvision" else ours
            try:  # a runtime that is installed but fails (it will not import, say) skips only its variant
                reason = _prepare_one(files, variant, source, calibration)  # type: ignore[arg-type]
            except (UsageError, ExternalError) as error:
                reason = f"could not be prepared: {error}"
            if reason is not None:
                skipped[variant] = reason
    return skipped


def _ours(files: WorkFiles) -> nn.Module:
    """Our model, seeded or with its packaged weights, which the timing processes' plain build of the
    model (:func:`.load._model`) must compute as they are: same keys and shapes, same outputs (weights
    built with other options, a padding say, would not)."""
    if not files.pretrained:
        return create_model(files.model).eval()
    packaged = create_model(files.model, pretrained=True).eval()
    plain = create_model(files.model).eval()
    x = torch.randn(1, 3, files.resolution, files.resolution, generator=torch.Generator().manual_seed(0))
    try:
        plain.load_state_dict(packaged.state_dict())
        with torch.no_grad():
            same = torch.allclose(plain(x), packaged(x), atol=1e-5, rtol=1e-4)
    except RuntimeError:  # missing or mismatched keys
        same = False
    if not same:
        raise UsageError(
            f"the packaged weights of {files.model} are built with options the bench's timing processes "
            "do not pass; bench it without --pretrained"
        )
    return packaged


def bench_calibration(model_name: str, resolution: int, data: str, count: int) -> torch.Tensor:
    """``count`` images of ``data`` prepared as ``model_name``'s packaged weights expect, at
    ``resolution``: what ``mobilenets export --int8 --calib`` calibrates on."""
    from ..data.card import calibration_images

    card = create_model(model_name, pretrained=True).card.at_resolution(resolution)
    return calibration_images(card, data, count)


def _prepare_one(files: WorkFiles, variant: str, source: nn.Module, calibration: torch.Tensor) -> str | None:
    """Write ``variant``'s file from ``source``; a reason when this machine cannot run it, else None."""
    if variant in ONNX_VARIANTS:
        _onnx(files, variant, source, calibration)
    elif variant == "ours_pt2e_int8":
        _pt2e_int8(files, source, calibration)
    elif variant in EXECUTORCH_VARIANTS:
        return _executorch(files, variant, source, calibration)
    elif variant in OPENVINO_VARIANTS:
        _openvino(files, variant, source, calibration)
    return None
