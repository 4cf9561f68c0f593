"""Benchmark tables in the docs are written by the benchmark that measures them, never by hand.

A doc page holds a pair of markers per table::

    <!-- begin: NAME -->
    ...
    <!-- end: NAME -->

``write_fragment(page, NAME, text)`` replaces what lies between them (and nothing else in the page)
with ``text``, which starts with :func:`provenance`: the date, the machine
(:func:`mobilenets.bench.machine.cpu_description`), the torch version and the command that measured
it. Every benchmark that reports into the docs takes ``--markdown [PAGE]`` (see
:func:`add_markdown_argument`); ``python benchmarks/run_all.py --markdown`` passes it to each.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from mobilenets.bench.machine import cpu_description

DOCS = Path(__file__).resolve().parents[1] / "docs"
MAX_CELL = 300  # characters per table cell; tests/test_docs.py enforces it in every page


def add_markdown_argument(parser: argparse.ArgumentParser, page: str) -> None:
    """``--markdown [PAGE]``: also write the tables into PAGE (default ``docs/<page>``)."""
    parser.add_argument(
        "--markdown",
        nargs="?",
        type=Path,
        const=DOCS / page,
        default=None,
        metavar="PAGE",
        help=f"write the tables into their markers in PAGE (default docs/{page})",
    )


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this benchmark was started, as a user would type it (``--markdown`` left out)."""
    argv = list(sys.argv if argv is None else argv)
    rest: list[str] = []
    skip = False
    for index, arg in enumerate(argv[1:], start=1):
        if skip:
            skip = False
            continue
        if arg == "--markdown":
            following = argv[index + 1] if index + 1 < len(argv) else ""
            skip = bool(following) and not following.startswith("-")
            continue
        if arg.startswith("--markdown="):
            continue
        rest.append(arg)
    return shlex.join(["python", f"benchmarks/{Path(argv[0]).name}", *rest])


def provenance(seconds: float | None = None, command: str | None = None) -> str:
    """``Measured DATE on `MACHINE`, torch X, by `COMMAND` (N min).``"""
    took = "" if seconds is None else f" ({_duration(seconds)})"
    return (
        f"Measured {datetime.date.today().isoformat()} on `{cpu_description()}`, torch "
        f"{torch.__version__.split('+')[0]}, by `{command or command_line()}`{took}."
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one ``l`` or ``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError("every row needs one cell per header column")
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    too_long = [cell for row in cells for cell in row if len(cell) > MAX_CELL]
    if too_long:
        raise ValueError(f"table cell over {MAX_CELL} characters: {too_long[0][:80]}...")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [cells[0], rule, *cells[1:]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- begin: {name} -->", f"<!-- end: {name} -->"


def write_fragment(page: Path, name: str, text: str) -> None:
    """Replace the text between ``name``'s markers in ``page`` with ``text`` (atomically).

    A page without the markers gets them, with ``text``, at its end (move them where they belong).
    """
    content = page.read_text() if page.exists() else ""
    begin, end = markers(name)
    if content.count(begin) > 1 or content.count(end) > 1 or content.count(begin) != content.count(end):
        raise SystemExit(f"{page} needs at most one '{begin}' followed by one '{end}'")
    if begin not in content:
        print(f"{page} had no {name} markers: appended them at its end", flush=True)
        content = f"{content.rstrip()}\n\n{begin}\n{end}\n"
    head, rest = content.split(begin)
    if end not in rest:
        raise SystemExit(f"{page}: '{end}' comes before '{begin}'")
    _, tail = rest.split(end)
    updated = f"{head}{begin}\n{text.strip()}\n{end}{tail}"
    page.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=page.parent, delete=False, suffix=".tmp") as handle:
        handle.write(updated)
    os.replace(handle.name, page)
    print(f"wrote {name} into {page}", flush=True)


def write_fragments(page: Path | None, fragments: dict[str, str]) -> None:
    """:func:`write_fragment` for each ``{name: text}``; nothing when ``page`` is None."""
    if page is None:
        return
    for name, text in fragments.items():
        write_fragment(page, name, text)


MEASURED = Path(__file__).resolve().parents[1] / "src" / "mobilenets" / "weights" / "measured.json"


def record_measured(entries: dict[str, dict[str, object]]) -> None:
    """Merge per-weights measurements into the registry's ``measured.json`` (see ``list --pretrained``).

    Each entry's fields are updated (others kept), stamped with the date, machine and command.
    """
    import json

    data = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {"entries": {}}
    stamp = {
        "date": datetime.date.today().isoformat(),
        "machine": cpu_description(),
        "torch": torch.__version__.split("+")[0],
    }
    for name, fields in entries.items():
        current = data["entries"].setdefault(name, {})
        current.update(fields)
        current.setdefault("provenance", {})[str(fields.get("by", command_line()))] = stamp
        current.pop("by", None)
    handle, temporary = tempfile.mkstemp(dir=MEASURED.parent, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, MEASURED)
