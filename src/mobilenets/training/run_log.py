"""A run directory's records: ``config.json`` and ``metrics.jsonl``, kept consistent across resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..models.builder import small_input_strides
from .checkpoint import save_atomic
from .config import RESUME_MUST_MATCH, TrainConfig


def saved_differences(out: Path, config: TrainConfig, keys: tuple[str, ...]) -> list[str]:
    """``key=saved (now new)`` for each of ``keys`` where the run saved in ``out`` differs from ``config``
    (none when ``out`` holds no ``config.json``)."""
    config_path = out / "config.json"
    if not config_path.is_file():
        return []
    saved = json.loads(config_path.read_text())
    if "small_input" in saved:  # runs from before small_input took a stride count saved True / False
        saved["small_input"] = small_input_strides(saved["small_input"])
    now = json.loads(json.dumps(config.to_dict()))  # as config.json would hold it (tuples as lists)

    def shown(value: object) -> str:
        return "default" if value is None else repr(value)  # None: resolved when the run starts

    return [
        f"{key}={shown(saved[key])} (now {shown(now[key])})"
        for key in keys
        if key in saved and saved[key] != now[key]
    ]


def check_resume_config(out: Path, config: TrainConfig) -> None:
    """Refuse to resume a run whose model or data differ from ``config``."""
    differing = saved_differences(out, config, RESUME_MUST_MATCH)
    if differing:
        raise UsageError(f"cannot resume {str(out)!r}: it was trained with {', '.join(differing)}")


def write_json(path: Path, value: object) -> None:
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    save_atomic(path, lambda handle: handle.write(text.encode()))


def keep_metrics_before(path: Path, next_epoch: int) -> None:
    """Drop records a resumed run will write again (and a line torn by a crash) from ``path``."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and int(record.get("epoch", next_epoch)) < next_epoch:
            kept.append(line + "\n")
    text = "".join(kept)
    save_atomic(path, lambda handle: handle.write(text.encode()))


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
