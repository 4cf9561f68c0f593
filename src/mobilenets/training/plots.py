"""PNG plots of a training run (loss and accuracy per epoch) and of a confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly, never through pyplot, so plotting needs no
display, leaves the caller's matplotlib backend alone, and matplotlib is imported only when used.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..atomic import save_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# (key in metrics.jsonl, legend label); accuracies are fractions and are drawn as percent.
LOSS_SERIES = (("train_loss", "train"), ("val_loss", "val"))
ACCURACY_SERIES = (("train_top1", "train top-1"), ("val_top1", "val top-1"), ("val_top5", "val top-5"))
CELL_TEXT_MAX_CLASSES = 20  # beyond this the per-cell numbers are unreadable
TICK_LABELS_MAX = 40  # beyond this, label every n-th class only


def read_metrics_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, one per epoch, sorted by epoch; for a repeated epoch the last wins.

    Blank lines are ignored, and so is an unterminated last line (a write cut short by a crash).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics log {str(path)!r} does not exist")
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
            raise ValueError(f"{path}:{number} is not valid JSON ({error.msg})") from None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise ValueError(
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


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``figure`` as a PNG atomically (a crash while plotting leaves the old image, not half of one)."""
    save_atomic(path, lambda handle: figure.savefig(handle, dpi=dpi, format="png"))
    return path


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
    figure = _new_figure(7, 4.5)
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
        raise ValueError(f"metrics log {str(metrics_jsonl_path)!r} holds no epochs; nothing to plot")
    out = Path(out_dir)
    written: list[Path] = []
    loss = _line_plot(records, LOSS_SERIES, "loss", "Loss")
    if loss is not None:
        written.append(_save(loss, out / "loss.png"))
    accuracy = _line_plot(records, ACCURACY_SERIES, "accuracy (%)", "Accuracy", scale=100.0)
    if accuracy is not None:
        accuracy.axes[0].set_ylim(0, 100)
        written.append(_save(accuracy, out / "accuracy.png"))
    if not written:
        keys = ", ".join(key for key, _ in (*LOSS_SERIES, *ACCURACY_SERIES))
        raise ValueError(f"metrics log {str(metrics_jsonl_path)!r} has none of the keys {keys}")
    return written


def _as_confusion(confusion: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    matrix = torch.as_tensor(confusion).detach().cpu()
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion must be a non-empty square matrix, got shape {tuple(matrix.shape)}")
    if matrix.is_complex() or not bool(torch.isfinite(matrix.double()).all()) or bool((matrix < 0).any()):
        raise ValueError("confusion must hold finite counts >= 0")
    return matrix.double()


def plot_confusion_matrix(
    confusion: torch.Tensor | Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    normalize: bool = True,
) -> Path:
    """Write a confusion-matrix heat map (rows = true class, columns = predicted) to ``path``.

    ``normalize`` divides each row by its total, so cells read as the fraction of that class; empty
    rows stay 0. Cells carry their value as text up to 20 classes; past 40 only every n-th class is labelled.
    """
    matrix = _as_confusion(confusion)
    n = matrix.shape[0]
    names = [str(name) for name in classes]
    if len(names) != n:
        raise ValueError(f"expected {n} class names for a {n}×{n} confusion matrix, got {len(names)}")
    if normalize:
        matrix = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1.0)

    side = min(max(4.0 + 0.45 * n, 6.0), 14.0)
    figure = _new_figure(side + 1.5, side)
    axes = figure.add_subplot()
    vmax = 1.0 if normalize else max(float(matrix.max()), 1.0)
    image = axes.imshow(matrix.numpy(), cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="fraction of true class" if normalize else "images")

    step = max(1, math.ceil(n / TICK_LABELS_MAX))
    ticks = list(range(0, n, step))
    font = 10 if n <= 20 else 8 if n <= TICK_LABELS_MAX else 7
    axes.set_xticks(ticks, [names[i] for i in ticks], rotation=90 if n > 10 else 45, fontsize=font)
    axes.set_yticks(ticks, [names[i] for i in ticks], fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    title = "Confusion matrix" + (" (row-normalized)" if normalize else "")
    axes.set_title(title)

    if n <= CELL_TEXT_MAX_CLASSES:
        for row in range(n):
            for column in range(n):
                value = float(matrix[row, column])
                if value == 0:
                    continue
                text = f"{value:.2f}" if normalize else f"{int(value)}"
                color = "white" if value > 0.6 * vmax else "black"
                axes.text(column, row, text, ha="center", va="center", color=color, fontsize=font - 2)
    return _save(figure, Path(path))
