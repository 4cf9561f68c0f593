"""The ``mobilenets`` command line: one sub-command per file, all on argparse."""

from .main import main

__all__ = ["main"]
