"""Errors the command line turns into a one-line message and an exit status instead of a traceback."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a failed checkpoint write, a lost process); says why."""
