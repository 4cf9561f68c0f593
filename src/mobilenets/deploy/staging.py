"""Exported files are checked before they take ``--out``'s place.

An export writes ``NAME.unverified.SUFFIX`` (and its companions: ONNX int8's fp32 file, an OpenVINO IR's
weights), reloads and checks it, and only then renames it to ``out``. A file that fails its check stays
under that name, for inspection, and the file already at ``out`` is left as it was; an export that
fails otherwise leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ExternalError
from .export_report import ExportReport

# Files are written under this name (before their suffix) until they pass their checks.
UNVERIFIED = ".unverified"


def files_written(path: Path, format: str) -> list[Path]:
    """The files an export to ``path`` writes, the file asked for last: ONNX int8's fp32 file beside it,
    an OpenVINO IR's weights."""
    companions = {"onnx": [path.with_suffix(".fp32.onnx")], "openvino": [path.with_suffix(".bin")]}
    return [*companions.get(format, []), path]


def export_checked(out: Path, format: str, export: Callable[[Path], ExportReport]) -> ExportReport:
    """``export(staged_path)``'s report, its files renamed to ``out`` once it returned (see above)."""
    staged = out.with_name(f"{out.stem}{UNVERIFIED}{out.suffix}")
    for path in files_written(staged, format):  # left by an export that failed its check before
        path.unlink(missing_ok=True)
    try:
        report = export(staged)
    except ExternalError as err:  # a check failed: what it checked stays, for inspection
        if not any(path.exists() for path in files_written(staged, format)):
            raise
        raise ExternalError(f"{err} ({out} is as it was.)") from err
    except BaseException:
        for path in files_written(staged, format):
            path.unlink(missing_ok=True)
        raise
    renamed = dict(zip(files_written(staged, format), files_written(out, format), strict=True))
    for source, target in renamed.items():  # companions first: the file asked for finds them in place
        if source.exists():
            os.replace(source, target)
    fp32_path = None if report.fp32_path is None else renamed.get(report.fp32_path, report.fp32_path)
    return dataclasses.replace(report, path=out, fp32_path=fp32_path)
