"""SHA-256 digests of files: the packaged weights are checked by theirs, an IR's ``.bin`` by the one
its ``.xml`` records."""

from __future__ import annotations

import hashlib
import os
from functools import cache


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of the file ``path``; computed once per process while the file is unchanged."""
    stat = os.stat(path)
    return _sha256(os.fspath(path), stat.st_size, stat.st_mtime_ns)


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
