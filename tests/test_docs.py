"""The documentation works: every example in README.md and docs/*.md runs, tables stay short and honest.

- ```python blocks run in order, one namespace per page (a later block may use an earlier one's
  names, as a reader who follows the page would), in a temporary working directory.
- ```bash blocks: each command line (``\\`` continuations joined, ``#`` comments dropped) that starts
  ``mobilenets`` runs in this process with the files it needs, and must exit 0. A command marked as a
  long run is not run: its arguments must still parse (``mobilenets``, ``torchrun -m mobilenets``,
  ``python -m mobilenets.testing.faults -- ...``), its script must take the options it is given
  (``python benchmarks/X.py``), its target must exist (``make``), and the test named in its mark
  must exist.
- Every table cell in every page has at most ``MAX_CELL`` characters; README.md has at most
  ``README_MAX_LINES`` lines; relative links resolve; every table a benchmark writes sits between its
  markers with its date, machine and command; the README's results point at figures their page holds;
  the exact-counts table matches ``summarize``.

A block takes its settings from an HTML comment right before it (invisible on GitHub)::

    <!-- doc-test
    setup: weights, photos          files the block needs (and names for Python), see SETUPS
    sub: --epochs 15 => --epochs 1  run the block with this text replaced (a smaller run)
    long-run: make demo => tests/test_cli.py::test_demo_writes_report
    slow                            the block's test is marked slow (CI still runs it)
    -->

``long-run: TEXT => TEST``: commands containing TEXT are long runs covered by TEST (a pytest node id,
a test file or the tests/ folder). Every ``sub`` and ``long-run`` must apply to some command, so a
stale one fails too.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mobilenets.cli.main import build_parser

from .conftest import REPO_ROOT, imagenet_list, run_cli

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
MAX_CELL = 300
README_MAX_LINES = 250
PHOTOS = 16  # ImageNet photos in the examples' val/dataset.txt


# --- reading the pages ---------------------------------------------------------------------------------


@dataclass
class Directives:
    setup: list[str] = field(default_factory=list)
    subs: list[tuple[str, str]] = field(default_factory=list)
    long_runs: list[tuple[str, str]] = field(default_factory=list)
    slow: bool = False


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    directives: Directives

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def _parse_directives(text: str, where: str) -> Directives:
    directives = Directives()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if line == "slow":
            directives.slow = True
        elif key == "setup":
            directives.setup += [name.strip() for name in value.split(",") if name.strip()]
        elif key in ("sub", "long-run") and " => " in value:
            old, new = (part.strip() for part in value.split(" => ", 1))
            (directives.subs if key == "sub" else directives.long_runs).append((old, new))
        else:
            raise ValueError(f"{where}: unknown doc-test directive {line!r}")
    return directives


def parse_page(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with the directives of the comment right before each."""
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    pending: Directives | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        where = f"{page.relative_to(REPO_ROOT)}:{index + 1}"
        if line.startswith("<!-- doc-test"):
            body, end = line[len("<!-- doc-test") :], index
            while "-->" not in body:
                end += 1
                body += "\n" + lines[end]
            pending = _parse_directives(body.split("-->")[0].lstrip(":"), where)
            index = end + 1
            continue
        if line.startswith("```"):
            end = index + 1
            while not lines[end].startswith("```"):
                end += 1
            code = "\n".join(lines[index + 1 : end])
            blocks.append(Block(page, index + 1, line[3:].strip(), code, pending or Directives()))
            pending, index = None, end + 1
            continue
        if pending is not None and line.strip():
            raise ValueError(f"{where}: a doc-test comment must come right before a code block")
        index += 1
    return blocks


BLOCKS = [block for page in PAGES for block in parse_page(page)]


def commands(code: str) -> list[str]:
    """The command lines of a bash block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            found.append(shlex.join(words))
    return found


def apply_subs(text: str, subs: list[tuple[str, str]]) -> str:
    for old, new in subs:
        text = text.replace(old, new)
    return text


def _param(block: Block) -> Any:
    marks = [pytest.mark.slow] if block.directives.slow else []
    return pytest.param(block, id=block.where, marks=marks)


# --- files the examples need ---------------------------------------------------------------------------


class Files:
    """Builds what the examples refer to, once per session where it costs time."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def digits_run(self) -> Path:
        run = self.cache / "digits"
        if not (run / "best.safetensors").is_file():
            argv = ["train", "--model", "mobilenet_v2", "--width-mult", "0.25", "--data", "digits"]
            argv += ["--epochs", "1", "--no-progress", "--out", str(run)]
            code, _, err = run_cli(argv)
            assert code == 0, err
        return run

    def converted(self) -> Path:
        target = self.cache / "mnv2.safetensors"
        if not target.is_file():
            from mobilenets.weights import convert, get_pretrained

            convert(get_pretrained("torchvision_mobilenet_v2").path(), target, model="mobilenet_v2")
        return target


def _setup_weights(files: Files, workdir: Path) -> None:
    from mobilenets.weights import get_pretrained

    (workdir / "mobilenet_v2-b0353104.pth").symlink_to(get_pretrained("torchvision_mobilenet_v2").path())
    (workdir / "efficientnet-lite0.pth").symlink_to(get_pretrained("efficientnet_lite0").path())
    shutil.copy(files.converted(), workdir / "mnv2.safetensors")


def _setup_photos(files: Files, workdir: Path) -> None:
    listing = imagenet_list()
    entries = [line.split(",") for line in listing.read_text().splitlines() if line.strip()][:PHOTOS]
    (workdir / "val").mkdir()
    (workdir / "val" / "dataset.txt").write_text(
        "".join(f"{listing.parent / path.strip()}, {label.strip()}\n" for path, label in entries)
    )
    (workdir / "photo.jpg").symlink_to(listing.parent / entries[0][0].strip())


def _setup_digits_run(files: Files, workdir: Path) -> None:
    shutil.copytree(files.digits_run(), workdir / "runs" / "digits")


def _setup_folder(files: Files, workdir: Path) -> None:
    """``data/flowers``: an image folder with train and val splits, two classes, a few small images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in ("daisy", "rose"):
            folder = workdir / "data" / "flowers" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")


SETUPS: dict[str, Callable[[Files, Path], None]] = {
    "weights": _setup_weights,  # torchvision's and EfficientNet-Lite0's files; mnv2.safetensors
    "photos": _setup_photos,  # photo.jpg and val/dataset.txt: the first ImageNet photos
    "digits-run": _setup_digits_run,  # runs/digits: a 1-epoch digits training run
    "folder": _setup_folder,  # data/flowers: a tiny image folder
}


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("doc-files"))


@contextlib.contextmanager
def workdir_for(block: Block, files: Files, tmp_path: Path) -> Iterator[Path]:
    for name in block.directives.setup:
        assert name in SETUPS, f"{block.where}: unknown setup {name!r}; known: {', '.join(SETUPS)}"
        SETUPS[name](files, tmp_path)
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


# --- Python examples -----------------------------------------------------------------------------------

PYTHON_PAGES = {}
for _block in BLOCKS:
    if _block.lang == "python":
        PYTHON_PAGES.setdefault(_block.page, []).append(_block)


def _page_param(page: Path, blocks: list[Block]) -> Any:
    marks = [pytest.mark.slow] if any(block.directives.slow for block in blocks) else []
    return pytest.param(blocks, id=str(page.relative_to(REPO_ROOT)), marks=marks)


@pytest.mark.parametrize("blocks", [_page_param(page, blocks) for page, blocks in PYTHON_PAGES.items()])
def test_python_examples_run(blocks: list[Block], files: Files, tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    done: set[str] = set()
    for block in blocks:
        for name in block.directives.setup:
            assert name in SETUPS, f"{block.where}: unknown setup {name!r}; known: {', '.join(SETUPS)}"
            if name not in done:
                SETUPS[name](files, tmp_path)
                done.add(name)
        code = apply_subs(block.code, block.directives.subs)
        for old, _ in block.directives.subs:
            assert old in block.code, f"{block.where}: sub {old!r} matches nothing"
        previous = Path.cwd()
        os.chdir(tmp_path)
        try:
            exec(compile(code, block.where, "exec"), namespace)
        finally:
            os.chdir(previous)


# --- bash examples -------------------------------------------------------------------------------------

BASH_BLOCKS = [block for block in BLOCKS if block.lang == "bash"]


def _test_exists(node: str) -> bool:
    """``node`` (``tests/x.py::test_y[param]``, ``tests/x.py`` or ``tests/``) names a real test."""
    path, _, rest = node.partition("::")
    file = REPO_ROOT / path
    if not rest:
        return file.exists()
    if not file.is_file():
        return False
    names = [part.split("[")[0] for part in rest.split("::")]
    scope: list[ast.stmt] = ast.parse(file.read_text()).body
    for name in names:
        found = [
            node
            for node in scope
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name
        ]
        if not found:
            return False
        scope = found[0].body if isinstance(found[0], ast.ClassDef) else []
    return True


def _parses(argv: list[str]) -> str | None:
    """None when ``mobilenets ARGV`` parses; else argparse's message."""
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            return err.getvalue().strip() or f"exit {exit_.code}"
    return None


def _makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.MULTILINE))


def check_long_run(words: list[str]) -> str | None:
    """Why the long-run command ``words`` would not work as written (None when it looks right)."""
    if words[0] == "mobilenets":
        return _parses(words[1:])
    if words[0] == "torchrun":
        if "-m" not in words or words[words.index("-m") + 1] != "mobilenets":
            return "torchrun examples run `-m mobilenets ...`"
        return _parses(words[words.index("-m") + 2 :])
    if words[:3] == ["python", "-m", "mobilenets.testing.faults"]:
        if "--" not in words:
            return "the fault runner needs `-- COMMAND ...`"
        return _parses(words[words.index("--") + 1 :])
    if words[0] == "python" and len(words) > 1 and words[1].startswith("benchmarks/"):
        script = REPO_ROOT / words[1]
        if not script.is_file():
            return f"{words[1]} does not exist"
        source = script.read_text() + (REPO_ROOT / "benchmarks" / "_report.py").read_text()
        options = [word.split("=")[0] for word in words[2:] if word.startswith("--")]
        unknown = [option for option in options if f'"{option}"' not in source]
        return f"{words[1]} takes no {', '.join(unknown)}" if unknown else None
    if words[0] == "make":
        missing = [target for target in words[1:] if target not in _makefile_targets()]
        return f"the Makefile has no target {', '.join(missing)}" if missing else None
    return f"no check for {words[0]!r} commands (teach tests/test_docs.py or reword the example)"


@pytest.mark.parametrize("block", [_param(block) for block in BASH_BLOCKS])
def test_bash_examples_run_or_name_the_test_that_covers_them(
    block: Block, files: Files, tmp_path: Path
) -> None:
    directives = block.directives
    lines = commands(block.code)
    for old, _ in directives.subs:
        assert any(old in line for line in lines), f"{block.where}: sub {old!r} matches no command"
    for text, test in directives.long_runs:
        assert any(text in line for line in lines), f"{block.where}: long-run {text!r} matches no command"
        assert _test_exists(test), f"{block.where}: long-run {text!r} names {test}, which does not exist"
    failures = []
    with workdir_for(block, files, tmp_path):
        for line in lines:
            long_run = next((test for text, test in directives.long_runs if text in line), None)
            words = shlex.split(line)
            if long_run is not None:
                problem = check_long_run(words)
                if problem:
                    failures.append(f"{line}\n  (long run, covered by {long_run}): {problem}")
                continue
            if words[0] != "mobilenets":
                failures.append(f"{line}\n  only `mobilenets` commands run here; mark it `long-run: ...`")
                continue
            argv = shlex.split(apply_subs(line, directives.subs))[1:]
            started = time.perf_counter()
            code, _, err = run_cli(argv)
            if code != 0:
                failures.append(
                    f"{line}\n  exit {code} after {time.perf_counter() - started:.0f} s: {err[-800:]}"
                )
    assert not failures, f"{block.where}: examples that fail:\n" + "\n".join(failures)


# --- what the pages say --------------------------------------------------------------------------------


def _table_rows(page: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every table row outside code blocks."""
    fenced = False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            yield number, [cell.strip() for cell in cells]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_table_cells_are_short(page: Path) -> None:
    long = [
        f"{page.name}:{number}: {len(cell)} characters: {cell[:60]}..."
        for number, cells in _table_rows(page)
        for cell in cells
        if len(cell) > MAX_CELL
    ]
    assert not long, "table cells over 300 characters:\n" + "\n".join(long)


def test_readme_is_a_short_guide() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    fenced_free = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", fenced_free):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", resolved.read_text(), flags=re.MULTILINE)
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
            if anchor not in slugs:
                broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


# Every table a benchmark writes, by page: benchmarks/<script> writes the named fragment (--markdown).
FRAGMENTS = {
    "docs/weights.md": {"pretrained-accuracy": "pretrained_accuracy.py"},
    "docs/deployment.md": {
        "int8-accuracy": "int8_accuracy.py",
        "int8-accuracy-ablations": "int8_accuracy.py",
        "int8-pt2e": "int8_pt2e.py",
        "int8-pt2e-ablations": "int8_pt2e.py",
        "int8-pt2e-qat": "int8_pt2e.py",
        "memory-efficient": "memory_efficient.py",
        "runtime-accuracy": "runtime_accuracy.py",
        "runtime-latency": "runtime_latency.py",
        "runtime-latency-epyc": "runtime_latency.py",
        "runtime-latency-epyc-pretrained": "runtime_latency.py",
        "openvino-profile": "openvino_profile.py",
        "deployed-memory": "deployed_memory.py",
        "export-time": "export_time.py",
    },
    "docs/training.md": {
        "train-accuracy-digits": "train_accuracy.py",
        "train-accuracy-cifar10": "train_accuracy.py",
        "train-accuracy-cifar10-finetune": "train_accuracy.py",
        "train-accuracy-cifar10-separable": "train_accuracy.py",
        "train-throughput": "train_throughput.py",
        "autocast-speed": "autocast_speed.py",
        "cifar10-reference": "cifar10_reference.py",
        "train-profile": "train_profile.py",
        "train-profile-amx": "train_profile.py",
        "train-profile-separable": "train_profile.py",
        "train-profile-deep": "train_profile.py",
        "train-profile-se": "train_profile.py",
        "train-profile-dwlast": "train_profile.py",
        "depthwise-gradient": "depthwise_gradient.py",
        "depthwise-dilated": "depthwise_gradient.py",
    },
    "docs/reliability.md": {"fault-injection": "fault_injection.py"},
}
STAMP = re.compile(r"^Measured \d{4}-\d{2}-\d{2} on (`[^`]+`|the [\w-]+ EPYC)[ ,].*by `python benchmarks/")


@pytest.mark.parametrize("page, name, script", [
    (page, name, script) for page, names in FRAGMENTS.items() for name, script in names.items()
])  # fmt: skip
def test_benchmark_tables_sit_between_their_markers_with_date_machine_and_command(
    page: str, name: str, script: str
) -> None:
    text = (REPO_ROOT / page).read_text()
    begin, end = f"<!-- begin: {name} -->", f"<!-- end: {name} -->"
    assert text.count(begin) == 1 and text.count(end) == 1, f"{page}: one pair of {name} markers"
    fragment = text.split(begin)[1].split(end)[0].strip()
    assert STAMP.match(fragment), f"{page} {name}: starts with 'Measured DATE on MACHINE ... by COMMAND'"
    assert f"benchmarks/{script}" in fragment.splitlines()[0]
    source = (REPO_ROOT / "benchmarks" / script).read_text()
    written = "train-accuracy-" if name.startswith("train-accuracy-") else f'"{name}"'
    assert written in source, f"benchmarks/{script} does not write {name}"


def test_readme_results_come_from_their_pages() -> None:
    """Each figure of the README's results table appears in the page its row links to."""
    readme = REPO_ROOT / "README.md"
    section = readme.read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "[" in line]
    assert rows, "README.md's results table is missing"
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        link = re.search(r"\]\(([^)#]+)", cells[-1])
        assert link, f"README result row without a link: {row}"
        page_text = (readme.parent / link.group(1)).read_text()
        for figure in re.findall(r"\d[\d,.]*", cells[0]):
            assert figure in page_text, f"README figure {figure} ({cells[0]}) is not in {link.group(1)}"


def test_exact_counts_table_matches_the_analysis() -> None:
    import mobilenets
    from mobilenets.analysis import summarize

    page = REPO_ROOT / "docs" / "analysis.md"
    rows = [cells for _, cells in _table_rows(page) if cells and cells[0] in mobilenets.list_models()]
    rows = [cells for cells in rows if len(cells) == 5]
    assert len(rows) >= 6
    for name, params, macs, peak, _ in rows:
        report = summarize(mobilenets.create_model(name))
        assert params == f"{report.total_params:,}", name
        assert macs == f"{report.total_macs / 1e6:,.1f}M", name
        assert peak == f"{report.peak_activation_bytes / 1e6:.2f} MB", name


def test_kept_for_backward_figures_match_the_analysis() -> None:
    """training.md's "keeps N MB for the backward instead of M MB" is an exact count: recompute it."""
    import torch

    import mobilenets
    from mobilenets.analysis import saved_for_backward_bytes
    from mobilenets.layers import keep_relu6_outputs

    text = " ".join((REPO_ROOT / "docs" / "training.md").read_text().split())
    found = re.search(
        r"\(96×96, batch 64\) a step then keeps (\d+) MB for the backward instead of (\d+) MB", text
    )
    assert found, "the figure moved: update this test"
    images = torch.randn(64, 3, 96, 96)
    model = mobilenets.mobilenet_v2().train()
    plain = saved_for_backward_bytes(model, images)
    keep_relu6_outputs(model)
    kept = saved_for_backward_bytes(model, images)
    assert (found[1], found[2]) == (f"{kept / 1e6:.0f}", f"{plain / 1e6:.0f}")


def test_benchmark_reports_replace_only_their_own_fragment(tmp_path: Path) -> None:
    from benchmarks import _report

    from mobilenets.bench.machine import cpu_description

    page = tmp_path / "page.md"
    a, b, c = (_report.markers(name) for name in "abc")
    page.write_text(f"intro\n{a[0]}\nold\n{a[1]}\nmiddle\n{b[0]}\nkeep\n{b[1]}\n")
    _report.write_fragment(page, "a", "new table\n")
    assert page.read_text() == f"intro\n{a[0]}\nnew table\n{a[1]}\nmiddle\n{b[0]}\nkeep\n{b[1]}\n"
    _report.write_fragment(page, "c", "appended")
    assert page.read_text().endswith(f"keep\n{b[1]}\n\n{c[0]}\nappended\n{c[1]}\n")
    stamp = _report.provenance(75, "python benchmarks/x.py --quick")
    assert STAMP.match(stamp) and f"`{cpu_description()}`" in stamp and stamp.endswith("(75 s).")
    argv = ["benchmarks/x.py", "--quick", "--markdown", "docs/x.md"]
    assert _report.command_line(argv) == "python benchmarks/x.py --quick"
    bare = ["benchmarks/x.py", "--markdown", "--quick"]
    assert _report.command_line(bare) == "python benchmarks/x.py --quick"
    assert _report.table(["a", "b"], [[1, "x"]]) == "| a | b |\n| --- | ---: |\n| 1 | x |"
    with pytest.raises(ValueError, match="300 characters"):
        _report.table(["a"], [["x" * 301]])


def test_training_report_names_the_scored_epochs_when_some_were_not_scored(monkeypatch) -> None:
    """benchmarks/train_accuracy.py's text under its table: the whole curve when every epoch was scored,
    each scored epoch by number under ``--eval-every`` (unscored epochs hold None), and the goal."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    report = importlib.import_module("train_accuracy")
    result = {
        "recipe": "digits",
        "top1": 0.975,
        "top5": 1.0,
        "train_wall_seconds": 61.0,
        "images_per_s_per_epoch": [900.0, 1000.0, 950.0],
        "num_images": 360,
        "command": "mobilenets train --data digits",
        "val_top1_per_epoch": [0.5, 0.75, 0.975],
    }
    text = report.markdown(result)
    assert "by epoch: 50.0, 75.0, 97.5%." in text and "Goal ≥ 97% top-1 within 2 min: met." in text
    assert "| digits | 3 | 97.50% | 100.00% | — | — |" in text and "| 900–1000 | 360 |" in text
    sparse = report.markdown({**result, "val_top1_per_epoch": [None, 0.7, None, 0.96], "top1": 0.96})
    assert "after the epochs scored: 2: 70.0, 4: 96.0%." in sparse and "| digits | 4 | 96.00% |" in sparse
    assert "within 2 min: not met." in sparse
