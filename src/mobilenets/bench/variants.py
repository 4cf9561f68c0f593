"""The variants ``mobilenets bench`` compares, by name, and the check of a requested list.

``torchvision_*`` run torchvision's model, ``ours_*`` ours, both with the same weights; ``*_ort_*`` and
``ours_int8`` run an ONNX file in ONNX Runtime, ``*_executorch_*`` an ExecuTorch program (XNNPACK),
``*_openvino_*`` OpenVINO (``bf16``: OpenVINO's default precision, bf16 on CPUs that have it;
``uint8``: the int8 IR taking its input already quantized, uint8 NHWC, timed on the same image
quantized), the others run in PyTorch. ``torchvision_openvino_bf16`` and ``_int8`` are the anchors of
issue 21: torchvision's model's ONNX file read by OpenVINO with its defaults (int8: NNCF's
defaults). Ratios are reported against :data:`REFERENCE`, torchvision's model run eagerly on NCHW
input: what most people run.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import UsageError

VARIANTS = (
    "torchvision_eager",
    "torchvision_compile",
    "torchvision_ort_fp32",
    "torchvision_ort_int8",
    "ours_eager",
    "ours_optimize",
    "ours_ort_fp32",
    "ours_int8",
)
# On request only (``--variants``): int8 in PyTorch itself (torchao's PT2E flow, Inductor-compiled),
# whose compile in every timing process's warm-up would make the default run much longer; the device
# runtimes, whose exports take a minute each to prepare.
EXECUTORCH_VARIANTS = ("ours_executorch_fp32", "ours_executorch_int8")
OPENVINO_VARIANTS = (
    "torchvision_openvino_bf16",
    "torchvision_openvino_int8",
    "ours_openvino_fp32",
    "ours_openvino_bf16",
    "ours_openvino_int8",
    "torchvision_openvino_uint8",
    "ours_openvino_uint8",
)
EXTRA_VARIANTS = ("ours_pt2e_int8", *EXECUTORCH_VARIANTS, *OPENVINO_VARIANTS)
ALL_VARIANTS = VARIANTS + EXTRA_VARIANTS
REFERENCE = "torchvision_eager"
ONNX_VARIANTS = ("torchvision_ort_fp32", "torchvision_ort_int8", "ours_ort_fp32", "ours_int8")


def check_variants(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` without repeats, in their order; a ``UsageError`` for an unknown name or none at all."""
    chosen = tuple(dict.fromkeys(names))
    unknown = [name for name in chosen if name not in ALL_VARIANTS]
    if unknown:
        raise UsageError(
            f"unknown bench variant(s) {', '.join(unknown)}; expected from {', '.join(ALL_VARIANTS)}"
        )
    if not chosen:
        raise UsageError(f"no bench variant given; expected some of {', '.join(ALL_VARIANTS)}")
    return chosen
