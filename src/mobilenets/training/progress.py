"""Live progress of a training epoch: a rich bar with loss, accuracy, images/s and ETA."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class EpochProgress:
    """A progress bar over one epoch's steps, on stderr; silent when ``enabled`` is false.

    The bar redraws only on a terminal; in logs, the trainer's one line per epoch is the record.
    """

    def __init__(self, *, enabled: bool) -> None:
        console = Console(file=sys.stderr)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=True,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> EpochProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, traceback)

    def start_epoch(self, description: str, total_steps: int, completed: int = 0) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total_steps, completed=completed, stats="")

    def advance(self, *, loss: float, top1: float, images_per_s: float) -> None:
        if self._task is None:
            return
        stats = f"loss {loss:.4f}  acc {100 * top1:.1f}%  {images_per_s:,.0f} img/s"
        self._progress.update(self._task, advance=1, stats=stats)
