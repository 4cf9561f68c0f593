"""A run directory's records: ``config.json`` and ``metrics.jsonl``, kept consistent across resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..data.folders import absolute_data_spec
from ..errors import UsageError
from ..models.builder import small_input_strides
from ..weights.card import ModelCard
from ..weights.files import read_weights
from .checkpoint import checkpoint_paths, save_atomic
from .config import RESUME_MUST_MATCH, TrainConfig


def saved_differences(out: Path, config: TrainConfig, keys: tuple[str, ...]) -> list[str]:
    """``key=saved (now new)`` for each of ``keys`` where the run saved in ``out`` differs from ``config``
    (none when ``out`` holds no ``config.json``)."""
    saved = saved_config(out)
    if not saved:
        return []
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


def saved_config(out: Path) -> dict[str, Any]:
    """The options of the run saved in ``out``, as its ``config.json`` holds them (empty without one)."""
    config_path = out / "config.json"
    if not config_path.is_file():
        return {}
    try:
        saved = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(
            f"cannot read {str(config_path)!r}: it is not valid JSON ({error}); restore the file the run "
            "wrote, or start a new run with another --out"
        ) from None
    if not isinstance(saved, dict):
        raise UsageError(f"{str(config_path)!r} holds {type(saved).__name__}, expected the run's options")
    return saved


def saved_option(out: Path, key: str) -> Any:
    """The value of option ``key`` in the run saved in ``out`` (``None`` without one)."""
    return saved_config(out).get(key)


def trained_on(out: Path, saved: object) -> str | None:
    """The data the run in ``out`` trained on, as an absolute spec: its checkpoint's card records it so
    (``config.json`` holds the spec as typed, relative to a working directory it does not record)."""
    weights, _ = checkpoint_paths(out, "last")
    try:
        return ModelCard.from_metadata(read_weights(weights)[1], str(weights)).data
    except (OSError, UsageError, KeyError, ValueError):  # no readable card
        return None if saved is None else absolute_data_spec(str(saved))  # config.json's spec, from here


def check_resume_config(out: Path, config: TrainConfig) -> None:
    """Refuse to resume a run whose model or data differ from ``config``, or whose options are unknown."""
    if not (out / "config.json").is_file():  # copied checkpoints without it: nothing to check against
        raise UsageError(
            f"cannot resume {str(out)!r}: it holds no config.json, so the options of the run cannot be "
            "checked against these; restore it, or start a new run with --pretrained "
            f"{checkpoint_paths(out, 'last')[0]} and another --out"
        )
    differing = saved_differences(out, config, tuple(key for key in RESUME_MUST_MATCH if key != "data"))
    was, now = trained_on(out, saved_option(out, "data")), absolute_data_spec(config.data)
    if was is not None and was != now:  # the same folder however it is spelled, not another
        differing.append(f"data={was!r} (now {now!r})")
    if differing:
        raise UsageError(f"cannot resume {str(out)!r}: it was trained with {', '.join(differing)}")


def resumes_run(out: Path, config: TrainConfig, *, announce: bool) -> bool:
    """Whether this run continues the one saved in ``out``. Refused: a new run over a saved one, a
    resume without the training state (the optimizer and position), and a resume whose model or data
    differ (:func:`check_resume_config`). ``announce``: say so when ``--resume`` finds nothing to resume.
    """
    state_path = checkpoint_paths(out, "last")[1]
    files = [*checkpoint_paths(out, "last"), *checkpoint_paths(out, "best")]
    saved = [path for path in files if path.is_file()]
    if saved and not config.resume:  # a best checkpoint alone too: a new run would replace it
        raise UsageError(
            f"{str(out)!r} already holds a run ({saved[0].name}); pass --resume to continue it or "
            "choose another --out"
        )
    resuming = config.resume and state_path.is_file()
    if config.resume and not resuming and saved:
        # The state is written before the weights, so only a copy or a deletion leaves this; a new run
        # would replace the weights (a best checkpoint alone too).
        held = next((path for path in saved if path.suffix != ".pt"), saved[0])
        raise UsageError(
            f"cannot resume {str(out)!r}: it holds {held.name} but not {state_path.name}, "
            f"the optimizer and position a resume continues from. To train on from those weights, "
            f"start a new run with --pretrained {held} and another --out"
        )
    if config.resume and not resuming and announce:
        print(f"nothing to resume in {out} (no {state_path.name}): starting a new run", flush=True)
    if resuming:
        check_resume_config(out, config)
    return resuming


# Options that differ on every resume or only in spelling (the data must be the run's): not changes.
_NOT_RECORDED = ("resume", "progress", "out", "device", "data", "pretrained")


def config_record(out: Path, config: TrainConfig, *, epoch: int, step: int, resuming: bool) -> dict[str, Any]:
    """What ``config.json`` holds: the options, and, once a resume changed some (``--lr``, label
    smoothing, ...), ``resumed``: each such resume's epoch and step with every changed option's
    ``[before, after]``, so the record still says what the earlier epochs ran with."""
    now: dict[str, Any] = json.loads(json.dumps(config.to_dict()))  # as JSON holds it (tuples as lists)
    saved = saved_config(out) if resuming else {}
    history = list(saved.get("resumed", []))
    changed = {
        key: [saved[key], value]
        for key, value in now.items()
        if key in saved and saved[key] != value and key not in _NOT_RECORDED
    }
    if changed:
        history.append({"epoch": epoch, "step": step, "changed": changed})
    return {**now, "resumed": history} if history else now


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


def last_val_top1(path: Path) -> float | None:
    """The val top-1 of the last epoch recorded in ``path`` (``None`` without one)."""
    from .plots import read_metrics_log

    records = read_metrics_log(path) if path.is_file() else []
    return records[-1].get("val_top1") if records else None


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
