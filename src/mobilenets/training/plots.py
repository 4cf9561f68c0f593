"""PNG plots of a training run: loss and accuracy per epoch, from its ``metrics.jsonl``.

Drawn on the canvas of :mod:`mobilenets.evaluation.plots` (no pyplot, matplotlib imported when used).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingFileError, UsageError
from ..evaluation.plots import new_figure, save_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# (key in metrics.jsonl, legend label); accuracies are fractions and are drawn as percent.
LOSS_SERIES = (("train_loss", "train"), ("val_loss", "val"))
ACCURACY_SERIES = (("train_top1", "train top-1"), ("val_top1", "val top-1"), ("val_top5", "val top-5"))


def read_metrics_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, one per epoch, sorted by epoch; for a repeated epoch the last wins.

    Blank lines are ignored, and so is an unterminated last line (a write cut short by a crash).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"metrics log {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: a torn final write
                continue
            raise UsageError(f"{path}:{number} is not valid JSON ({error.msg})") from None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise UsageError(
                f"{path}:{number}: expected an object with an integer 'epoch', got {line[:80]!r}"
            )
        by_epoch[epoch] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _series(records: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    """Epochs and values of ``key`` where present and finite."""
    epochs: list[int] = []
    values: list[float] = []
    for record in records:
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            epochs.append(record["epoch"])
            values.append(float(value) * scale)
    return epochs, values


def _line_plot(
    records: list[dict[str, Any]],
    series: Sequence[tuple[str, str]],
    ylabel: str,
    title: str,
    scale: float = 1.0,
) -> Figure | None:
    """One line per series that has data; None if none has."""
    from matplotlib.ticker import MaxNLocator

    lines = [(label, *_series(records, key, scale)) for key, label in series]
    lines = [line for line in lines if line[1]]
    if not lines:
        return None
    figure = new_figure(7, 4.5)
    axes = figure.add_subplot()
    for label, epochs, values in lines:
        axes.plot(epochs, values, marker="o" if len(epochs) <= 30 else None, markersize=3, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    return figure


def plot_training_curves(
    metrics_jsonl_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` into ``out_dir`` from a ``metrics.jsonl`` log.

    Accuracies (fractions) are drawn as percent. Missing keys are skipped; a figure none of whose
    keys appear is not written. Returns the paths written; raises ``ValueError`` if there is nothing to plot.
    """
    records = read_metrics_log(metrics_jsonl_path)
    if not records:
        raise UsageError(f"metrics log {str(metrics_jsonl_path)!r} holds no epochs; nothing to plot")
    out = Path(out_dir)
    written: list[Path] = []
    loss = _line_plot(records, LOSS_SERIES, "loss", "Loss")
    if loss is not None:
        written.append(save_png(loss, out / "loss.png"))
    accuracy = _line_plot(records, ACCURACY_SERIES, "accuracy (%)", "Accuracy", scale=100.0)
    if accuracy is not None:
        accuracy.axes[0].set_ylim(0, 100)
        written.append(save_png(accuracy, out / "accuracy.png"))
    if not written:
        keys = ", ".join(key for key, _ in (*LOSS_SERIES, *ACCURACY_SERIES))
        raise UsageError(f"metrics log {str(metrics_jsonl_path)!r} has none of the keys {keys}")
    return written
