"""The timing server (``python -m mobilenets.bench.server``): forks one fresh timing process per request.

Starting a Python that imports torch takes 3-15 s on 2 busy cores, longer than timing a variant at
batch 1 several times over, so the bench does not start a new interpreter for every turn of every
variant. This server is started once per bench run, as a new interpreter; it only *imports* torch,
torchvision and mobilenets' loading code, and never runs an operator, so no PyTorch or ONNX Runtime
thread pool exists when it forks (a fork keeps only the forking thread). For each request (a
:class:`.child.ChildSpec` as one JSON line on stdin) it forks a child, which applies the allocator
and thread settings, loads and times the variant (:mod:`.child`), sends its report back through a
pipe and exits; the server answers one JSON line on stdout: ``{"report": ...}`` or
``{"error": "..."}``. Each child is thus a fresh process (its own thread pools, heap and caches),
started in milliseconds. ``--once`` answers one request in the server process itself, with no fork:
the fallback where ``os.fork`` does not exist. A forked turn that hangs is killed after
:data:`TURN_TIMEOUT_S`. Anything printed to stdout other than the answers goes to stderr.

A request ``{"pair": [spec_a, spec_b], "turns": n, "pause_s": s}`` asks for a paired comparison
(:mod:`.paired`): two forked children load one variant each and stay loaded; they then take ``n``
turns each, alternately (A B, B A, A B, ...), one computing while the other waits idle, ``pause_s``
apart so that a runtime's spinning worker threads have gone quiet before the other side runs. The
answer is ``{"pair": [turns_a, turns_b]}``, each turn a list of times. It needs ``os.fork``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import select
import signal
import sys
import time
from typing import Any

from .child import ChildSpec, serve_turns, time_variant

TURN_TIMEOUT_S = 900  # a turn that takes longer has hung (compiling at batch 32 on 2 busy cores: ~1 min)


def _answer(request: str) -> str:
    """Time the requested variant here: a JSON line with its report, or with why it failed."""
    try:
        report = time_variant(ChildSpec.from_json(request))
        return json.dumps({"report": dataclasses.asdict(report)})
    except BaseException as error:  # everything goes back to the caller, which skips the variant
        return json.dumps({"error": _failure(error)})


def _failure(error: BaseException) -> str:
    """``error`` as one short line for the caller."""
    detail = (str(error).strip().splitlines() or [""])[0]
    message = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return message[:300]


def _exit_description(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _read_until_end(fd: int, pid: int) -> str:
    """What the child writes to ``fd`` until it closes it; it is killed after :data:`TURN_TIMEOUT_S`."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    os.kill(pid, signal.SIGKILL)
    return json.dumps({"error": f"it did not finish within {TURN_TIMEOUT_S} s and was killed"})


def _in_fork(request: str) -> str:
    """:func:`_answer` in a forked child of this process."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, then leave without running any exit handler
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as pipe:
                pipe.write(_answer(request))
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        answer = _read_until_end(read_end, pid)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    if not answer:
        return json.dumps({"error": f"it ended without a report ({_exit_description(status)})"})
    return answer


class _Side:
    """One forked child of a paired comparison, loaded with its variant and serving turns."""

    def __init__(self, spec: ChildSpec, others: list[_Side]) -> None:
        command_read, self._commands = os.pipe()
        self._answers, answer_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: serve turns until the server closes the command pipe
            status = 1
            try:
                for fd in (self._commands, self._answers, *(fd for side in others for fd in side.fds)):
                    os.close(fd)  # the other side's too, or it would never see the end of its input
                with os.fdopen(command_read) as commands, os.fdopen(answer_write, "w") as answers:
                    try:
                        serve_turns(spec, commands, answers)
                    except BaseException as error:
                        answers.write(json.dumps({"error": _failure(error)}) + "\n")
                status = 0
            finally:
                os._exit(status)
        os.close(command_read)
        os.close(answer_write)
        self._buffer = b""

    @property
    def fds(self) -> tuple[int, int]:
        return self._commands, self._answers

    def request_turn(self) -> None:
        os.write(self._commands, b"turn\n")

    def read(self) -> dict[str, Any]:
        """The child's next JSON line; an ``error`` entry if it ended or took over :data:`TURN_TIMEOUT_S`."""
        deadline = time.monotonic() + TURN_TIMEOUT_S
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._answers], [], [], remaining)[0]:
                return {"error": f"it did not answer within {TURN_TIMEOUT_S} s"}
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                return {"error": "it ended without answering"}
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        os.close(self._commands)  # end of input: the child returns and exits
        os.close(self._answers)
        deadline = time.monotonic() + 10
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.01)


def _pair(request: dict[str, Any]) -> str:
    """A paired comparison in two forked children; see the module's docstring."""
    specs = [ChildSpec.from_dict(fields) for fields in request["pair"]]
    turns, pause = int(request["turns"]), float(request["pause_s"])
    sides: list[_Side] = []
    times: list[list[object]] = [[], []]
    try:
        for spec in specs:  # one after the other: neither loads or warms up while the other does
            sides.append(_Side(spec, sides))
            answer = sides[-1].read()
            if "error" in answer:
                return json.dumps({"error": f"{spec.variant}: {answer['error']}"})
        for turn in range(turns):
            for index in (0, 1) if turn % 2 == 0 else (1, 0):
                time.sleep(pause)
                sides[index].request_turn()
                answer = sides[index].read()
                if "error" in answer:
                    return json.dumps({"error": f"{specs[index].variant}: {answer['error']}"})
                times[index].append(answer["times_ms"])
    finally:
        for side in sides:
            side.close()
    return json.dumps({"pair": times})


def _serve(request: str, once: bool) -> str:
    fields = json.loads(request)
    if "pair" not in fields:
        return _answer(request) if once else _in_fork(request)
    if once:
        return json.dumps({"error": "a paired comparison needs os.fork, which this platform lacks"})
    try:
        return _pair(fields)
    except OSError as error:
        return json.dumps({"error": _failure(error)})


def main(argv: list[str] | None = None) -> int:
    once = "--once" in (sys.argv[1:] if argv is None else argv)
    importlib.import_module("mobilenets.bench.load")  # imported once here, not in every child
    importlib.import_module("mobilenets.deploy")
    # Answers go to the original stdout; anything else printed there (by a library, in this process
    # or a child) goes to stderr, the caller's log, so it cannot garble an answer.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for request in sys.stdin:
        answers.write(_serve(request, once) + "\n")
        answers.flush()
        if once:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
