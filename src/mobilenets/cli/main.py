"""Entry point: builds the parser from each sub-command module and dispatches.

Exit statuses: 0 success; 2 a mistake the user can fix (:class:`~mobilenets.errors.UsageError`, or
argparse's own); 1 a step that failed outside our code (:class:`~mobilenets.errors.ExternalError`,
an ``OSError`` from the file system) or a training run that cannot go on. Each is one line on
stderr. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ExternalError, TrainingError, UsageError
from . import ablate, bench, convert, demo, export, models, predict, summary, train
from . import eval as eval_command

COMMANDS = (models, summary, demo, train, eval_command, convert, predict, export, bench, ablate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenets",
        description="Build, analyse, train, export and benchmark MobileNet-family networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (see the module notes)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"mobilenets {args.command}: error:"
    try:
        return int(args.run(args) or 0)
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
