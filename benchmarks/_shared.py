"""Where the benchmarks find ``../shared/data`` (read in place, never copied) and the int8 photo split.

``MOBILENETS_SHARED`` overrides the default ``../shared`` next to the project root. The ImageNet
protocol of the int8 benchmarks calibrates on the first ``CALIBRATION`` photos of ``dataset.txt`` and
scores the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SHARED = Path(os.environ.get("MOBILENETS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CIFAR10 = SHARED / "data" / "cifar10"
PHOTOS = SHARED / "data" / "imagenet-val-1300" / "dataset.txt"
CALIBRATION = 300


def photos_found() -> bool:
    """Whether the ImageNet photos are there; if not, say where they were looked for."""
    if PHOTOS.is_file():
        return True
    print(f"ImageNet photos not found at {PHOTOS} (set MOBILENETS_SHARED)", file=sys.stderr)
    return False


def photo_entries() -> list[tuple[Path, str]]:
    """``(absolute path, label)`` for every line of ``dataset.txt``, in order."""
    entries = [line.split(",") for line in PHOTOS.read_text().splitlines() if line.strip()]
    return [(PHOTOS.parent / path.strip(), label.strip()) for path, label in entries]


def write_photo_list(target: Path, entries: list[tuple[Path, str]]) -> Path:
    """A ``dataset.txt``-style list file of ``entries`` (absolute paths, so nothing is copied)."""
    target.write_text("".join(f"{path}, {label}\n" for path, label in entries))
    return target


def held_out_list(folder: Path) -> Path:
    """The photos after the calibration ones, as ``folder/eval1000.txt``."""
    return write_photo_list(folder / "eval1000.txt", photo_entries()[CALIBRATION:])


def in_own_process(script: str, *child: str) -> Any:
    """Run ``script`` again with this run's arguments plus ``--child CHILD...`` in a fresh interpreter
    (nothing left over from another variant) and return the JSON its last line of output holds."""
    command = [sys.executable, script, *sys.argv[1:], "--child", *child]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])
