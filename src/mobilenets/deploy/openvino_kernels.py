"""Which oneDNN kernels OpenVINO's CPU plugin runs our convolutions with, chosen by measuring them.

OpenVINO picks each convolution's kernel by a fixed order: on AVX-512 CPUs its ``brgconv`` kernels
first. On the AVX-512 EPYC (Zen 4, 2 cores) its older direct kernels (``jit_avx512_1x1`` and
``jit_avx512``) ran MobileNet v2's convolutions faster at batch 1 in bf16, and in int8 for seeded
weights but not for the packaged ones calibrated on real photos (``benchmarks/openvino_profile.py``
shows the kernels; ``benchmarks/runtime_latency.py``, with and without ``--pretrained``, the times).
A layer of an IR may carry a ``primitives_priority`` (its ``rt_info``) that puts named kernels first;
where none of them applies (another CPU, another precision) the plugin falls back to its own order,
so an IR with the preference still runs everywhere. Which order is faster depends on the CPU, so
:func:`tune_kernels` times both on this machine and keeps the preference only if it wins clearly.

The preference is written into the ``.xml`` as OpenVINO's own serialisation of the attribute
(``<rt_info><attribute name="primitives_priority" version="0" value="cpu:..."/></rt_info>``): the
Python API cannot set it on a model (its ``rt_info`` takes strings, which the plugin refuses).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import save_atomic
from ..errors import UsageError

KERNEL_CHOICES = ("default", "jit", "tune")
# Direct kernels first, AVX-512 then AVX2; the plugin's own order follows where none applies.
JIT_CONVOLUTION = "cpu:jit_avx512_1x1,cpu:jit_avx512,cpu:jit_avx2_1x1,cpu:jit_avx2"
PRIORITY_ATTRIBUTE = "primitives_priority"
TUNE_ROUNDS = 15
TUNE_WINS = 12  # of 15: the preference wins at least this many rounds (one-sided sign test, p < 0.02)
TUNE_CALLS = 20  # timed inferences per round and variant


def check_kernels(kernels: str) -> str:
    """``kernels`` if it is one of :data:`KERNEL_CHOICES`, else a :class:`UsageError` naming them."""
    if kernels not in KERNEL_CHOICES:
        raise UsageError(f"unknown kernels {kernels!r}; expected one of {', '.join(KERNEL_CHOICES)}")
    return kernels


def prefer_kernels(xml_path: str | os.PathLike[str], priority: str = JIT_CONVOLUTION) -> int:
    """Give every ``Convolution`` layer of the IR ``xml_path`` the kernel ``priority``; return how many.

    Depthwise convolutions (``GroupConvolution``) keep OpenVINO's choice: its direct depthwise kernels
    did not win on the AVX-512 EPYC. The file is rewritten atomically.
    """
    path = Path(xml_path)
    tree = ET.parse(path)
    count = 0
    for layer in tree.getroot().iter("layer"):
        if layer.get("type") != "Convolution":
            continue
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ET.Element("rt_info")
            data = layer.find("data")
            layer.insert(0 if data is None else list(layer).index(data) + 1, rt_info)
        for old in rt_info.findall(f"attribute[@name='{PRIORITY_ATTRIBUTE}']"):
            rt_info.remove(old)
        ET.SubElement(rt_info, "attribute", name=PRIORITY_ATTRIBUTE, version="0", value=priority)
        count += 1
    save_atomic(path, lambda handle: tree.write(handle, encoding="utf-8", xml_declaration=True))
    return count


def kernel_preferences(xml_path: str | os.PathLike[str]) -> dict[str, str]:
    """Layer name -> kernel priority, for the layers of the IR ``xml_path`` that carry one."""
    found = {}
    for layer in ET.parse(xml_path).getroot().iter("layer"):
        for attribute in layer.iterfind(f"rt_info/attribute[@name='{PRIORITY_ATTRIBUTE}']"):
            found[str(layer.get("name"))] = str(attribute.get("value"))
    return found


@dataclass(frozen=True)
class KernelTiming:
    """Rounds of the IR with the preference against the same IR without it, taking turns."""

    ratios: tuple[float, ...]  # per round: the preference's median time over OpenVINO's own order's

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def wins(self) -> int:
        return sum(ratio < 1.0 for ratio in self.ratios)

    @property
    def preferred(self) -> bool:
        """Whether the preference was faster in at least :data:`TUNE_WINS` of :data:`TUNE_ROUNDS`."""
        return self.wins >= round(TUNE_WINS * len(self.ratios) / TUNE_ROUNDS)


def time_kernels(
    xml_path: str | os.PathLike[str],
    core: Any,
    config: dict[str, Any],
    *,
    resolution: int,
    rounds: int = TUNE_ROUNDS,
) -> KernelTiming:
    """Time the IR ``xml_path`` with :func:`prefer_kernels`'s preference and without, compiled by
    OpenVINO's ``core`` with ``config``, on one image of ``resolution`` (:func:`timing_input`: what a
    fixed-batch IR takes; an IR whose shape is free is timed on that too), in this process, taking
    turns."""
    path = Path(xml_path)
    with tempfile.TemporaryDirectory(prefix="openvino-kernels-") as folder:
        preferred = Path(folder) / path.name
        shutil.copyfile(path, preferred)
        prefer_kernels(preferred)
        weights = str(path.with_suffix(".bin"))
        requests = [
            core.compile_model(core.read_model(str(xml), weights), "CPU", config) for xml in (path, preferred)
        ]
    x = timing_input(requests[0], resolution)
    runs = [request.create_infer_request() for request in requests]
    ratios = []
    for turn in range(rounds):
        medians = [0.0, 0.0]
        for index in (0, 1) if turn % 2 == 0 else (1, 0):
            medians[index] = _median_call(runs[index], x)
        ratios.append(medians[1] / medians[0])
    return KernelTiming(tuple(ratios))


def timing_input(compiled: Any, resolution: int) -> np.ndarray:
    """One seeded image of ``resolution`` as ``compiled`` takes it: float NCHW, or uint8 NHWC for an
    IR taking its input quantized (:mod:`~mobilenets.deploy.openvino_input`)."""
    rng = np.random.default_rng(0)
    if compiled.input(0).get_element_type().get_type_name() == "u8":
        return rng.integers(0, 256, (1, resolution, resolution, 3), dtype=np.uint8)
    return rng.standard_normal((1, 3, resolution, resolution), dtype=np.float32)


def _median_call(request: Any, x: np.ndarray) -> float:
    for _ in range(3):  # the other variant just ran: warm this one's caches again
        request.infer({0: x})
    times = []
    for _ in range(TUNE_CALLS):
        started = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tune_kernels(
    xml_path: str | os.PathLike[str], core: Any, config: dict[str, Any], *, resolution: int
) -> KernelTiming:
    """Time the preference on this machine (:func:`time_kernels`, images of ``resolution``) and write
    it into the IR ``xml_path`` only if it won (:attr:`KernelTiming.preferred`)."""
    timing = time_kernels(xml_path, core, config, resolution=resolution)
    if timing.preferred:
        prefer_kernels(xml_path)
    return timing
