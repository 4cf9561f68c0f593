"""PNG plots of an evaluation: the confusion matrix; and the canvas and atomic save every plot uses.

Figures are drawn on matplotlib's Agg canvas directly, never through pyplot, so plotting needs no
display, leaves the caller's matplotlib backend alone, and matplotlib is imported only when used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic import save_atomic
from ..errors import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CELL_TEXT_MAX_CLASSES = 20  # beyond this the per-cell numbers are unreadable
TICK_LABELS_MAX = 40  # beyond this, label every n-th class only


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``figure`` as a PNG atomically (a crash while plotting leaves the old image, not half of one)."""
    save_atomic(path, lambda handle: figure.savefig(handle, dpi=dpi, format="png"))
    return path


def _as_confusion(confusion: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    matrix = torch.as_tensor(confusion).detach().cpu()
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise UsageError(f"confusion must be a non-empty square matrix, got shape {tuple(matrix.shape)}")
    if matrix.is_complex() or not bool(torch.isfinite(matrix.double()).all()) or bool((matrix < 0).any()):
        raise UsageError("confusion must hold finite counts >= 0")
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
        raise UsageError(f"expected {n} class names for a {n}×{n} confusion matrix, got {len(names)}")
    if normalize:
        matrix = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1.0)

    side = min(max(4.0 + 0.45 * n, 6.0), 14.0)
    figure = new_figure(side + 1.5, side)
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
    return save_png(figure, Path(path))
