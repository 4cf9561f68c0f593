"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory`` (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def unwritable_reason(out: str | os.PathLike[str], *, folder: bool = False) -> str | None:
    """Why ``out`` (a file, or with ``folder`` a folder) could not be written, or None if it could.

    Asked before the work that produces it, so that a long export or run is not lost at its final
    write: the nearest existing folder on the path must take a new file. Found by creating and removing
    a temporary file there, since permission bits do not tell (root writes through them; a read-only
    mount or ``/proc`` refuses everyone). A folder where the file should be, a file where a folder of
    the path should be and a broken link on the path are named.
    """
    target = Path(out)
    if not folder and target.is_dir():
        return f"{str(target)!r} is a folder, not a file"
    places = [target, *target.parents] if folder else list(target.parents)
    above = next((place for place in places if place.exists() or place.is_symlink()), None)
    if above is None:
        return None
    if not above.exists():
        return f"{str(above)!r} is a link to nothing"
    if not above.is_dir():
        return f"{str(above)!r} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=above)
    except OSError as err:
        return f"no file can be created in {str(above)!r} ({err.strerror or err})"
    try:
        os.close(fd)
    finally:
        Path(probe).unlink(missing_ok=True)
    return None


def save_atomic(path: str | os.PathLike[str], write_fn: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` atomically: ``write_fn`` fills a same-directory temp file that then replaces it.

    The temp file is fsynced before the rename and the directory after it, so a crash at any point
    leaves either the previous file or the complete new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp makes 0600; match a plain open()
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
