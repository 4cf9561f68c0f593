"""Run the ``mobilenets`` command with one fault planted at an exact point of its life.

``python -m mobilenets.testing.faults --fault kill:backward:37 -- train --out runs/x ...`` runs
``mobilenets train ...`` and SIGKILLs itself at the 37th ``backward`` event. Events, counted from the
start of the process:

- ``forward``: a module's forward begins (training or evaluation; lands at some depth of the network);
- ``backward``: a parameter's gradient was accumulated (inside ``loss.backward()``);
- ``step``: an optimizer step finished;
- ``fsync``: a file is about to be made durable (a checkpoint's temp file, the metrics log, the run
  directory). A kill here first tears the file as a crash mid-write would: half of a temp file is
  left, or the last record of an appended log is cut;
- ``replace``: a file was just renamed into place, before its directory is synced.

Fault kinds: ``kill`` (SIGKILL: no handler, no cleanup) and ``enospc`` (that write fails with "No space
left on device", as a full disk reports it at fsync; it counts only files' fsyncs, since a failed
directory sync is ignored by design). ``--fault KIND:EVENT:N:TEXT`` counts only events whose file path
contains ``TEXT``. ``--rank R`` plants the fault in one ``torchrun`` process only;
``--count FILE`` writes how many events of each kind the process saw (to plan faults).
"""

from __future__ import annotations

import argparse
import atexit
import errno
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENTS = ("forward", "backward", "step", "fsync", "replace")
KINDS = ("kill", "enospc")
# The count of fsyncs of files (not directories): the events an ``enospc`` fault counts.
FILE_FSYNC = "fsync:file"


@dataclass(frozen=True)
class Fault:
    """``kind`` at the ``n``-th ``event`` (1-based) whose file path contains ``match``."""

    kind: str
    event: str
    n: int
    match: str = ""

    @classmethod
    def parse(cls, spec: str) -> Fault:
        parts = spec.split(":", 3)
        if len(parts) < 3 or parts[0] not in KINDS or parts[1] not in EVENTS or not parts[2].isdigit():
            raise ValueError(
                f"fault {spec!r} is not KIND:EVENT:N[:TEXT] with KIND in {KINDS}, EVENT in {EVENTS}"
            )
        fault = cls(parts[0], parts[1], int(parts[2]), parts[3] if len(parts) == 4 else "")
        if fault.n < 1:
            raise ValueError(f"fault {spec!r}: N counts from 1")
        if fault.kind == "enospc" and fault.event != "fsync":
            raise ValueError(f"fault {spec!r}: enospc applies to fsync events only")
        return fault

    def __str__(self) -> str:
        return f"{self.kind}:{self.event}:{self.n}" + (f":{self.match}" if self.match else "")


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _tear(fd: int, path: str) -> None:
    """Leave the file as a crash in the middle of writing it would: a temp file half written, a log
    with its last record cut short."""
    if not path or os.path.isdir(path):
        return
    size = os.fstat(fd).st_size
    keep = size // 2 if path.endswith(".tmp") else max(size - 10, 0)
    os.ftruncate(fd, keep)


class Injector:
    """Counts events and fires ``fault`` at its event; installed into this process by :meth:`install`."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault
        self.counts: Counter[str] = Counter()

    def event(self, name: str, path: str = "", fd: int | None = None) -> None:
        self.counts[name] += 1
        is_dir = name == "fsync" and os.path.isdir(path)
        if name == "fsync" and not is_dir:
            self.counts[FILE_FSYNC] += 1
        fault = self.fault
        if fault is None or fault.event != name or (fault.match and fault.match not in path):
            return
        if fault.kind == "enospc" and is_dir:  # a failed directory sync is ignored by design: no test
            return
        self.counts[f"{name}:{fault.match}"] += 1
        if self.counts[f"{name}:{fault.match}"] != fault.n:
            return
        if fault.kind == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        if fd is not None:
            _tear(fd, path)
        os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        from ..training import engine

        torch.nn.modules.module.register_module_forward_pre_hook(lambda module, args: self.event("forward"))
        register_optimizer_step_post_hook(lambda optimizer, args, kwargs: self.event("step"))
        original_create: Callable[..., Any] = engine.create_model

        def create_model(*args: Any, **kwargs: Any) -> Any:
            model = original_create(*args, **kwargs)
            for parameter in model.parameters():
                parameter.register_post_accumulate_grad_hook(lambda _: self.event("backward"))
            return model

        engine.create_model = create_model
        fsync, replace = os.fsync, os.replace

        def patched_fsync(fd: Any) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            self.event("fsync", _fd_path(number), number)
            fsync(fd)

        def patched_replace(src: Any, dst: Any, **kwargs: Any) -> None:
            replace(src, dst, **kwargs)
            self.event("replace", os.fspath(dst))

        os.fsync = patched_fsync
        os.replace = patched_replace


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilenets.testing.faults", description=__doc__)
    parser.add_argument("--fault", type=Fault.parse, help="KIND:EVENT:N[:TEXT]; none: only count")
    parser.add_argument("--rank", type=int, default=None, help="fault only this torchrun rank")
    parser.add_argument("--count", type=Path, default=None, help="write event counts (JSON) here at exit")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then a mobilenets command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    fault = args.fault
    if args.rank is not None and int(os.environ.get("RANK", "0")) != args.rank:
        fault = None
    injector = Injector(fault)
    injector.install()
    if args.count is not None:
        count_path: Path = args.count
        atexit.register(lambda: count_path.write_text(json.dumps(dict(injector.counts))))
    from ..cli.main import main as cli_main

    return cli_main(command)


if __name__ == "__main__":
    sys.exit(main())
