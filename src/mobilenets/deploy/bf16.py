"""bf16 inference of a PyTorch model: the float path a CPU with bf16 instructions should take.

On CPUs with AVX512-BF16 or AMX, oneDNN computes convolutions in bfloat16 at about twice the float32
rate; bf16 keeps float32's exponent range, so a network trained in float32 needs no calibration, and
only the 8-bit mantissa rounds its activations (top-1 moves by a tenth of a point or two; measured by
``benchmarks/runtime_accuracy.py``). :func:`bf16_inference` runs a model under CPU (or CUDA) autocast to
bfloat16 and hands back float32 logits, so callers that expect float32 see no difference but speed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic oneDNN uses (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Bfloat16Inference(nn.Module):
    """``model`` run under autocast to bfloat16 on its device; float32 logits out. Inference only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            out = self.model(x)
        if isinstance(out, list | tuple):  # a features_only backbone's maps
            return [level.float() for level in out]
        return out.float()


def bf16_inference(model: nn.Module, *, device: torch.device | str = "cpu") -> Bfloat16Inference:
    """``model`` computing in bfloat16 on ``device``; a ``UsageError`` on a CPU without bf16 arithmetic.

    Without native bf16 the CPU emulates it, slower than float32 and no more accurate: refused.
    """
    if torch.device(device).type == "cpu" and not cpu_has_bf16():
        raise UsageError(
            "bf16: this CPU has no native bf16 arithmetic (AVX512-BF16 or AMX), so bf16 would be slower "
            "than fp32 here; use fp32"
        )
    return Bfloat16Inference(model.eval())
