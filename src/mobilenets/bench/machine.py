"""One line naming the CPU features that decide CPU timings, for every report that prints a number.

Timings here are only comparable on the same kind of CPU: the vector width PyTorch dispatches to
(AVX2 or AVX512), native bf16 and VNNI int8 instructions, and AMX tiles change both speeds and which
choices pay (bf16 trains slower than fp32 on all three CPUs measured, AMX included).
"""

from __future__ import annotations

import os
import platform

import torch


def cpu_description() -> str:
    """E.g. ``"x86_64, 2 cores, torch kernels AVX512, bf16: AVX512-BF16, int8: VNNI"``."""
    features = [platform.machine() or "unknown CPU", f"{os.cpu_count()} cores"]
    features.append(f"torch kernels {torch.backends.cpu.get_cpu_capability()}")
    bf16 = [
        name
        for name, present in (
            ("AMX", torch.cpu._is_amx_tile_supported()),
            ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported()),
        )
        if present
    ]
    features.append(f"bf16: {', '.join(bf16) or 'emulated'}")
    features.append(f"int8: {'VNNI' if torch.cpu._is_vnni_supported() else 'no VNNI'}")
    return ", ".join(features)
