"""Entry point: builds the parser from each sub-command module and dispatches.

Exit statuses: 0 success; 2 a mistake the user can fix (:class:`~mobilenets.errors.UsageError`, or
argparse's own); 1 a step that failed outside our code (:class:`~mobilenets.errors.ExternalError`,
an ``OSError`` from the file system) or a training run that cannot go on; 130 interrupted (Ctrl-C,
or SIGTERM, which ends a command the same way, so temporary files and timing processes are cleaned
up). Each is one line on stderr. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import io
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from .. import __version__
from ..errors import ExternalError, TrainingError, UsageError
from . import ablate, bench, convert, demo, export, models, predict, summary, train
from . import eval as eval_command

COMMANDS = (models, summary, demo, train, eval_command, convert, predict, export, bench, ablate)


class _OneLineErrors(argparse.ArgumentParser):
    """argparse's own refusals (a bad choice, a missing value) on one line, like ours, with where to
    look, instead of the whole usage block above them; still exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="mobilenets",
        description="Build, analyse, train, export and benchmark MobileNet-family networks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` while a command runs, as Ctrl-C does, so ``finally`` blocks
    and context managers clean up (the default action kills the process where it stands). Only where
    no one else handles SIGTERM (a program calling :func:`main` may) and in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Warnings shown while a command runs are one line on stderr, like its errors
    (``mobilenets eval: warning: ...``), without Python's source path and line. Only the format
    changes: where warnings are recorded instead (``catch_warnings(record=True)``), they still are."""
    formatted = warnings.formatwarning

    def one_line(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        kind = "" if category is UserWarning else f" ({category.__name__})"
        return f"mobilenets {command}: warning{kind}: {message}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = formatted


def _given_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> frozenset[str]:
    """The destinations of the options ``argv`` sets for ``args.command`` (not those at their defaults):
    a resumed run takes the others from its saved options. ``parser`` has parsed ``argv`` already."""
    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[argv[0]]
    actions = [action for action in command._actions if action.dest != argparse.SUPPRESS]
    # Options that add to their value (append, count) start from what the namespace holds: their
    # default, which they leave as it is unless given. The others would overwrite a marker.
    adding = (argparse._AppendAction, argparse._CountAction, argparse._ExtendAction)
    unset = object()
    marked = {action.dest: unset for action in actions if not isinstance(action, adding)}
    probe, _ = command.parse_known_args(argv[1:], argparse.Namespace(**marked))
    defaults = {action.dest: action.default for action in actions if isinstance(action, adding)}
    return frozenset(
        dest
        for dest, value in vars(probe).items()
        if value is not unset and (dest not in defaults or value != defaults[dest])
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (see the module notes)."""
    for stream in (sys.stdout, sys.stderr):  # a file name of non-UTF-8 bytes prints escaped, not a crash
        if isinstance(stream, io.TextIOWrapper) and not stream.closed:
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.given = _given_options(parser, argv)
    prefix = f"mobilenets {args.command}: error:"
    try:
        with _sigterm_interrupts(), _one_line_warnings(args.command):
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"mobilenets {args.command}: interrupted", file=sys.stderr)
        return 130
    except UsageError as error:
        print(f"{prefix} {error}", file=sys.stderr)
        return 2
    except (ExternalError, TrainingError) as error:
        print(f"{prefix} {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
    except OSError as error:  # the file system: permissions, a full disk, a path that is a folder
        where = f" ({error.filename})" if error.filename else ""
        reason = error.strerror or str(error)
        print(
            f"{prefix} {reason}{where}; check the path, its permissions and the free disk space",
            file=sys.stderr,
        )
        return 1
