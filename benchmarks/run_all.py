"""`make bench`: run the benchmarks of this folder one after the other.

Left to run by hand: ``train_accuracy.py``, ``cifar10_reference.py`` and ``ablations.py`` (CIFAR-10,
an hour or more each) and ``fault_injection.py``.
The int8 accuracy ones read ImageNet photos from ``../shared/data`` (``MOBILENETS_SHARED``).

    python benchmarks/run_all.py [--markdown]

``--markdown`` passes ``--markdown`` to every benchmark that writes its tables into ``docs/`` (each
replaces its own tables there, stamped with the date, the machine and the command).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCHMARKS = (
    "model_latency.py",
    "train_throughput.py",
    "autocast_speed.py",
    "inference_latency.py",
    "memory_efficient.py",
    "pretrained_accuracy.py",
    "int8_accuracy.py",
    "int8_pt2e.py",
    "runtime_accuracy.py",
    "runtime_latency.py",
    "openvino_profile.py",
    "deployed_memory.py",
    "export_time.py",
)
# The benchmarks that take --markdown (see benchmarks/_report.py).
WRITE_DOCS = {
    "train_throughput.py",
    "autocast_speed.py",
    "inference_latency.py",
    "memory_efficient.py",
    "pretrained_accuracy.py",
    "int8_accuracy.py",
    "int8_pt2e.py",
    "runtime_accuracy.py",
    "runtime_latency.py",
    "openvino_profile.py",
    "deployed_memory.py",
    "export_time.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="let each benchmark update its docs tables")
    args = parser.parse_args()
    here = Path(__file__).parent
    for script in BENCHMARKS:
        print(f"== {script}", flush=True)
        extra = ["--markdown"] if args.markdown and script in WRITE_DOCS else []
        status = subprocess.call([sys.executable, str(here / script), *extra])
        if status:
            return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
