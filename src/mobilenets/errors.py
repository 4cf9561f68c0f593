"""The library's exceptions, by who can fix what went wrong.

- :class:`UsageError` (a ``ValueError``): a mistake the caller can fix — a bad option or value, a
  missing or unreadable file, data of the wrong shape. The command line prints its one-line message
  and exits with status 2.
- :class:`ExternalError`: a step that hands work to another library or to the operating system
  (ONNX Runtime, torch.export, onnx, the file system) failed, or its result did not check out. The
  message says what failed and what to try; the command line prints it and exits with status 1.
- :class:`TrainingError`: a training run cannot go on (non-finite loss, a failed checkpoint write).

Anything else is a bug in mobilenets and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class MobilenetsError(Exception):
    """Base of the errors mobilenets raises on purpose, each with a message for the user."""


class UsageError(MobilenetsError, ValueError):
    """A mistake the caller can fix: the message names the bad value and what was expected."""


class ImageSizeError(UsageError):
    """An image too large to decode, or to resize as its preprocessing asks (a decompression bomb, or a
    thin strip whose shorter side, scaled up, would make the longer one enormous)."""


class WrongTypeError(UsageError, TypeError):
    """An argument of the wrong type (also a ``TypeError``, as Python code expects)."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file the caller named does not exist (also a ``FileNotFoundError``)."""


class TrainingError(MobilenetsError, RuntimeError):
    """Training cannot go on (non-finite loss, a failed checkpoint write, a lost process); says why."""


class ExternalError(MobilenetsError, RuntimeError):
    """Another library or the operating system failed at a step; says which step and what to try."""


@contextlib.contextmanager
def external_step(what: str, hint: str) -> Iterator[None]:
    """Turn a failure inside ``what`` (a step run by another library) into an :class:`ExternalError`.

    Our own errors pass through unchanged; anything else becomes ``"<what> failed: <error>; <hint>"``
    with the original exception chained, so ``--debug`` style tracebacks still reach it.
    """
    try:
        yield
    except MobilenetsError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        cause = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        raise ExternalError(f"{what} failed ({cause[:500]}); {hint}") from error
