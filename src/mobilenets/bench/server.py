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

from .child import ChildSpec, time_variant

TURN_TIMEOUT_S = 900  # a turn that takes longer has hung (compiling at batch 32 on 2 busy cores: ~1 min)


def _answer(request: str) -> str:
    """Time the requested variant here: a JSON line with its report, or with why it failed."""
    try:
        report = time_variant(ChildSpec.from_json(request))
        return json.dumps({"report": dataclasses.asdict(report)})
    except BaseException as error:  # everything goes back to the caller, which skips the variant
        detail = (str(error).strip().splitlines() or [""])[0]
        message = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        return json.dumps({"error": message[:300]})


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


def main(argv: list[str] | None = None) -> int:
    once = "--once" in (sys.argv[1:] if argv is None else argv)
    importlib.import_module("mobilenets.bench.load")  # imported once here, not in every child
    importlib.import_module("mobilenets.deploy")
    # Answers go to the original stdout; anything else printed there (by a library, in this process
    # or a child) goes to stderr, the caller's log, so it cannot garble an answer.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for request in sys.stdin:
        answers.write((_answer(request) if once else _in_fork(request)) + "\n")
        answers.flush()
        if once:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
