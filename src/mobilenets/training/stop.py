"""Turn SIGINT/SIGTERM into a request to stop after the current step, so the trainer can save first."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class StopRequest:
    """A context manager that catches SIGINT and SIGTERM while training runs.

    The first signal sets :attr:`requested` (the loop saves a checkpoint and returns); a second SIGINT
    raises ``KeyboardInterrupt`` at once, for a user who does not want to wait. Outside the main thread
    (where handlers cannot be installed) it does nothing.

    ``ignore_sigterm_after_error`` is for torchrun workers: when a peer dies, torchrun sends the others
    SIGTERM, which can land after the collective failed here but before the process has said so (while
    the error unwinds and the process group is torn down). Leaving with an exception then ignores
    SIGTERM instead of restoring the default, so the worker's "lost contact" report gets out; torchrun
    still kills a worker that does not exit.
    """

    def __init__(self, *, ignore_sigterm_after_error: bool = False) -> None:
        self.ignore_sigterm_after_error = ignore_sigterm_after_error
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            ignore = exc is not None and self.ignore_sigterm_after_error and signum == signal.SIGTERM
            signal.signal(signum, signal.SIG_IGN if ignore else handler)
        self._previous.clear()
