"""`make bench`: run the benchmarks of this folder one after the other.

Left to run by hand: ``train_accuracy.py`` (CIFAR-10 for an hour) and ``fault_injection.py``.
The int8 accuracy ones read ImageNet photos from ``../shared/data`` (``MOBILENETS_SHARED``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = (
    "model_latency.py",
    "train_throughput.py",
    "inference_latency.py",
    "memory_efficient.py",
    "pretrained_accuracy.py",
    "int8_accuracy.py",
    "int8_pt2e.py",
)


def main() -> int:
    here = Path(__file__).parent
    for script in BENCHMARKS:
        print(f"== {script}", flush=True)
        status = subprocess.call([sys.executable, str(here / script)])
        if status:
            return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
