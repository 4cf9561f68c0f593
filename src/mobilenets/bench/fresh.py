"""Timing each turn of a variant in a fresh process, and getting its report back.

A fresh process has its own PyTorch and ONNX Runtime thread pools, allocator and caches, so no
variant runs next to the spinning worker threads or the heap of another. Where ``os.fork`` exists,
the processes are forks of one timing server (:mod:`.server`), itself a new interpreter that has
only imported the libraries, so each starts in milliseconds instead of the seconds importing torch
takes. Elsewhere each turn is a new interpreter (``python -m mobilenets.bench.server --once``). The
server's stderr (library warnings) goes to a log file, whose last line explains a server that died.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import ExternalError
from .child import ChildReport, ChildSpec


def start_method() -> str:
    """How timing processes start here: ``fork`` (of the timing server) or ``new interpreter``."""
    return "fork" if hasattr(os, "fork") else "new interpreter"


class TimingProcesses:
    """Runs :class:`.child.ChildSpec` requests, each in a fresh process; a context manager.

    ``log`` receives the timing processes' stderr.
    """

    def __init__(self, log: Path) -> None:
        self._log_path = log
        self._log: IO[str] | None = None
        self._server: subprocess.Popen[str] | None = None

    def __enter__(self) -> TimingProcesses:
        self._log = self._log_path.open("a")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._server is not None:
            if error is not None:  # interrupted or failed mid-run: do not wait for the turn to end
                self._kill(self._server)
            self._stop(self._server)
        if self._log is not None:
            self._log.close()

    def _start(self, once: bool) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "mobilenets.bench.server", *(["--once"] if once else [])]
        # Its own process group, so that the processes it forks can be killed with it (and a Ctrl-C
        # reaches this process only, which then stops them).
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=hasattr(os, "killpg"),
        )

    @staticmethod
    def _kill(process: subprocess.Popen[str]) -> None:
        """Kill the server and the timing processes it forked (a turn still running included)."""
        if hasattr(os, "killpg"):
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(process.pid, signal.SIGKILL)
        process.kill()

    @staticmethod
    def _stop(process: subprocess.Popen[str]) -> None:
        if process.stdin is not None:
            process.stdin.close()  # the server's loop ends at end of input
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def _last_log_line(self) -> str:
        if self._log is not None:
            self._log.flush()
        lines = self._log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else "nothing logged"

    def _ask(self, request: str, what: str) -> dict[str, Any]:
        """Send one request line to the timing server; its reply, or an ``ExternalError`` saying why not."""
        forked = start_method() == "fork"
        if forked and self._server is None:
            self._server = self._start(once=False)
        process = self._server if forked else self._start(once=True)
        assert process is not None and process.stdin is not None and process.stdout is not None  # Popen(PIPE)
        try:
            process.stdin.write(request + "\n")
            process.stdin.flush()
            answer = process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if not forked:
            self._stop(process)
        if not answer:
            raise ExternalError(f"the timing server ended ({self._last_log_line()})")
        reply: dict[str, Any] = json.loads(answer)
        if "error" in reply:  # the timing process's own failure, or how it ended
            raise ExternalError(f"the timing process of {what} failed: {reply['error']}")
        return reply

    def run(self, spec: ChildSpec) -> ChildReport:
        """Time ``spec`` in a fresh process; an ``ExternalError`` saying why if that fails."""
        return ChildReport.from_dict(self._ask(spec.to_json(), spec.variant)["report"])

    def run_pair(
        self, first: ChildSpec, second: ChildSpec, *, turns: int, pause_s: float
    ) -> tuple[list[list[float]], list[list[float]]]:
        """Each spec's times per turn, the two loaded in two fresh processes that take turns."""
        request = json.dumps(
            {"pair": [first.to_dict(), second.to_dict()], "turns": turns, "pause_s": pause_s}
        )
        times = self._ask(request, f"{first.variant} and {second.variant}")["pair"]
        return times[0], times[1]
