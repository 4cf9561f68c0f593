"""Where OpenVINO spends a batch-1 inference of MobileNet v2, by kind of operator: ours against torchvision's.

OpenVINO variants of ``benchmarks/runtime_latency.py``, prepared as ``mobilenets bench`` prepares
them (fixed batch 1, int8 by NNCF on random calibration images): our IR in bf16 (OpenVINO's default
on a CPU with AVX512-BF16) and int8, torchvision's ONNX file read by OpenVINO in bf16 and int8, and
our int8 IR taking its input quantized (``export --uint8-input``).
Each is compiled alone in its own process with OpenVINO's profiler on (``PERF_COUNT``), run
``--warmup`` times, then ``--runs`` times; each executed node's real time is summed by the kernel
OpenVINO picked for it (its type and implementation, e.g. ``GroupConvolution brgconv_avx512_dw_I8``).
This says what the graph you hand OpenVINO changes: which kernels run, in which precision, and how
many layout conversions (``Reorder``) sit between them.

    python benchmarks/openvino_profile.py --markdown     # ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.bench.prepare import prepare
from mobilenets.bench.workfiles import WorkFiles

VARIANTS = (
    "ours_openvino_bf16",
    "torchvision_openvino_bf16",
    "ours_openvino_int8",
    "torchvision_openvino_int8",
    "ours_openvino_uint8",
)
SHOWN_US = 5.0  # kernels taking less than this in every variant are summed into "other"


def profile_variant(path: str, threads: int, warmup: int, runs: int) -> dict[str, float]:
    """µs per inference of each kind of kernel of the IR ``path``, in this process, OpenVINO's defaults."""
    from mobilenets.deploy.openvino_export import compile_config, openvino_api
    from mobilenets.deploy.openvino_kernels import timing_input

    core = openvino_api().Core()
    config = {**compile_config(threads, "default"), "PERF_COUNT": True}
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    x = timing_input(compiled, 224)  # float NCHW, or uint8 NHWC for the IR taking its input quantized
    for _ in range(warmup):
        request.infer({0: x})
    kinds: dict[str, float] = collections.defaultdict(float)
    for _ in range(runs):
        request.infer({0: x})
        for node in request.profiling_info:
            kinds[f"{node.node_type} {node.exec_type}"] += node.real_time.total_seconds() * 1e6 / runs
    return dict(kinds)


def _family(kind: str) -> str:
    """A kernel without its precision: ``GroupConvolution brgconv_avx512_dw_I8`` -> ``... _dw``."""
    return kind.rsplit("_", 1)[0]


def _total(result: dict[str, float], family: str) -> float:
    return sum(us for kind, us in result.items() if _family(kind) == family)


def _cell(result: dict[str, float], family: str) -> str:
    """µs of ``family``'s kernels, by precision: ``662 i8``, ``211 bf16 + 64 i8``, or ``-``."""
    parts = [
        f"{us:.0f} {kind.rsplit('_', 1)[1].lower()}"
        for kind, us in sorted(result.items(), key=lambda item: -item[1])
        if _family(kind) == family and us >= 0.5
    ]
    return " + ".join(parts) or "-"


def in_own_process(args: argparse.Namespace, path: Path) -> dict[str, float]:
    """:func:`profile_variant` in a fresh interpreter (its own OpenVINO thread pool)."""
    command = [sys.executable, __file__, "--child", str(path), "--threads", str(args.threads)]
    command += ["--warmup", str(args.warmup), "--runs", str(args.runs)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    if min(args.threads, args.warmup, args.runs) < 1:
        parser.error("--threads, --warmup and --runs must be at least 1")
    if args.child:
        print(json.dumps(profile_variant(args.child, args.threads, args.warmup, args.runs)))
        return 0
    started = time.perf_counter()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="openvino-profile-") as folder:
        files = WorkFiles(Path(folder), "mobilenet_v2", 1, 224)
        prepare(files, VARIANTS)
        for variant in VARIANTS:
            side, precision = variant.split("_")[0], variant.split("_")[-1]
            path = files.openvino(side, int8=precision.endswith("int8"), uint8_input=precision == "uint8")
            results[variant] = in_own_process(args, path)
    kinds = sorted(
        {_family(kind) for result in results.values() for kind, us in result.items() if us >= SHOWN_US},
        key=lambda family: -max(_total(result, family) for result in results.values()),
    )
    rows: list[list[Any]] = [
        [f"`{family}`", *(_cell(r, family) for r in results.values())] for family in kinds
    ]
    other = [sum(us for kind, us in r.items() if _family(kind) not in kinds) for r in results.values()]
    rows.append(["other", *(f"{us:.0f}" for us in other)])
    rows.append(["**total**", *(f"**{sum(r.values()):.0f}**" for r in results.values())])
    reorders = {
        variant: sum(us for kind, us in r.items() if kind.startswith("Reorder"))
        for variant, r in results.items()
    }
    summary = (
        f"µs per batch-1 inference by kernel (OpenVINO's profiler, `PERF_COUNT`), {args.threads} threads, "
        f"{args.runs} runs after {args.warmup}, each variant in its own process; fixed batch 1; int8 by "
        "NNCF. Layout conversions (`Reorder`): "
        + ", ".join(f"{variant} {us:.0f} µs" for variant, us in reorders.items())
        + "."
    )
    body = table(["kernel", *VARIANTS], rows, "l" + "r" * len(VARIANTS))
    text = f"{provenance(time.perf_counter() - started)}\n\n{body}\n\n{summary}"
    print(text)
    write_fragments(args.markdown, {"openvino-profile": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
