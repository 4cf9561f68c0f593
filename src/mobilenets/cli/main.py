"""Entry point: builds the parser from each sub-command module and dispatches."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import TrainingError
from . import bench, convert, demo, export, models, predict, summary, train
from . import eval as eval_command

COMMANDS = (models, summary, demo, train, eval_command, convert, predict, export, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenets",
        description="Build, analyse and benchmark MobileNet-family networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (0 on success, 2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"mobilenets {args.command}: error: {error}", file=sys.stderr)
        return 2
    except TrainingError as error:
        print(f"mobilenets {args.command}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
